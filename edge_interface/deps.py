"""The runtime object the lifespan builds, and the dependency aliases routes receive it through."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

from fastapi import Depends, Request

from edge_interface.client import OrchestratorClient
from edge_interface.errors import Failure, OrchestratorDown, OrchestratorError, RequestRefused
from edge_interface.health import Health, HealthMonitor
from edge_interface.metrics import InterfaceMetrics
from edge_interface.rendering import Renderer
from edge_interface.settings import InterfaceSettings

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    settings: InterfaceSettings
    client: OrchestratorClient
    health: HealthMonitor
    metrics: InterfaceMetrics
    renderer: Renderer
    # Set when the server starts to stop: every open event stream then ends cleanly at once, instead of
    # holding the shutdown until it is cancelled.
    stopping: asyncio.Event


async def get_runtime(request: Request) -> Runtime:
    # async on purpose: FastAPI runs plain-def dependencies in a thread pool, a hop per request.
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_client(request: Request) -> OrchestratorClient:
    runtime: Runtime = request.app.state.runtime
    return runtime.client


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ClientDep = Annotated[OrchestratorClient, Depends(get_client)]


async def same_origin(request: Request) -> None:
    """Actions (trigger, verdict, station switch) only from our own pages: the server holds the API key, so a
    form posted by another site must not borrow it."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise RequestRefused(403, "This action must be made from the dashboard's own pages.")


SameOrigin = Depends(same_origin)


async def with_health(runtime: Runtime, job: Awaitable[T]) -> tuple[Health, T | None, Failure | None]:
    """A page's data and the line's health, fetched at once; a failure is returned for the page to show."""
    checking = asyncio.ensure_future(runtime.health.current())
    try:
        result: T | None = await job
        failure: Failure | None = None
    except (OrchestratorDown, OrchestratorError, RequestRefused) as exc:
        result, failure = None, exc
    finally:
        health = await checking
    if isinstance(failure, OrchestratorDown):
        health = runtime.health.reported_down(failure.sentence)
    return health, result, failure
