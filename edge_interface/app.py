"""create_app(): the lifespan that builds the runtime, the routers, health and metrics, and error pages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge_interface import __version__, live, pages, stations
from edge_interface.client import ApiKeySource, OrchestratorClient
from edge_interface.deps import Runtime, RuntimeDep
from edge_interface.errors import OrchestratorDown, OrchestratorError, RequestRefused
from edge_interface.health import Health, HealthMonitor
from edge_interface.metrics import InterfaceMetrics, MetricsMiddleware
from edge_interface.rendering import STATIC, Renderer
from edge_interface.settings import InterfaceSettings

log = logging.getLogger(__name__)

UNEXPECTED = "The dashboard hit an unexpected problem: its log has the details. Reload the page to try again."
NOT_FOUND = "This page does not exist: use the menu above."


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _is_plain(request: Request) -> bool:
    return request.url.path.startswith(("/images/", "/events", "/health/", "/metrics", "/static/"))


def _install_error_handlers(app: FastAPI) -> None:
    """Every failure becomes a sentence: JSON {"error"} for the page script, text for images, else a page."""

    def answer(request: Request, status: int, sentence: str) -> Response:
        if _wants_json(request):
            return JSONResponse({"error": sentence}, status_code=status)
        runtime: Runtime | None = getattr(request.app.state, "runtime", None)
        if _is_plain(request) or runtime is None:
            return PlainTextResponse(sentence, status_code=status)
        health = runtime.health.latest or Health(orchestrator="ok", model_server="ok")
        return runtime.renderer.page(
            "error.html", {}, health=health, nav="", title="Problem", errors=[sentence], status=status
        )

    @app.exception_handler(OrchestratorDown)
    async def down(request: Request, exc: OrchestratorDown) -> Response:
        runtime: Runtime | None = getattr(request.app.state, "runtime", None)
        if runtime is not None:
            runtime.health.reported_down(exc.sentence)
        return answer(request, exc.status, exc.sentence)

    @app.exception_handler(OrchestratorError)
    async def refused(request: Request, exc: OrchestratorError) -> Response:
        return answer(request, exc.status, exc.sentence)

    @app.exception_handler(RequestRefused)
    async def ours(request: Request, exc: RequestRefused) -> Response:
        return answer(request, exc.status, exc.sentence)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        fields = ", ".join(sorted({str((e.get("loc") or ("?",))[-1]) for e in exc.errors()}))
        return answer(request, 400, f"Some values were not understood ({fields}): check them and try again.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return answer(request, 404, NOT_FOUND)
        if exc.status_code == 405:
            return answer(request, 405, "This address cannot be used that way: use the menu above.")
        return answer(request, exc.status_code, "The request could not be answered: reload the page.")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return answer(request, 500, UNEXPECTED)


def end_streams(app: FastAPI) -> None:
    """The server is stopping: every open /events stream ends now, cleanly (the browsers reconnect later).

    Call it before waiting for connections to close (`python -m edge_interface` does): a live page's stream
    never ends by itself, so otherwise the server waits out its grace period, then cancels the stream."""
    runtime: Runtime | None = getattr(app.state, "runtime", None)
    if runtime is not None:
        runtime.stopping.set()


def create_app(settings: InterfaceSettings | None = None) -> FastAPI:
    settings = settings or InterfaceSettings()
    metrics = InterfaceMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        key = ApiKeySource(
            settings.api_key.get_secret_value() if settings.api_key else None, settings.api_key_file
        )
        if settings.api_key is None and settings.api_key_file is None:
            log.warning(
                "no EDGE_API_KEY or EDGE_API_KEY_FILE: the orchestrator will refuse triggers and verdicts"
            )
        client = OrchestratorClient(settings.orchestrator_url, key, metrics, settings.request_timeout_s)
        renderer = await asyncio.to_thread(Renderer, settings)
        health = HealthMonitor(client, max_age_s=min(1.0, settings.health_interval_s / 2))
        app.state.runtime = Runtime(settings, client, health, metrics, renderer, asyncio.Event())
        log.info("dashboard for the orchestrator at %s", settings.orchestrator_url)
        try:
            yield
        finally:
            end_streams(app)  # in case the server did not say it was stopping (streams are gone by now)
            await health.close()
            await client.close()

    app = FastAPI(
        title="edge_interface",
        version=__version__,
        description="The line dashboard: live decisions, KPIs, history, verdicts, stations and system health.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(_health_router())
    app.include_router(live.router)
    app.include_router(pages.router)
    app.include_router(stations.router)
    return app


def _health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health/live")
    async def alive() -> dict[str, str]:
        return {"status": "live"}

    @router.get("/health/ready", response_model=None)
    async def ready(runtime: RuntimeDep) -> JSONResponse:
        """Ready when the orchestrator answers (its own readiness is reported, not required)."""
        try:
            readiness = await runtime.client.readiness(timeout_s=2.0)
        except (OrchestratorDown, OrchestratorError) as exc:
            return JSONResponse({"status": "not ready", "detail": exc.sentence}, status_code=503)
        return JSONResponse({"status": "ready", "orchestrator_ready": readiness.ready})

    @router.get("/metrics", response_class=Response)
    async def prometheus(runtime: RuntimeDep) -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
