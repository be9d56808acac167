"""Dataset export: a real hub seeded through its ingest API with the demo duck frames, exported, unzipped and read
back with the model factory's own loaders (the labels, the splits and the boxes must survive the trip)."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from edge_orchestrator.domain import (
    CameraResult,
    Decision,
    Detection,
    Inspection,
    ItemState,
    Prediction,
    Verdict,
)
from hub.model_factory.data import load_classification, load_detection
from tests.conftest import DEMO_FRAMES
from tests.hub.conftest import ADMIN, bearer, run_hub, wait_until

DEFECT_KINDS = [
    "missing_eye",
    "stain",
    "broken_beak",
    "wrong_colour",
    "foreign_object",
]  # the detector's labels
CAMERAS = ("top", "side")
START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
# Which demo items (by index) an operator judged, and how; item 0 stays NO_DECISION (no label).
NO_DECISION, NO_DECISION_THEN_OK = 0, 2


@dataclass
class Expected:
    """What the export must say about each image: {file stem: class}, {file stem: boxes} (detection only)."""

    classes: dict[str, str] = field(default_factory=dict)
    boxes: dict[str, list[tuple[int, list[float]]]] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    classification_only: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    items: dict[str, str] = field(default_factory=dict)  # item id -> final label


def demo_truth() -> dict[int, dict[str, dict[str, Any]]]:
    frames: dict[int, dict[str, dict[str, Any]]] = {}
    for line in (DEMO_FRAMES / "truth.jsonl").read_text().splitlines():
        record = json.loads(line)
        frames.setdefault(record["index"], {})[record["camera"]] = record
    return frames


def camera_result(truth: dict[str, Any], decision: Decision) -> CameraResult:
    detections = [
        Detection(label=d["kind"], score=0.9, box=tuple(d["box"]), class_index=DEFECT_KINDS.index(d["kind"]))
        for d in truth["defects"]
    ]
    if decision == Decision.NO_DECISION:
        return CameraResult(camera_id=truth["camera"], decision=decision, error_code="model_unavailable")
    prediction = Prediction(
        model_name="duck-detector",
        model_version="1",
        task="detection",
        detections=detections if decision == Decision.KO else [],
    )
    return CameraResult(
        camera_id=truth["camera"],
        decision=decision,
        model_name="duck-detector",
        model_version="1",
        prediction=prediction,
    )


def build_items(
    truth: dict[int, dict[str, dict[str, Any]]],
) -> tuple[list[tuple[int, Inspection, Verdict | None]], Expected]:
    """The demo items as the edge would have decided them (the machine is right), plus a few operator verdicts."""
    ok_items = [
        i for i in sorted(truth) if all(f["ok"] for f in truth[i].values()) and i > NO_DECISION_THEN_OK
    ]
    ko_items = [i for i in sorted(truth) if not all(f["ok"] for f in truth[i].values())]
    overridden_to_ko, confirmed_ko, overridden_to_ok = ok_items[0], ko_items[0], ko_items[1]
    items: list[tuple[int, Inspection, Verdict | None]] = []
    expected = Expected()
    for index, frames in sorted(truth.items()):
        item_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"duck-{index}"))
        decided_at = START + timedelta(seconds=index)
        machine = {c: Decision.OK if frames[c]["ok"] else Decision.KO for c in CAMERAS}
        if index in (NO_DECISION, NO_DECISION_THEN_OK):
            machine = dict.fromkeys(CAMERAS, Decision.NO_DECISION)
        decision = (
            Decision.NO_DECISION
            if Decision.NO_DECISION in machine.values()
            else Decision.KO
            if Decision.KO in machine.values()
            else Decision.OK
        )
        judged = {
            NO_DECISION_THEN_OK: Decision.OK,
            overridden_to_ko: Decision.KO,
            confirmed_ko: Decision.KO,
            overridden_to_ok: Decision.OK,
        }.get(index)
        verdict = None
        if judged is not None:
            verdict = Verdict(
                decision=judged,
                operator="ana",
                at=decided_at + timedelta(minutes=5),
                overrides=judged != decision,
            )
            expected.verified.append(item_id)
        item = Inspection(
            item_id=item_id,
            station_id="duck-line",
            station_revision="rev1",
            state=ItemState.DONE,
            source="api",
            accepted_at=decided_at - timedelta(milliseconds=200),
            decided_at=decided_at,
            decision=decision,
            cameras=[camera_result(frames[c], machine[c]) for c in CAMERAS],
        )
        items.append((index, item, verdict))
        final = judged or decision
        expected.items[item_id] = final
        if final == Decision.NO_DECISION:
            expected.excluded.append(item_id)
            continue
        if index == overridden_to_ko:
            expected.classification_only.append(item_id)
        for camera in CAMERAS:
            stem = f"{item_id}_{camera}"
            if final == Decision.OK:
                expected.classes[stem], expected.boxes[stem] = "ok", []
            elif index == overridden_to_ko:
                expected.classes[stem] = "ko"  # every camera, no boxes, not in detection/
            else:
                expected.classes[stem] = "ok" if frames[camera]["ok"] else "ko"
                expected.boxes[stem] = [
                    (DEFECT_KINDS.index(d["kind"]), d["box"]) for d in frames[camera]["defects"]
                ]
    return items, expected


@dataclass
class Seeded:
    base: str
    data_dir: Path
    expected: Expected


def post_results(base: str, token: str, uploads: list[dict[str, Any]]) -> None:
    answer = httpx.post(
        f"{base}/api/v1/ingest/results", json={"results": uploads}, headers=bearer(token), timeout=30
    )
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A real hub with the 24 demo ducks of device duck-1 (line-1) and 2 ducks of duck-2 (line-2, another station),
    sent as the edge sends them: images first, then the decided results, then the operators' verdicts."""
    truth = demo_truth()
    items, expected = build_items(truth)
    data_dir = tmp_path_factory.mktemp("hub")
    with run_hub(data_dir) as (base, _):
        tokens = {}
        for device, line in (("duck-1", "line-1"), ("duck-2", "line-2")):
            answer = httpx.post(
                f"{base}/api/v1/devices", json={"device_id": device, "line": line}, headers=ADMIN, timeout=10
            )
            assert answer.status_code == 201, answer.text
            tokens[device] = answer.json()["token"]
        decided: list[dict[str, Any]] = []
        verdicts: list[dict[str, Any]] = []
        for seq, (index, item, verdict) in enumerate(items):
            for camera in CAMERAS:
                body = (DEMO_FRAMES / camera / f"{index:04d}.jpg").read_bytes()
                answer = httpx.put(
                    f"{base}/api/v1/ingest/images/{item.item_id}/{camera}",
                    content=body,
                    headers={**bearer(tokens["duck-1"]), "content-type": "image/jpeg"},
                    timeout=10,
                )
                assert answer.status_code == 201, answer.text
            upload: dict[str, Any] = {
                "device_id": "duck-1",
                "item": item.model_dump(mode="json"),
                "images": list(CAMERAS),
            }
            decided.append({**upload, "event": "inspection.decided", "seq": seq})
            if verdict is not None:
                judged = item.model_copy(update={"verdict": verdict})
                verdicts.append(
                    {
                        **upload,
                        "item": judged.model_dump(mode="json"),
                        "event": "inspection.verdict",
                        "seq": 0,
                    }
                )
        for offset, upload in enumerate(verdicts):
            upload["seq"] = len(decided) + offset
        post_results(base, tokens["duck-1"], decided)
        post_results(base, tokens["duck-1"], verdicts)
        # duck-2: two good ducks of another station, a day later
        other = []
        for seq, index in enumerate((3, 4)):
            item_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-{index}"))
            at = START + timedelta(days=1, seconds=index)
            item = Inspection(
                item_id=item_id,
                station_id="duck-bench",
                station_revision="rev1",
                state=ItemState.DONE,
                source="api",
                accepted_at=at,
                decided_at=at,
                decision=Decision.OK,
                cameras=[camera_result(truth[index][c], Decision.OK) for c in CAMERAS],
            )
            for camera in CAMERAS:
                answer = httpx.put(
                    f"{base}/api/v1/ingest/images/{item_id}/{camera}",
                    content=(DEMO_FRAMES / camera / f"{index:04d}.jpg").read_bytes(),
                    headers={**bearer(tokens["duck-2"]), "content-type": "image/jpeg"},
                    timeout=10,
                )
                assert answer.status_code == 201, answer.text
            other.append(
                {
                    "event": "inspection.decided",
                    "device_id": "duck-2",
                    "seq": seq,
                    "item": item.model_dump(mode="json"),
                    "images": list(CAMERAS),
                }
            )
        post_results(base, tokens["duck-2"], other)
        yield Seeded(base, data_dir, expected)


def export(base: str, **params: str) -> httpx.Response:
    return httpx.get(f"{base}/api/v1/datasets/export", params=params, headers=ADMIN, timeout=60)


def unzip(response: httpx.Response, target: Path) -> Path:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith("attachment;")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        archive.extractall(target)
    return target


def test_an_export_loads_in_the_model_factory_with_the_right_labels_and_boxes(
    seeded: Seeded, tmp_path: Path
) -> None:
    # When the line's results are exported
    root = unzip(export(seeded.base, device_id="duck-1"), tmp_path / "dataset")
    expected = seeded.expected
    manifest = json.loads((root / "manifest.json").read_text())
    # Then the manifest says what is in it and why
    assert manifest["filters"] == {"device_id": "duck-1"}
    assert manifest["counts"]["items"] == len(expected.items)
    assert manifest["counts"]["images"] == len(expected.classes)
    assert [e["item_id"] for e in manifest["excluded"]] == expected.excluded
    assert manifest["classification_only"]["item_ids"] == expected.classification_only
    assert sorted(manifest["operator_verified"]["item_ids"]) == sorted(expected.verified)
    # (the detector's own class indices; a kind no item showed has no name to take)
    names = manifest["detection"]["names"]
    assert all(n in (DEFECT_KINDS[i], f"class_{i}") for i, n in enumerate(names)), names
    used = {c for b in expected.boxes.values() for c, _ in b}
    assert all(names[c] == DEFECT_KINDS[c] for c in used), names
    assert datetime.fromisoformat(manifest["generated_at"]) > datetime.now(UTC) - timedelta(minutes=5)
    # and the model factory's classification loader reads every labelled image with its label
    seen: dict[str, str] = {}
    splits: dict[str, set[str]] = {}
    for split in ("train", "val", "test"):
        count = sum(manifest["counts"]["per_split"][split]["classification"].values())
        if count == 0:
            continue
        data = load_classification(root / "classification", split, size=32)
        assert len(data.labels) == count
        for path, label in zip(data.files, data.labels, strict=True):
            seen[path.stem] = ("ok", "ko")[int(label)]
            splits.setdefault(path.stem.rsplit("_", 1)[0], set()).add(split)
    assert seen == expected.classes
    assert manifest["counts"]["per_split"]["train"]["classification"]["ok"] > 0
    # and both cameras of an item are in the same split
    assert all(len(s) == 1 for s in splits.values()), splits
    # and the detection loader reads the boxes back (YOLO text round trip), none for OK images
    boxes: dict[str, list[tuple[int, list[float]]]] = {}
    for split in ("train", "val", "test"):
        if manifest["counts"]["per_split"][split]["detection"]["images"] == 0:
            continue
        det = load_detection(root / "detection", split, 64, DEFECT_KINDS)
        for path, classes, original in zip(det.files, det.classes, det.original_boxes, strict=True):
            boxes[path.stem] = [
                (int(c), [float(v) for v in b]) for c, b in zip(classes, original, strict=True)
            ]
    assert sorted(boxes) == sorted(expected.boxes)  # the overridden-to-KO item is classification only
    for stem, want in expected.boxes.items():
        assert [c for c, _ in boxes[stem]] == [c for c, _ in want], stem
        for (_, got), (_, box) in zip(boxes[stem], want, strict=True):
            np.testing.assert_allclose(got, box, atol=2e-6)
    assert sum(len(b) for b in boxes.values()) > 0
    assert f"nc: {len(names)}" in (root / "detection" / "data.yaml").read_text()
    # and truth.jsonl has one line per image with its prediction, verdict and where the label came from
    truth = [json.loads(line) for line in (root / "truth.jsonl").read_text().splitlines()]
    assert len(truth) == len(expected.classes)
    by_stem = {Path(t["classification_file"]).stem: t for t in truth}
    for stem, record in by_stem.items():
        item_id = stem.rsplit("_", 1)[0]
        assert record["label"] == expected.classes[stem]
        assert record["verified"] == (item_id in expected.verified)
        assert record["label_source"] == ("operator" if item_id in expected.verified else "machine")
        assert (root / record["file"]).is_file()
        assert (
            record["machine"]["model_name"] == "duck-detector"
            or record["machine"]["decision"] == "NO_DECISION"
        )


def test_filters_select_items_and_bad_filters_are_refused(seeded: Seeded, tmp_path: Path) -> None:
    # The other device's station only
    bench = json.loads(
        zipfile.ZipFile(io.BytesIO(export(seeded.base, station_id="duck-bench").content)).read(
            "manifest.json"
        )
    )
    assert bench["counts"]["items"] == 2 and bench["counts"]["images"] == 4
    # Everything
    everything = unzip(export(seeded.base), tmp_path / "all")
    assert (
        json.loads((everything / "manifest.json").read_text())["counts"]["items"]
        == len(seeded.expected.items) + 2
    )
    # By line and time window: the first ten seconds of duck-1's line
    window = json.loads(
        zipfile.ZipFile(
            io.BytesIO(
                export(
                    seeded.base,
                    line="line-1",
                    since=START.isoformat(),
                    until=(START + timedelta(seconds=10)).isoformat(),
                ).content
            )
        ).read("manifest.json")
    )
    assert window["counts"]["items"] == 10
    # By label: KO only (the verdict wins over the machine)
    ko = unzip(export(seeded.base, decision="KO"), tmp_path / "ko")
    ko_manifest = json.loads((ko / "manifest.json").read_text())
    want_ko = [i for i, final in seeded.expected.items.items() if final == Decision.KO]
    assert ko_manifest["counts"]["items"] == len(want_ko)
    assert {Path(p).name.rsplit("_", 1)[0] for p in (ko / "classification").rglob("*.jpg")} == set(want_ko)
    # Nothing matches: 404 empty_dataset; only NO_DECISION: 404 too (no label to train from)
    for params in ({"since": "2031-01-01T00:00:00Z"}, {"device_id": "nobody"}, {"decision": "NO_DECISION"}):
        answer = export(seeded.base, **params)
        assert answer.status_code == 404 and answer.json()["code"] == "empty_dataset", (params, answer.text)
    # Bad filters: 422; no admin key: 401
    for params in (
        {"decision": "MAYBE"},
        {"since": "yesterday"},
        {"since": "2025-03-02T00:00:00Z", "until": "2025-03-01T00:00:00Z"},
        {"colour": "yellow"},
    ):
        answer = export(seeded.base, **params)
        assert answer.status_code == 422, (params, answer.text)
        assert answer.json()["code"] == "validation_error"
    assert httpx.get(f"{seeded.base}/api/v1/datasets/export", timeout=10).status_code == 401
    # and no export file is left behind in the hub's data folder
    wait_until(lambda: not any((seeded.data_dir / "exports").iterdir()), timeout=5)
