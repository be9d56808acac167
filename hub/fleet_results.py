"""Result reads: a device's recent results with the images the hub holds, one result as received, and an
image's stored path (SQLAlchemy Core, the same SQL on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection, select

from edge_orchestrator.domain import Box, Inspection
from hub.db import from_db_time
from hub.schema import images, results

DecisionName = Literal["OK", "KO", "NO_DECISION"]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Found(_Out):
    label: str
    score: float
    box: Box = Field(description="[x_min, y_min, x_max, y_max] normalised to the image (0..1).")


class CameraView(_Out):
    camera_id: str
    decision: DecisionName
    image: bool = Field(description="The hub holds this camera's image (GET /api/v1/images/{item}/{camera}).")
    width: int | None
    height: int | None
    model: str | None = Field(description="name vN of the model that read the image.")
    label: str | None = Field(description="Top label (classification).")
    score: float | None
    detections: list[Found]
    reasons: list[str]


class ResultSummary(_Out):
    item_id: str
    device_id: str
    station_id: str
    part_id: str | None
    decision: DecisionName = Field(description="The machine's decision.")
    verdict: DecisionName | None = Field(description="The operator's, when given.")
    overridden: bool
    final: DecisionName
    labels: list[str]
    decided_at: datetime | None
    received_at: datetime
    cameras: list[CameraView]


class ResultDetail(ResultSummary):
    item: dict[str, Any] = Field(description="The Inspection as the device sent it.")


def _cameras(item: Inspection, with_image: set[str]) -> list[CameraView]:
    views = []
    for camera in item.cameras:
        p = camera.prediction
        views.append(
            CameraView(
                camera_id=camera.camera_id,
                decision=camera.decision.value,
                image=camera.camera_id in with_image,
                width=camera.image.width if camera.image else None,
                height=camera.image.height if camera.image else None,
                model=f"{p.model_name} v{p.model_version}" if p else None,
                label=p.label if p else None,
                score=p.score if p else None,
                detections=[Found(label=d.label, score=d.score, box=d.box) for d in p.detections]
                if p
                else [],
                reasons=camera.reasons,
            )
        )
    return views


def _summary(row: Any, with_image: set[str], *, detail: bool = False) -> ResultSummary:
    raw = row["item"]
    try:
        cameras = _cameras(Inspection.model_validate(raw), with_image)
    except ValidationError:
        cameras = []  # an item this hub cannot read (another contract version): its figures still count
    fields: dict[str, Any] = {
        "item_id": row["item_id"],
        "device_id": row["device_id"],
        "station_id": row["station_id"],
        "part_id": row["part_id"],
        "decision": row["decision"],
        "verdict": row["verdict"],
        "overridden": bool(row["overridden"]),
        "final": row["final"],
        "labels": (row["labels"] or "").split(),
        "decided_at": from_db_time(row["decided_at"]),
        "received_at": from_db_time(row["received_at"]),
        "cameras": cameras,
    }
    return ResultDetail(**fields, item=raw) if detail else ResultSummary(**fields)


def _images_of(conn: Connection, item_ids: Sequence[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    if item_ids:
        query = select(images.c.item_id, images.c.camera_id).where(images.c.item_id.in_(item_ids))
        for item_id, camera_id in conn.execute(query):
            found.setdefault(item_id, set()).add(camera_id)
    return found


def device_results(
    conn: Connection, device_id: str, *, decision: DecisionName | None = None, limit: int = 20
) -> list[ResultSummary]:
    """A device's latest results (the machine's `decision` when given), newest first, with which images the
    hub holds: two queries, whatever the limit."""
    query = select(results).where(results.c.device_id == device_id).order_by(results.c.id.desc()).limit(limit)
    if decision is not None:
        query = query.where(results.c.decision == decision)
    rows = [row._mapping for row in conn.execute(query)]
    with_images = _images_of(conn, [row["item_id"] for row in rows])
    return [_summary(row, with_images.get(row["item_id"], set())) for row in rows]


def result(conn: Connection, item_id: str) -> ResultDetail | None:
    row = conn.execute(select(results).where(results.c.item_id == item_id)).first()
    if row is None:
        return None
    detail = _summary(row._mapping, _images_of(conn, [item_id]).get(item_id, set()), detail=True)
    assert isinstance(detail, ResultDetail)
    return detail


def image_path(conn: Connection, item_id: str, camera_id: str) -> str | None:
    """The image's path relative to the hub's images folder, when the hub holds it."""
    query = select(images.c.path).where(images.c.item_id == item_id, images.c.camera_id == camera_id)
    path: str | None = conn.execute(query).scalar_one_or_none()
    return path
