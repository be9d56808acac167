"""Fakes that implement the orchestrator's protocols (Camera, Predictor) for unit tests: no devices, no HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from edge_orchestrator.cameras import CameraStatus
from edge_orchestrator.domain import Detection, Frame, Prediction, utcnow
from edge_orchestrator.errors import CameraError, ModelError

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
