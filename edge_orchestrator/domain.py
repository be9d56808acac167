"""The inspection's vocabulary: frames, predictions, decisions and the stored result (no I/O here)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator


class Decision(StrEnum):
    OK = "OK"
    KO = "KO"
    NO_DECISION = "NO_DECISION"


class ItemState(StrEnum):
    """accepted → running → done; an item the device stopped on is `interrupted` (decision NO_DECISION)."""

    ACCEPTED = "accepted"
    RUNNING = "running"
    DONE = "done"
    INTERRUPTED = "interrupted"


def new_item_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def is_item_id(value: str) -> bool:
    """Item ids are canonical UUID strings; anything else never reaches storage or the file system."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded image from one camera."""

    camera_id: str
    jpeg: bytes
    width: int
    height: int
    captured_at: datetime


Box = tuple[float, float, float, float]


class Detection(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    score: float
    box: Box = Field(description="[x_min, y_min, x_max, y_max] normalised to the image (0..1).")
    class_index: int | None = None


class Prediction(BaseModel):
    """What the model server answered for one image (parsed at the boundary, never an untyped dict)."""

    model_config = ConfigDict(frozen=True)

    model_name: str
    model_version: str
    task: Literal["classification", "detection"]
    label: str | None = Field(default=None, description="Top label (classification).")
    score: float | None = Field(default=None, description="Top score (classification).")
    scores: dict[str, float] = Field(default_factory=dict, description="Score per label (classification).")
    detections: list[Detection] = Field(default_factory=list, description="Detections (detection).")
    timings_ms: dict[str, float] = Field(default_factory=dict)


class RuleOutcome(BaseModel):
    """One rule's verdict on one camera (or on the item), with the sentence that explains it."""

    model_config = ConfigDict(frozen=True)

    rule: str = Field(description="The rule's name (its `name`, or its type when unnamed).")
    decision: Decision
    reason: str


class ImageInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    width: int
    height: int
    bytes: int
    stored: bool = Field(default=True, description="False once retention removed the file.")


class CameraResult(BaseModel):
    """One camera's part of an inspection: its frame, prediction, rule outcomes and decision."""

    model_config = ConfigDict(frozen=True)

    camera_id: str
    decision: Decision
    reasons: list[str] = Field(default_factory=list, description="Why this decision, in sentences.")
    error_code: str | None = Field(
        default=None, description="Stable code when the camera or the model failed (decision NO_DECISION)."
    )
    model_name: str | None = None
    model_version: str | None = None
    prediction: Prediction | None = None
    rules: list[RuleOutcome] = Field(default_factory=list)
    image: ImageInfo | None = None
    captured_at: datetime | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)


class TriggerRequest(BaseModel):
    """The optional body of a trigger: who the part is and anything the line wants kept with it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    part_id: str | None = Field(default=None, max_length=128, description="Part id or serial number.")
    lot: str | None = Field(default=None, max_length=128, description="Lot or batch.")
    recipe: str | None = Field(default=None, max_length=128, description="Recipe or product tag.")
    metadata: dict[str, JsonValue] = Field(
        default_factory=dict, description="Free metadata kept with the item (at most 4 KiB as JSON)."
    )

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        if len(json.dumps(value)) > 4096:
            raise ValueError("metadata is larger than 4 KiB once encoded as JSON")
        return value


class Verdict(BaseModel):
    """An operator's confirmation or override of the machine's decision, kept beside it."""

    model_config = ConfigDict(frozen=True)

    decision: Literal[Decision.OK, Decision.KO]
    reason: str | None = None
    operator: str | None = None
    at: datetime
    overrides: bool = Field(description="True when the operator's decision differs from the machine's.")


class Inspection(BaseModel):
    """One item: the stored record and the API's answer."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    station_id: str
    station_revision: str = Field(description="Hash of the station file the item ran on (rule versions).")
    state: ItemState
    source: str = Field(description="What triggered it: api, periodic, ...")
    part_id: str | None = None
    lot: str | None = None
    recipe: str | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    idempotency_key: str | None = Field(
        default=None,
        description="The trigger's Idempotency-Key (or its part id): a repeat returns this item.",
    )
    accepted_at: datetime
    decided_at: datetime | None = None
    decision: Decision | None = Field(default=None, description="None until decided.")
    reasons: list[str] = Field(default_factory=list)
    cameras: list[CameraResult] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict, description="Per stage, and total.")
    verdict: Verdict | None = None

    def camera(self, camera_id: str) -> CameraResult | None:
        return next((c for c in self.cameras if c.camera_id == camera_id), None)

    def ko_labels(self) -> set[str]:
        """The labels seen by the cameras that decided KO (stored for the KO-by-label statistics; a PLC's
        DefectCode is chosen from them)."""
        labels: set[str] = set()
        for camera in self.cameras:
            if camera.decision != Decision.KO or camera.prediction is None:
                continue
            labels.update(d.label for d in camera.prediction.detections)
            if camera.prediction.label is not None:
                labels.add(camera.prediction.label)
        return labels
