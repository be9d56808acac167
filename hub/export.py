"""Dataset export: the hub's images with their labels, in the layouts the model factory trains from (class folders,
YOLO detection + data.yaml, truth.jsonl) plus a manifest, written file by file into one zip.

Labels: the operator's verdict when there is one, else the machine's decision. Per camera, a KO item's cameras
keep the machine's own camera decision (a defect seen from the top only leaves the side view OK), except when an
operator overrode the item to KO: which camera shows the defect is then unknown, so every camera is KO and the
item has no boxes (classification only). Boxes are the detections of the cameras that decided KO (pseudo-labels);
OK images have empty label files. NO_DECISION items without a verdict have no label and are left out.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import Connection, select

from edge_orchestrator.domain import Decision, Inspection
from hub.errors import NotFoundError
from hub.schema import images, results

SPLITS: tuple[str, ...] = ("train", "val", "test")
SHARES: tuple[float, ...] = (0.8, 0.1, 0.1)
FORMAT = "vio-edge-dataset/1"


class EmptyDatasetError(NotFoundError):
    code = "empty_dataset"


class ExportFilters(BaseModel):
    """Which results to export (all given filters apply together)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    station_id: str | None = Field(default=None, max_length=64, description="Only this station's items.")
    device_id: str | None = Field(default=None, max_length=64, description="Only this device's items.")
    line: str | None = Field(default=None, max_length=64, description="Only items of this line.")
    since: datetime | None = Field(
        default=None, description="Decided at or after (ISO 8601; UTC if no zone)."
    )
    until: datetime | None = Field(default=None, description="Decided before (ISO 8601; UTC if no zone).")
    decision: Literal["OK", "KO", "NO_DECISION"] | None = Field(
        default=None, description="Only items whose label (the verdict, else the machine's decision) is this."
    )

    @model_validator(mode="after")
    def _ordered(self) -> ExportFilters:
        if self.since is not None and self.until is not None and _naive(self.since) >= _naive(self.until):
            raise ValueError("since must be before until")
        return self


def _naive(moment: datetime) -> datetime:
    # The tables hold naive UTC.
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def split_of(item_id: str) -> str:
    """train, val or test from the item id alone: stable across exports, both cameras of an item together."""
    u = int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, share in zip(SPLITS, SHARES, strict=True):
        edge += share
        if u < edge:
            return name
    return SPLITS[-1]


def _where(filters: ExportFilters) -> list[Any]:
    clauses: list[Any] = []
    for column, value in (
        (results.c.station_id, filters.station_id),
        (results.c.device_id, filters.device_id),
        (results.c.line, filters.line),
        (results.c.final, filters.decision),
    ):
        if value is not None:
            clauses.append(column == value)
    if filters.since is not None:
        clauses.append(results.c.decided_at >= _naive(filters.since))
    if filters.until is not None:
        clauses.append(results.c.decided_at < _naive(filters.until))
    return clauses


def _class_names(conn: Connection, where: list[Any]) -> tuple[list[str], str]:
    """Detection class ids: the models' own indices (Detection.class_index) when they agree, else sorted labels.

    A first pass over the items (streamed), since each label file is written before the last item is seen."""
    by_index: dict[int, str] = {}
    labels: set[str] = set()
    consistent = True
    query = select(results.c.item).where(*where)
    for (item,) in conn.execution_options(yield_per=500).execute(query):
        for camera in item.get("cameras") or []:
            for det in (camera.get("prediction") or {}).get("detections") or []:
                label, index = det.get("label"), det.get("class_index")
                labels.add(label)
                if index is None or by_index.setdefault(index, label) != label:
                    consistent = False
    if consistent and len(set(by_index.values())) == len(by_index):
        names = [by_index.get(i, f"class_{i}") for i in range(max(by_index, default=-1) + 1)]
        return names, "the models' own class indices (Detection.class_index)"
    return sorted(labels), "sorted labels (the detections carry no or conflicting class indices)"


def _yolo(boxes: list[tuple[int, tuple[float, float, float, float]]]) -> str:
    return "".join(
        f"{c} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}\n"
        for c, (x0, y0, x1, y1) in boxes
    )


def write_export(conn: Connection, images_dir: Path, filters: ExportFilters, out: Path) -> dict[str, Any]:
    """(blocking) Write the zip to `out`; returns the manifest. Memory stays bounded: rows are streamed, each
    image is copied into the zip by itself, truth.jsonl goes through a temporary file.

    Raises EmptyDatasetError when no labelled image matches."""
    where = _where(filters)
    names, class_ids = _class_names(conn, where)
    query = (
        select(results, images.c.camera_id, images.c.path)
        .join(images, images.c.item_id == results.c.item_id)
        .where(*where)
        .order_by(results.c.id, images.c.camera_id)
    )
    with (
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive,
        tempfile.TemporaryFile("w+", encoding="utf-8") as truth,
    ):
        export = _Export(archive, truth, images_dir.resolve(), {name: i for i, name in enumerate(names)})
        for row in conn.execution_options(yield_per=500).execute(query):
            export.add(row)
        counts = export.counts
        if counts["images"] == 0:
            detail = "no labelled image matches these filters"
            if export.excluded:
                detail += (
                    f" ({len(export.excluded)} matching item(s) are NO_DECISION without an operator verdict)"
                )
            raise EmptyDatasetError(detail)
        truth.seek(0)
        with archive.open("truth.jsonl", "w") as entry:
            while chunk := truth.read(1 << 16):
                entry.write(chunk.encode())
        archive.writestr("detection/data.yaml", _data_yaml(names))
        manifest = _manifest(filters, export, names, class_ids)
        archive.writestr("manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


class _Export:
    """One export being written: each image row goes to its folders, its truth line, and the counts."""

    def __init__(
        self, archive: zipfile.ZipFile, truth: IO[str], root: Path, index_of: dict[str, int]
    ) -> None:
        self.archive, self.truth, self.root, self.index_of = archive, truth, root, index_of
        self.counts: Counter[str] = Counter()
        self.verified_items: list[str] = []
        self.classification_only: list[str] = []
        self.excluded: list[dict[str, str]] = []
        self._seen: set[str] = set()  # item ids, to count items once (bounded by the number of items)

    def add(self, row: Any) -> None:
        first = row.item_id not in self._seen
        self._seen.add(row.item_id)
        self.counts["items"] += first
        if row.final == Decision.NO_DECISION:
            if first:
                self.excluded.append(
                    {"item_id": row.item_id, "reason": "NO_DECISION and no operator verdict"}
                )
            return
        try:
            item = Inspection.model_validate(row.item)
        except ValidationError:
            self.counts["unreadable_items"] += first
            return
        source = self.root / row.path
        if not source.resolve().is_relative_to(self.root) or not source.is_file():
            self.counts["missing_files"] += 1
            return
        label = _label(item, row, row.camera_id)
        if label is None:
            self.counts["unlabelled_images"] += 1
            return
        cls, boxes, only_classification = label
        if first and row.verdict is not None:
            self.verified_items.append(row.item_id)
        if first and only_classification and row.overridden:
            self.classification_only.append(row.item_id)
        split = split_of(row.item_id)
        name = f"{row.item_id}_{row.camera_id}{source.suffix.lower() or '.jpg'}"
        classification_file = f"classification/{split}/{cls}/{name}"
        # JPEG and PNG are compressed already: stored as they are.
        self.archive.write(source, classification_file, zipfile.ZIP_STORED)
        self.counts[f"classification/{split}/{cls}"] += 1
        detection_file = None
        if not only_classification:
            detection_file = f"detection/images/{split}/{name}"
            self.archive.write(source, detection_file, zipfile.ZIP_STORED)
            labels = _yolo([(self.index_of[n], b) for n, b in boxes])
            self.archive.writestr(f"detection/labels/{split}/{name.rsplit('.', 1)[0]}.txt", labels)
            self.counts[f"detection/{split}/images"] += 1
            self.counts[f"detection/{split}/boxes"] += len(boxes)
        self.counts["images"] += 1
        self.counts["verified_images"] += row.verdict is not None
        record = {
            "file": detection_file or classification_file,
            "classification_file": classification_file,
            "detection_file": detection_file,
            "split": split,
            "item_id": row.item_id,
            "camera": row.camera_id,
            "ok": cls == "ok",
            "label": cls,
            "label_source": "operator" if row.verdict is not None else "machine",
            "verified": row.verdict is not None,
            "defect_kind": boxes[0][0] if boxes else _first_label(item, row.camera_id),
            "defects": [{"kind": n, "box": list(b)} for n, b in boxes],
            "device_id": row.device_id,
            "station_id": row.station_id,
            "line": row.line,
            "decided_at": _iso(row.decided_at),
            "machine_decision": row.decision,
            "machine": _camera(item, row.camera_id),
            "verdict": item.verdict.model_dump(mode="json") if item.verdict else None,
        }
        self.truth.write(json.dumps(record) + "\n")


Box = tuple[float, float, float, float]


def _label(item: Inspection, row: Any, camera_id: str) -> tuple[str, list[tuple[str, Box]], bool] | None:
    """(class, boxes, classification only) of one camera's image, or None when it has no label."""
    if row.final == Decision.OK:
        return "ok", [], False
    if row.overridden:  # an operator said KO where the machine did not: the defect's camera is unknown
        return "ko", [], True
    camera = item.camera(camera_id)
    if camera is None or camera.decision == Decision.NO_DECISION:
        return None
    if camera.decision == Decision.OK:
        return "ok", [], False
    detections = camera.prediction.detections if camera.prediction else []
    boxes = [(d.label, d.box) for d in detections]
    return "ko", boxes, not boxes  # a KO from a classifier has no box to teach a detector


def _first_label(item: Inspection, camera_id: str) -> str | None:
    camera = item.camera(camera_id)
    if camera is None or camera.prediction is None or camera.decision != Decision.KO:
        return None
    return camera.prediction.label


def _camera(item: Inspection, camera_id: str) -> dict[str, Any] | None:
    camera = item.camera(camera_id)
    if camera is None:
        return None
    return camera.model_dump(
        mode="json", include={"decision", "reasons", "model_name", "model_version", "prediction"}
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z") if moment else None


def _data_yaml(names: list[str]) -> str:
    # Ultralytics' layout; `path: .` = the folder this file is in, wherever the zip is unpacked.
    listed = "".join(f"  {i}: {json.dumps(name)}\n" for i, name in enumerate(names)) or "  {}\n"
    return f"path: .\ntrain: images/train\nval: images/val\ntest: images/test\nnc: {len(names)}\nnames:\n{listed}"


def _manifest(filters: ExportFilters, export: _Export, names: list[str], class_ids: str) -> dict[str, Any]:
    counts = export.counts
    per_split = {
        split: {
            "classification": {cls: counts[f"classification/{split}/{cls}"] for cls in ("ok", "ko")},
            "detection": {k: counts[f"detection/{split}/{k}"] for k in ("images", "boxes")},
        }
        for split in SPLITS
    }
    return {
        "format": FORMAT,
        "generated_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "filters": filters.model_dump(mode="json", exclude_none=True),
        "layout": {
            "classification": "classification/<split>/<ok|ko>/<item_id>_<camera>.<ext>",
            "detection": "detection/images/<split>/*, detection/labels/<split>/*.txt (YOLO), detection/data.yaml",
            "truth": "truth.jsonl: one line per image (label, its source, prediction, verdict, boxes)",
        },
        "splits": dict(zip(SPLITS, SHARES, strict=True)),
        "split_rule": "sha256(item_id): the same item always lands in the same split, both cameras together",
        "labels": {
            "rule": "the operator's verdict when given, else the machine's decision",
            "ko_cameras": "a KO item's cameras keep the machine's camera decision; an item an operator overrode "
            "to KO is KO on every camera",
            "boxes": "detections of the cameras that decided KO (pseudo-labels); OK images have empty label files",
            "classification_only": "items an operator overrode to KO, and KO cameras without boxes, are in "
            "classification/ only (no boxes to teach a detector)",
        },
        "counts": {
            "items": counts["items"],
            "images": counts["images"],
            "per_split": per_split,
            "verified_images": counts["verified_images"],
            "skipped": {k: counts[k] for k in ("missing_files", "unreadable_items", "unlabelled_images")},
        },
        "detection": {"names": names, "class_ids": class_ids},
        "operator_verified": {
            "meaning": "items whose label an operator gave (confirmed or overrode); truth.jsonl: verified",
            "item_ids": export.verified_items,
        },
        "classification_only": {
            "meaning": "items an operator overrode to KO: no boxes, KO on every camera",
            "item_ids": export.classification_only,
        },
        "excluded": export.excluded,
    }
