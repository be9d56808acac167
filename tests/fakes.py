"""Fakes that implement the orchestrator's protocols (Camera, Predictor, Line) for unit tests: no devices, no HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from edge_orchestrator.cameras import CameraStatus
from edge_orchestrator.domain import (
    CameraResult,
    Decision,
    Detection,
    Frame,
    Inspection,
    ItemState,
    Prediction,
    TriggerRequest,
    new_item_id,
    utcnow,
)
from edge_orchestrator.errors import CameraError, ModelError, NotReadyError, OrchestratorError

JPEG = b"\xff\xd8\xff\xe0fake-jpeg"


class FakeCamera:
    """Delivers a fake JPEG, or fails, or hangs, as the test says; `hook` runs inside each capture."""

    def __init__(
        self,
        camera_id: str,
        *,
        fail: str | None = None,
        hang: bool = False,
        hook: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.camera_id = camera_id
        self.fail = fail
        self.hang = hang
        self.hook = hook
        self.captures = 0
        self.opened = False
        self.closed = False

    async def open(self) -> None:
        self.opened = True

    async def capture(self, not_before: datetime | None = None) -> Frame:
        self.captures += 1
        if self.hook is not None:
            await self.hook()
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise CameraError(self.fail)
        return Frame(self.camera_id, JPEG + self.camera_id.encode(), 64, 48, utcnow())

    async def close(self) -> None:
        self.closed = True

    def status(self) -> CameraStatus:
        return CameraStatus(connected=not self.fail, detail=self.fail)


def classification(label: str, score: float, model: str = "classifier") -> Prediction:
    other = 1.0 - score
    return Prediction(
        model_name=model,
        model_version="1",
        task="classification",
        label=label,
        score=score,
        scores={label: score, "other": other},
    )


def detection(*found: tuple[str, float], model: str = "detector") -> Prediction:
    return Prediction(
        model_name=model,
        model_version="1",
        task="detection",
        detections=[Detection(label=label, score=score, box=(0.4, 0.4, 0.6, 0.6)) for label, score in found],
    )


class FakeModels:
    """Answers each model name with a fixed prediction, or raises the given error, optionally after a delay."""

    def __init__(self, answers: dict[str, Prediction | ModelError], delay_s: float = 0.0) -> None:
        self.answers = answers
        self.delay_s = delay_s
        self.calls: list[tuple[str, str | None, bytes]] = []

    async def predict(self, name: str, version: str | None, jpeg: bytes, timeout_s: float) -> Prediction:
        self.calls.append((name, version, jpeg))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        answer = self.answers[name]
        if isinstance(answer, ModelError):
            raise answer
        return answer


class FakeLine:
    """The orchestrator as the PLC handshake sees it (integrations.handshake.Line), without cameras or models.

    Each submitted item waits until the test calls `decide(item_id, decision)` (or `auto` decides it at once);
    `refuse` makes the next submit raise that error; `switch` changes the station id, or fails with `fail_switch`.
    """

    def __init__(self, station_id: str | None = "duck-line", auto: Decision | None = None) -> None:
        self.station_id: str | None = station_id
        self.auto = auto
        self.refuse: OrchestratorError | None = None
        self.fail_switch: OrchestratorError | None = None
        self.submitted: list[Inspection] = []
        self.switches: list[str] = []
        self._decided: dict[str, asyncio.Future[Inspection]] = {}

    async def submit(self, trigger: TriggerRequest, source: str) -> Inspection:
        if self.refuse is not None:
            error, self.refuse = self.refuse, None
            raise error
        if self.station_id is None:
            raise NotReadyError("no station is active")
        item = Inspection(
            item_id=new_item_id(),
            station_id=self.station_id,
            station_revision="r1",
            state=ItemState.ACCEPTED,
            source=source,
            part_id=trigger.part_id,
            accepted_at=utcnow(),
        )
        self.submitted.append(item)
        self._decided[item.item_id] = asyncio.get_running_loop().create_future()
        if self.auto is not None:
            self.decide(item.item_id, self.auto)
        return item

    def decide(self, item_id: str, decision: Decision, cameras: list[CameraResult] | None = None) -> None:
        item = next(i for i in self.submitted if i.item_id == item_id)
        done = item.model_copy(
            update={
                "state": ItemState.DONE,
                "decision": decision,
                "decided_at": utcnow(),
                "cameras": cameras or [],
            }
        )
        self._decided[item_id].set_result(done)

    async def decided(self, item_id: str) -> Inspection:
        return await self._decided[item_id]

    async def switch(self, station_id: str) -> None:
        if self.fail_switch is not None:
            raise self.fail_switch
        self.switches.append(station_id)
        self.station_id = station_id
