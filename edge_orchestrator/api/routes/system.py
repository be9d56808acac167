"""Health, metrics, statistics, the event stream, the system overview, and the device state heartbeats carry."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse

from edge_orchestrator import __version__
from edge_orchestrator.api.deps import ReadAccess, RuntimeDep
from edge_orchestrator.domain import utcnow
from edge_orchestrator.errors import ModelError
from edge_orchestrator.hub_link import DeviceState
from edge_orchestrator.integrations.status import LinkStatus
from edge_orchestrator.outbox import ChannelDepth
from edge_orchestrator.storage import DiskUsage, Stats
from edge_orchestrator.telemetry import HealthReport, ModelRef

router = APIRouter()


@router.get("/health/live", tags=["health"])
async def live() -> dict[str, str]:
    return {"status": "live"}


class Readiness(BaseModel):
    ready: bool
    station: str | None
    model_server: str
    cameras: dict[str, str] = Field(description="Each camera of the active station: ok, or why not.")


async def _readiness(runtime: RuntimeDep) -> Readiness:
    model_ok, model_detail = await runtime.models.ready(timeout_s=1.0)
    active = runtime.inspector.active
    cameras: dict[str, str] = {}
    if active is not None:
        for camera_id, camera in active.cameras.items():
            status = camera.status()
            cameras[camera_id] = "ok" if status.connected else (status.detail or "not connected")
    ready = model_ok and active is not None and all(v == "ok" for v in cameras.values())
    return Readiness(
        ready=ready, station=active.station.id if active else None, model_server=model_detail, cameras=cameras
    )


async def device_state(runtime: RuntimeDep) -> DeviceState:
    """What the hub's heartbeat says about the device: station, models per camera, health as /health/ready."""
    settled_until = runtime.inspector.settled_until()
    readiness = await _readiness(runtime)
    problems: list[str] = []
    if readiness.station is None:
        problems.append("no station is active")
    if readiness.model_server != "ready":
        problems.append(readiness.model_server)
    problems += [f"camera {c}: {why}" for c, why in readiness.cameras.items() if why != "ok"]
    station = runtime.inspector.station
    cameras: dict[tuple[str, str], list[str]] = {}
    for camera in station.cameras if station is not None else []:
        version = str(camera.model.version) if camera.model.version is not None else "latest"
        if camera.model.version is None:  # what "latest" is now, as the model server says
            with contextlib.suppress(ModelError):
                description = await runtime.models.describe(camera.model.name)
                ready = description.version(None) if description is not None else None
                version = str(ready.version) if ready is not None else version
        cameras.setdefault((camera.model.name, version), []).append(camera.id)
    return DeviceState(
        station_id=station.id if station else None,
        station_revision=station.revision if station else None,
        models=[ModelRef(name=n, version=v, cameras=ids) for (n, v), ids in cameras.items()],
        health=HealthReport(ready=readiness.ready, problems=problems),
        settled_until=settled_until,
    )


@router.get("/health/ready", tags=["health"], responses={503: {"model": Readiness}})
async def ready(runtime: RuntimeDep) -> JSONResponse:
    """Ready: a station is active, the model server answers, and every camera of the station answers."""
    readiness = await _readiness(runtime)
    return JSONResponse(readiness.model_dump(), status_code=200 if readiness.ready else 503)


@router.get("/metrics", tags=["health"], response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    runtime.metrics.queue_depth.set(runtime.inspector.depth)
    for (
        name
    ) in runtime.outbox.channels:  # an emptied channel has no rows: show it as 0, not as its last value
        runtime.metrics.outbox_pending.labels(name).set(0)
        runtime.metrics.outbox_parked.labels(name).set(0)
        runtime.metrics.outbox_dropped.labels(name).set(0)
    if runtime.integrations is not None:
        for link in runtime.integrations.status():
            runtime.metrics.integration_up.labels(link.name).set(int(link.up))
    for channel in await runtime.outbox.depth():
        runtime.metrics.outbox_pending.labels(channel.channel).set(channel.pending)
        runtime.metrics.outbox_parked.labels(channel.channel).set(channel.parked)
        runtime.metrics.outbox_dropped.labels(channel.channel).set(channel.dropped)
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/stats", tags=["stats"], dependencies=[ReadAccess])
async def stats(
    runtime: RuntimeDep,
    window_s: Annotated[float, Query(gt=0, le=366 * 86400, description="The last this many seconds.")] = 3600,
    since: Annotated[datetime | None, Query(description="Start (ISO 8601); overrides window_s.")] = None,
    until: Annotated[datetime | None, Query(description="End (ISO 8601); default now.")] = None,
) -> Stats:
    """Counts per decision, yield, throughput and latency percentiles over a window."""
    end = until or utcnow()
    start = since or end - timedelta(seconds=window_s)
    return await runtime.store.stats(start, end)


@router.get(
    "/api/v1/events",
    tags=["events"],
    dependencies=[ReadAccess],
    response_class=Response,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."}},
)
async def events(
    request: Request,
    runtime: RuntimeDep,
    last_event_id: Annotated[int | None, Header(description="Resume after this event id.")] = None,
) -> EventSourceResponse:
    """One event per item state change (accepted, running, decided, interrupted), verdict and station switch."""

    async def stream() -> AsyncIterator[dict[str, Any]]:
        async for event in runtime.events.subscribe(last_event_id):
            if await request.is_disconnected():
                break
            yield {"id": str(event.id), "event": event.type, "data": event.model_dump_json()}

    return EventSourceResponse(stream(), ping=15, send_timeout=10)


class SystemInfo(BaseModel):
    version: str
    uptime_s: float
    api_key_source: str = Field(description="Where the API key comes from (never the key).")
    station: str | None
    station_revision: str | None
    queue_depth: int
    max_in_flight: int
    readiness: Readiness
    models: list[dict[str, Any]] = Field(description="The model server's models and versions.")
    disk: DiskUsage
    storage_policy: dict[str, Any] | None
    event_subscribers: int
    outbox: list[ChannelDepth] = Field(
        description="Messages waiting for MQTT, each webhook and the hub (pending), refused for good (parked), "
        "or dropped by the outbox quota (dropped)."
    )
    integrations: list[LinkStatus] = Field(
        description="PLC handshakes, MQTT, webhooks and the hub, and their state."
    )


@router.get("/api/v1/system", tags=["system"], dependencies=[ReadAccess])
async def system(runtime: RuntimeDep) -> SystemInfo:
    """Versions, health, models, disk usage and retention at a glance."""
    readiness, disk, outbox = await asyncio.gather(
        _readiness(runtime), runtime.store.usage(), runtime.outbox.depth()
    )
    models: list[dict[str, Any]] = []
    with contextlib.suppress(ModelError):
        models = await runtime.models.models()
    station = runtime.inspector.station
    return SystemInfo(
        version=__version__,
        uptime_s=round(time.time() - runtime.started_at, 1),
        api_key_source=runtime.api_key.source,
        station=station.id if station else None,
        station_revision=station.revision if station else None,
        queue_depth=runtime.inspector.depth,
        max_in_flight=runtime.settings.max_in_flight,
        readiness=readiness,
        models=models,
        disk=disk,
        storage_policy=station.storage.model_dump(mode="json") if station else None,
        event_subscribers=runtime.events.subscribers,
        outbox=outbox,
        integrations=runtime.integrations.status() if runtime.integrations else [],
    )
