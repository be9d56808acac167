"""create_app(): the lifespan that builds the runtime, the routers, and the one place errors map to statuses."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge_orchestrator import __version__
from edge_orchestrator.api.deps import Runtime, UnauthorizedError
from edge_orchestrator.api.routes import inspections, stations, system
from edge_orchestrator.api.routes.stations import StationConflictError
from edge_orchestrator.auth import resolve_api_key
from edge_orchestrator.errors import (
    ConflictError,
    ImageNotFoundError,
    InvalidCursorError,
    InvalidItemIdError,
    InvalidVerdictError,
    ItemNotFoundError,
    NotReadyError,
    OrchestratorError,
    QueueFullError,
    StationError,
    StationNotFoundError,
    StorageError,
)
from edge_orchestrator.events import EventBus
from edge_orchestrator.hub_link import CHANNEL as HUB_CHANNEL
from edge_orchestrator.hub_link import HubLink, read_token
from edge_orchestrator.inspector import Inspector
from edge_orchestrator.integrations.config import IntegrationsConfig, load_integrations
from edge_orchestrator.integrations.service import Integrations, OrchestratorLine, channels
from edge_orchestrator.metrics import OrchestratorMetrics
from edge_orchestrator.model_client import ModelClient
from edge_orchestrator.outbox import Outbox
from edge_orchestrator.settings import OrchestratorSettings
from edge_orchestrator.station import StationRepository
from edge_orchestrator.storage import Store

log = logging.getLogger(__name__)

_STATUS: dict[type[OrchestratorError], int] = {
    InvalidItemIdError: 400,
    InvalidCursorError: 400,
    InvalidVerdictError: 400,
    UnauthorizedError: 401,
    ItemNotFoundError: 404,
    ImageNotFoundError: 404,
    StationNotFoundError: 404,
    ConflictError: 409,
    StationConflictError: 409,
    StationError: 422,
    QueueFullError: 429,
    NotReadyError: 503,
    StorageError: 503,
}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OrchestratorError)
    async def orchestrator_error(request: Request, exc: OrchestratorError) -> JSONResponse:
        status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 400)
        body: dict[str, object] = {"detail": exc.detail, "code": exc.code}
        if isinstance(exc, StationError) and exc.errors:
            body["errors"] = exc.errors
        headers: dict[str, str] = {}
        if status in (429, 503):
            headers["Retry-After"] = "1"
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "location": ".".join(str(p) for p in e.get("loc", ())),
                "message": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['location']}: {e['message']}" for e in errors)
        return JSONResponse(
            {"detail": f"invalid request: {detail}", "code": "validation_error", "errors": errors},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        detail = str(exc.detail)
        if exc.status_code == 404:
            detail = f"no such endpoint: {request.method} {request.url.path}"
        return JSONResponse(
            {"detail": detail, "code": codes.get(exc.status_code, "http_error")}, status_code=exc.status_code
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "internal error; the orchestrator's log has the details", "code": "internal_error"},
            status_code=500,
        )


async def _retention(runtime: Runtime, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:  # the outbox's quota holds with or without a station (its warning says what went)
            await runtime.outbox.enforce_quota(runtime.settings.outbox_quota_mb)
        except Exception:
            log.exception("outbox quota check failed")
        station = runtime.inspector.station
        if station is None:
            continue
        try:
            report = await runtime.store.enforce_retention(station.storage)
            if report.files_deleted:
                log.info("retention: %s", report)
        except Exception:
            log.exception("retention failed")


def _outbox(store: Store, device_id: str, config: IntegrationsConfig | None, *, hub: bool) -> Outbox:
    """One channel per destination; the hub's also takes operators' verdicts (in the verdict's transaction)."""
    outbox = Outbox(
        store,
        device_id,
        [*(channels(config) if config else []), *([HUB_CHANNEL] if hub else [])],
        verdict_channels=[HUB_CHANNEL],
    )
    store.queue_verdicts(outbox)
    return outbox


def _hub_link(runtime: Runtime, token: str) -> HubLink:
    settings = runtime.settings
    return HubLink(
        str(settings.hub_url),
        token,
        device_id=settings.device_id,
        store=runtime.store,
        outbox=runtime.outbox,
        state=lambda: system.device_state(runtime),
        heartbeat_s=settings.hub_heartbeat_s,
        ok_image_share=settings.hub_ok_image_share,
        timeout_s=settings.hub_timeout_s,
    )


def create_app(settings: OrchestratorSettings | None = None) -> FastAPI:
    settings = settings or OrchestratorSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        api_key = await asyncio.to_thread(
            resolve_api_key,
            settings.api_key.get_secret_value() if settings.api_key else None,
            settings.api_key_file,
            settings.data_dir,
        )
        log.info("API key from %s", api_key.source)
        config = None
        if settings.integrations_file is not None:
            config = await asyncio.to_thread(load_integrations, settings.integrations_file)
        hub_token = None
        if settings.hub_url is not None:  # before anything starts: a missing token file is a start error
            hub_token = await asyncio.to_thread(read_token, settings.hub_token, settings.hub_token_file)
        store = Store(settings.data_dir)
        await store.open()
        outbox = _outbox(store, settings.device_id, config, hub=hub_token is not None)
        models = ModelClient(settings.model_server_url, settings.model_connect_timeout_s)
        events, metrics = EventBus(), OrchestratorMetrics()
        inspector = Inspector(
            store,
            models,
            events,
            metrics,
            base_dir=settings.stations_dir,
            data_dir=settings.data_dir,
            max_in_flight=settings.max_in_flight,
            describe=models.describe,
            outbox=outbox,
            idempotency_window_s=settings.idempotency_window_s,
        )
        repository = StationRepository(settings.stations_dir, settings.data_dir)
        runtime = Runtime(settings, api_key, store, models, events, metrics, inspector, repository, outbox)
        app.state.runtime = runtime
        await inspector.recover()
        await _activate_initial(runtime)
        hub = _hub_link(runtime, hub_token) if hub_token is not None else None
        integrations = None
        if config is not None or hub is not None:
            integrations = Integrations(
                config or IntegrationsConfig(),
                settings.integrations_file.parent if settings.integrations_file else settings.data_dir,
                OrchestratorLine(inspector, repository),
                events,
                outbox,
                settings.device_id,
                hub,
            )
            await integrations.start()
            runtime.integrations = integrations
        # Everything built so far lives as long as the process: keep it out of the collector's full passes,
        # which otherwise walked ~90k objects and paused the loop for ~60 ms every minute.
        gc.collect()
        gc.freeze()
        tasks = []
        if settings.retention_interval_s > 0:
            tasks.append(
                asyncio.create_task(_retention(runtime, settings.retention_interval_s), name="retention")
            )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if integrations is not None:
                await integrations.stop()
            await inspector.close(settings.shutdown_grace_s)
            events.close()
            await models.close()
            await store.close()

    app = FastAPI(
        title="edge_orchestrator",
        version=__version__,
        description="Trigger, capture, predict, decide, store and publish every inspection of the line.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(inspections.router)
    app.include_router(stations.router)
    return app


async def _activate_initial(runtime: Runtime) -> None:
    """The station active before the stop, else the configured default; a broken one leaves us not ready."""
    repository = runtime.stations
    station_id = await asyncio.to_thread(repository.active_id) or runtime.settings.default_station
    if station_id is None:
        log.warning("no station is active: install one and PUT /api/v1/stations/active")
        return
    try:
        station = await asyncio.to_thread(repository.get, station_id)
        await runtime.inspector.activate(station)
        await asyncio.to_thread(repository.set_active_id, station.id)
    except (StationError, StationNotFoundError) as exc:
        log.error("station %s cannot be activated: %s %s", station_id, exc.detail, getattr(exc, "errors", ""))
