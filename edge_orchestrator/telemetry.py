"""What a device tells the hub: heartbeats and results, the wire contract both sides parse (no I/O here).

The device sends a heartbeat every `hub_heartbeat_s` (its state now, and its counts since the previous beat
the hub acknowledged) and every result through its durable outbox, in order, with the images the sampling
policy keeps uploaded first. The hub stores a result once per item id, whatever the device repeats.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .domain import Inspection

# The hub refuses bigger batches with 413; the device sends at most this many results per request.
MAX_RESULTS_PER_BATCH = 100
# An image upload larger than this is refused with 413 (a 12 MP JPEG is ~5 MB).
MAX_IMAGE_BYTES = 16 * 1024 * 1024


class _Wire(BaseModel):
    # Unknown fields are ignored, so a newer device can talk to an older hub (and the other way round).
    model_config = ConfigDict(frozen=True, extra="ignore")


class ModelRef(_Wire):
    name: str
    version: str
    cameras: list[str] = Field(default_factory=list, description="The cameras whose images this model reads.")


class HealthReport(_Wire):
    ready: bool = Field(description="The device's /health/ready: every camera and the model server answer.")
    problems: list[str] = Field(default_factory=list, description="Why it is not ready, in sentences.")


class DiskReport(_Wire):
    fs_free_bytes: int
    fs_total_bytes: int
    image_bytes: int = Field(description="Bytes of the images the device still keeps.")


class Counts(_Wire):
    """Decisions made in the window [since, sent_at) of the heartbeat."""

    ok: int = 0
    ko: int = 0
    no_decision: int = 0


class OutboxReport(_Wire):
    channel: str
    pending: int
    parked: int
    dropped: int = Field(default=0, description="Messages the outbox quota dropped (OK results first).")
    oldest_pending_at: datetime | None = None


class Heartbeat(_Wire):
    """POST /api/v1/ingest/heartbeat (device token)."""

    device_id: str = Field(
        min_length=1, max_length=64, description="Must be the device the token was issued to."
    )
    sent_at: datetime
    interval_s: float = Field(
        gt=0, description="When the next heartbeat is due: the hub's online/stale clock."
    )
    version: str = Field(description="The orchestrator's version.")
    station_id: str | None = None
    station_revision: str | None = None
    models: list[ModelRef] = Field(default_factory=list)
    health: HealthReport
    disk: DiskReport
    since: datetime = Field(
        description="Start of the counts window: the previous acknowledged beat (or the start)."
    )
    counts: Counts
    outbox: list[OutboxReport] = Field(default_factory=list)


class ResultUpload(_Wire):
    """One decided (or re-judged) item, as the device's outbox delivers it."""

    event: Literal["inspection.decided", "inspection.verdict"] = Field(
        description="decided: the machine's decision; verdict: an operator confirmed or overrode it later."
    )
    device_id: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=0, description="The device's outbox sequence number: increases in delivery order.")
    item: Inspection
    images: list[str] = Field(
        default_factory=list,
        description="Cameras whose image was uploaded (PUT .../images/{item_id}/{camera_id}) before this result.",
    )


class ResultBatch(_Wire):
    """POST /api/v1/ingest/results (device token): results in the device's order."""

    results: list[ResultUpload] = Field(min_length=1, max_length=MAX_RESULTS_PER_BATCH)


class IngestReceipt(_Wire):
    accepted: int = Field(description="Results stored now (new items, or verdicts applied).")
    duplicates: int = Field(
        description="Results the hub already had (a repeat after a lost answer): ignored."
    )
