"""One inspection, top to bottom: capture → predict → camera rules → item rule → decision (fail safe).

Every camera runs its capture and prediction concurrently with the others. Whatever goes wrong on a camera
(no frame, timeout, model error, a bug) makes that camera NO_DECISION with a stable code and a sentence; it
never raises out of here and never skips a camera, so the item is OK only when every camera decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from edge_orchestrator.cameras import Camera
from edge_orchestrator.domain import (
    CameraResult,
    Decision,
    Frame,
    ImageInfo,
    Inspection,
    ItemState,
    utcnow,
)
from edge_orchestrator.errors import CameraError, ModelError, StationError
from edge_orchestrator.model_client import Predictor
from edge_orchestrator.rules import decide_camera
from edge_orchestrator.sinks import Sink
from edge_orchestrator.station import CameraConfig, Station

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ActiveStation:
    """A station with its cameras and sinks open. Items hold it while they run, so a switch never
    pulls a camera from under an inspection in flight: the old one closes when its last item is done."""

    station: Station
    cameras: dict[str, Camera]
    sinks: list[Sink]
    _users: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def open(cls, station: Station, base_dir: Path, data_dir: Path) -> ActiveStation:
        cameras: dict[str, Camera] = {c.id: c.source.build(c.id, base_dir) for c in station.cameras}
        sinks = [s.build(data_dir) for s in station.sinks]
        opened: list[Camera | Sink] = []
        parts: list[Camera | Sink] = [*cameras.values(), *sinks]
        try:
            for part in parts:
                await part.open()
                opened.append(part)
        except Exception as exc:
            for part in opened:
                with contextlib.suppress(Exception):
                    await part.close()
            detail = exc.detail if isinstance(exc, CameraError) else f"{type(exc).__name__}: {exc}"
            raise StationError(f"station {station.id!r} cannot start: {detail}") from exc
        active = cls(station, cameras, sinks)
        active._idle.set()
        return active

    def acquire(self) -> None:
        """Taken synchronously when an item is accepted, so a switch cannot close what it will capture from."""
        self._users += 1
        self._idle.clear()

    def release(self) -> None:
        self._users -= 1
        if self._users == 0:
            self._idle.set()

    async def close(self, grace_s: float | None = None) -> None:
        """Close cameras and sinks once no item uses them (or after grace_s)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self._idle.wait()
        parts: list[Camera | Sink] = [*self.cameras.values(), *self.sinks]
        for part in parts:
            try:
                await part.close()
            except Exception:
                log.exception("closing %r failed", part)


@dataclass(frozen=True)
class Inspected:
    """A decided item and the frames to store with it."""

    item: Inspection
    images: dict[str, bytes]


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def _failed(
    config: CameraConfig, code: str, reason: str, frame: Frame | None, timings: dict[str, float]
) -> CameraResult:
    return CameraResult(
        camera_id=config.id,
        decision=Decision.NO_DECISION,
        reasons=[reason],
        error_code=code,
        model_name=config.model.name,
        model_version=str(config.model.version) if config.model.version else None,
        image=ImageInfo(width=frame.width, height=frame.height, bytes=len(frame.jpeg)) if frame else None,
        captured_at=frame.captured_at if frame else None,
        timings_ms=timings,
    )


async def inspect_camera(
    config: CameraConfig, camera: Camera, models: Predictor, not_before: datetime
) -> tuple[CameraResult, Frame | None]:
    """Capture, predict and judge one camera; failures become NO_DECISION with their reason."""
    timings: dict[str, float] = {}
    frame: Frame | None = None
    start = time.perf_counter()
    try:
        async with asyncio.timeout(config.capture_timeout_s):
            frame = await camera.capture(not_before)
    except TimeoutError:
        timings["capture"] = _ms(start)
        reason = f"camera {config.id} gave no frame within {config.capture_timeout_s:g} s"
        return _failed(config, "camera_timeout", reason, None, timings), None
    except CameraError as exc:
        timings["capture"] = _ms(start)
        return _failed(config, exc.code, exc.detail, None, timings), None
    except Exception as exc:  # a bug must still end as NO_DECISION, never as a lost item
        log.exception("camera %s failed unexpectedly", config.id)
        timings["capture"] = _ms(start)
        return _failed(
            config,
            "internal_error",
            f"camera {config.id}: internal error ({type(exc).__name__})",
            None,
            timings,
        ), None
    timings["capture"] = _ms(start)

    start = time.perf_counter()
    try:
        prediction = await models.predict(
            config.model.name, _version(config), frame.jpeg, config.model.timeout_s
        )
    except ModelError as exc:
        timings["predict"] = _ms(start)
        return _failed(config, exc.code, f"model {config.model.name}: {exc.detail}", frame, timings), frame
    except Exception as exc:
        log.exception("prediction for camera %s failed unexpectedly", config.id)
        timings["predict"] = _ms(start)
        reason = f"model {config.model.name}: internal error ({type(exc).__name__})"
        return _failed(config, "internal_error", reason, frame, timings), frame
    timings["predict"] = _ms(start)

    start = time.perf_counter()
    decision, outcomes = decide_camera(prediction, config.rules)
    timings["rules"] = _ms(start)
    reasons = [o.reason for o in outcomes if o.decision is not Decision.OK] or [o.reason for o in outcomes]
    result = CameraResult(
        camera_id=config.id,
        decision=decision,
        reasons=reasons,
        model_name=prediction.model_name,
        model_version=prediction.model_version,
        prediction=prediction,
        rules=outcomes,
        image=ImageInfo(width=frame.width, height=frame.height, bytes=len(frame.jpeg)),
        captured_at=frame.captured_at,
        timings_ms=timings,
    )
    return result, frame


def _version(config: CameraConfig) -> str | None:
    return None if config.model.version is None else str(config.model.version)


async def inspect(
    item: Inspection, active: ActiveStation, models: Predictor, not_before: datetime
) -> Inspected:
    """Run every camera of the station concurrently, then the item rule. Never raises for a camera's sake."""
    station = active.station
    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(inspect_camera(config, active.cameras[config.id], models, not_before))
            for config in station.cameras
        ]
    cameras_ms = _ms(start)
    results = [task.result() for task in tasks]
    cameras = [result for result, _ in results]
    images = {result.camera_id: frame.jpeg for result, frame in results if frame is not None}

    rule_start = time.perf_counter()
    outcome = station.item_rule.apply({c.camera_id: c.decision for c in cameras})
    reasons = [outcome.reason]
    if outcome.decision is not Decision.OK:
        reasons += [
            f"{c.camera_id}: {r}" for c in cameras if c.decision is not Decision.OK for r in c.reasons
        ]
    timings = {
        "capture": max((c.timings_ms.get("capture", 0.0) for c in cameras), default=0.0),
        "predict": max((c.timings_ms.get("predict", 0.0) for c in cameras), default=0.0),
        "cameras": cameras_ms,
        "rules": round(
            max((c.timings_ms.get("rules", 0.0) for c in cameras), default=0.0) + _ms(rule_start), 3
        ),
    }
    decided_at = utcnow()
    timings["total"] = round((decided_at - item.accepted_at).total_seconds() * 1000, 3)
    decided = item.model_copy(
        update={
            "state": ItemState.DONE,
            "decision": outcome.decision,
            "reasons": reasons,
            "cameras": cameras,
            "decided_at": decided_at,
            "timings_ms": timings,
        }
    )
    return Inspected(decided, images)
