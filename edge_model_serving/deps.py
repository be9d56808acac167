"""The runtime object the lifespan builds, and the dependency aliases routes receive it through."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from edge_model_serving.errors import BodyTooLargeError, OverloadedError
from edge_model_serving.metrics import ServingMetrics
from edge_model_serving.registry import ModelRegistry
from edge_model_serving.settings import ServingSettings


@dataclass
class ServingRuntime:
    settings: ServingSettings
    registry: ModelRegistry
    metrics: ServingMetrics
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _in_flight: int = 0

    def admit(self) -> None:
        """Refuse work beyond `max_pending` requests in flight, rather than queue without bound."""
        if self._in_flight >= self.settings.max_pending:
            raise OverloadedError(
                f"the model server already has {self._in_flight} requests in flight; retry shortly"
            )
        self._in_flight += 1
        self.metrics.in_flight.set(self._in_flight)

    def release(self) -> None:
        self._in_flight -= 1
        self.metrics.in_flight.set(self._in_flight)


async def get_runtime(request: Request) -> ServingRuntime:
    # async on purpose: FastAPI runs plain-def dependencies in a thread pool, a hop per request.
    runtime: ServingRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[ServingRuntime, Depends(get_runtime)]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it is known to exceed `limit` (before reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"the body is {int(declared)} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
