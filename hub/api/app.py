"""create_app(): the lifespan that builds the hub's runtime, the routers, and the one place errors map to JSON."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge_orchestrator import __version__
from hub.api.deps import HubMetrics, Runtime
from hub.api.routes import datasets, devices, fleet, ingest, rollouts, system
from hub.auth import resolve_admin_key
from hub.db import Database
from hub.errors import HubError
from hub.ingest import Ingest
from hub.retention import Retention, RetentionReport, run_every
from hub.rollouts import Rollouts
from hub.settings import HubSettings
from hub.web import pages

log = logging.getLogger(__name__)


def _error(request: Request, status: int, code: str, detail: str, **extra: object) -> JSONResponse:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is not None:
        runtime.metrics.request_errors.labels(code).inc()
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status in (429, 503):
        headers["Retry-After"] = "5"
    return JSONResponse({"detail": detail, "code": code, **extra}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HubError)
    async def hub_error(request: Request, exc: HubError) -> JSONResponse:
        return _error(request, exc.status, exc.code, exc.detail)

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
        detail = "; ".join(f"{e['location']}: {e['message']}" for e in errors[:10])
        if any(e["location"] == "body.results" and e["type"] == "too_long" for e in errors):
            # The wire contract says 413 for a batch over MAX_RESULTS_PER_BATCH: the device splits and resends.
            return _error(request, 413, "batch_too_large", f"too many results in one batch: {detail}")
        return _error(request, 422, "validation_error", f"invalid request: {detail}", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return _error(request, exc.status_code, codes.get(exc.status_code, "http_error"), detail)

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError) -> JSONResponse:
        # A value the database refuses (PostgreSQL: a NUL character in a text): retrying would never help.
        log.warning("data refused on %s %s: %s", request.method, request.url.path, str(exc).splitlines()[0])
        return _error(request, 422, "invalid_data", "the database refused a value of the request")

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        # The database went away (restart, network): the device retries later, nothing is lost.
        log.error("database error on %s %s: %s", request.method, request.url.path, str(exc).splitlines()[0])
        return _error(request, 503, "database_unavailable", "the hub's database does not answer: retry later")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(request, 500, "internal_error", "internal error; the hub's log has the details")


def _start_retention(runtime: Runtime) -> asyncio.Task[None] | None:
    """The retention loop in the background (None when HUB_RETENTION_INTERVAL_S is 0)."""
    settings = runtime.settings
    if settings.retention_interval_s <= 0:
        log.info("retention is off: results and images are kept until deleted by hand")
        return None
    metrics = runtime.metrics

    def on_report(report: RetentionReport) -> None:
        metrics.images_bytes.set(report.images_bytes)
        metrics.retention_deleted.labels("results").inc(report.results_deleted)
        metrics.retention_deleted.labels("images").inc(report.images_deleted)

    retention = Retention(runtime.db, runtime.images_dir, settings)
    return asyncio.create_task(
        run_every(retention, settings.retention_interval_s, on_report), name="retention"
    )


def create_app(settings: HubSettings | None = None) -> FastAPI:
    settings = settings or HubSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        admin_key = await asyncio.to_thread(
            resolve_admin_key,
            settings.admin_key.get_secret_value() if settings.admin_key else None,
            settings.admin_key_file,
            settings.data_dir,
        )
        log.info("admin key from %s", admin_key.source)
        db = Database(settings.url)
        try:
            await asyncio.to_thread(db.migrate)
            images_dir = settings.data_dir / "images"
            await asyncio.to_thread(images_dir.mkdir, parents=True, exist_ok=True)
            roll = Rollouts(settings, db)
            runtime = Runtime(
                settings=settings,
                db=db,
                admin_key=admin_key,
                images_dir=images_dir,
                metrics=HubMetrics(),
                ingest=Ingest(db, images_dir, settings.keep_heartbeats_days),
                rollouts=roll,
            )
            await roll.recover()
            app.state.runtime = runtime
            pruning = _start_retention(runtime)
            try:
                yield
            finally:
                if pruning is not None:
                    pruning.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pruning
                await roll.close()
        finally:
            db.close()

    app = FastAPI(
        title="hub",
        version=__version__,
        description="The fleet's hub: every edge device's heartbeats, results and sample images; the fleet "
        "dashboard; dataset exports and roll-outs.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(devices.router)
    app.include_router(ingest.router)
    app.include_router(fleet.router)
    app.include_router(datasets.router)
    app.include_router(rollouts.router)
    app.include_router(pages.router)
    return app
