"""The HTTP layer: create_app(), the /v1 REST routes, health, metrics, and the one place errors map to statuses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge_model_serving import __version__
from edge_model_serving.deps import RuntimeDep, ServingRuntime, read_body
from edge_model_serving.errors import (
    BodyTooLargeError,
    InvalidImageError,
    InvalidTensorError,
    ModelNotFoundError,
    ModelNotReadyError,
    OverloadedError,
    ServingError,
    UnsupportedMediaTypeError,
    VersionNotFoundError,
)
from edge_model_serving.metrics import ServingMetrics
from edge_model_serving.oip import router as oip_router
from edge_model_serving.registry import ModelRegistry
from edge_model_serving.schemas import ModelInfo, ModelList, PredictResponse
from edge_model_serving.settings import ServingSettings

log = logging.getLogger(__name__)

_STATUS: dict[type[ServingError], int] = {
    InvalidImageError: 400,
    InvalidTensorError: 400,
    ModelNotFoundError: 404,
    VersionNotFoundError: 404,
    BodyTooLargeError: 413,
    UnsupportedMediaTypeError: 415,
    ModelNotReadyError: 503,
    OverloadedError: 503,
}
_IMAGE_TYPES = {"image/jpeg", "image/jpg", "image/png", "application/octet-stream"}


def _error_body(request: Request, detail: str, code: str, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {"detail": detail, "code": code, **extra}
    if request.url.path.startswith("/v2"):
        body["error"] = detail  # the Open Inference Protocol's error field, read by tritonclient
    return body


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 400)
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse(_error_body(request, exc.detail, exc.code), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in errors)
        return JSONResponse(
            _error_body(request, f"invalid request: {detail}", "validation_error", errors=errors),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        detail = str(exc.detail)
        if exc.status_code == 404:
            detail = f"no such endpoint: {request.method} {request.url.path}"
        code = codes.get(exc.status_code, "http_error")
        return JSONResponse(_error_body(request, detail, code), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            _error_body(request, "internal error; the server log has the details", "internal_error"),
            status_code=500,
        )


router = APIRouter()


@router.get("/health/live", tags=["health"])
async def live() -> dict[str, str]:
    return {"status": "live"}


@router.get("/health/ready", tags=["health"], responses={503: {"description": "Models still loading."}})
async def ready(runtime: RuntimeDep) -> JSONResponse:
    counts = runtime.registry.counts()
    is_ready = runtime.registry.ready
    return JSONResponse(
        {"status": "ready" if is_ready else "loading", "models": counts}, status_code=200 if is_ready else 503
    )


@router.get("/metrics", tags=["health"], response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    for status, count in runtime.registry.counts().items():
        runtime.metrics.models.labels(status=status).set(count)
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models", tags=["models"])
async def list_models(runtime: RuntimeDep) -> ModelList:
    return runtime.registry.list()


@router.get("/v1/models/{name}", tags=["models"])
async def get_model(name: str, runtime: RuntimeDep) -> ModelInfo:
    return runtime.registry.info(name)


@router.post("/v1/models/{name}:reload", tags=["models"])
async def reload_model(name: str, runtime: RuntimeDep) -> ModelInfo:
    """Rescan the model's folder and (re)load every version; the loaded ones serve until replaced."""
    return await runtime.registry.reload(name)


ScoreThreshold = Annotated[
    float | None, Query(ge=0.0, le=1.0, description="Override the model's detection score threshold.")
]
MaxDetections = Annotated[
    int | None, Query(ge=1, le=1000, description="Override the model's max detections.")
]

_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in sorted(_IMAGE_TYPES)},
    }
}


def _parse_version(version: str) -> int | None:
    if version == "latest":
        return None
    if not version.isdigit():
        raise VersionNotFoundError(f"version must be a positive integer or 'latest', not {version!r}")
    return int(version)


async def _predict(
    request: Request,
    runtime: ServingRuntime,
    name: str,
    version: int | None,
    score_threshold: float | None,
    max_detections: int | None,
) -> PredictResponse:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type not in _IMAGE_TYPES:
        raise UnsupportedMediaTypeError(
            f"content type {content_type!r} is not accepted; send the raw image bytes as image/jpeg, "
            "image/png or application/octet-stream"
        )
    model = runtime.registry.get(name, version)
    metrics, label_version = runtime.metrics, str(model.version)
    started = time.perf_counter()
    runtime.admit()
    try:
        body = await read_body(request, runtime.settings.max_body_bytes)
        result = await model.predict_async(body, score_threshold, max_detections)
    except ServingError as exc:
        metrics.requests.labels(name, label_version, "v1", exc.code).inc()
        raise
    finally:
        runtime.release()
    metrics.requests.labels(name, label_version, "v1", "ok").inc()
    for stage in ("decode", "preprocess", "inference", "postprocess"):
        metrics.stage_seconds.labels(name, stage).observe(getattr(result.timings_ms, stage) / 1000.0)
    metrics.request_seconds.labels(name).observe(time.perf_counter() - started)
    return result


def _json(result: PredictResponse) -> Response:
    # Already a validated model: serialise once, skipping FastAPI's second validation pass.
    return Response(result.model_dump_json(), media_type="application/json")


@router.post(
    "/v1/models/{name}:predict", tags=["predict"], openapi_extra=_IMAGE_BODY, response_model=PredictResponse
)
async def predict_latest(
    name: str,
    request: Request,
    runtime: RuntimeDep,
    score_threshold: ScoreThreshold = None,
    max_detections: MaxDetections = None,
) -> Response:
    """Predict on the raw image bytes (JPEG or PNG) with the latest ready version."""
    return _json(await _predict(request, runtime, name, None, score_threshold, max_detections))


@router.post(
    "/v1/models/{name}/versions/{version}:predict",
    tags=["predict"],
    openapi_extra=_IMAGE_BODY,
    response_model=PredictResponse,
)
async def predict_version(
    name: str,
    version: str,
    request: Request,
    runtime: RuntimeDep,
    score_threshold: ScoreThreshold = None,
    max_detections: MaxDetections = None,
) -> Response:
    """Predict with one version (an integer, or `latest`)."""
    return _json(
        await _predict(request, runtime, name, _parse_version(version), score_threshold, max_detections)
    )


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or ServingSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = ModelRegistry(settings.models_dir, settings.interpreter_threads, settings.pool_size)
        runtime = ServingRuntime(settings, registry, ServingMetrics())
        app.state.runtime = runtime
        # Load in the background: /health/live answers at once, /health/ready once models are loaded.
        runtime.tasks.append(asyncio.create_task(registry.sync(), name="initial-load"))
        if settings.watch_interval_s > 0:
            runtime.tasks.append(asyncio.create_task(registry.watch(settings.watch_interval_s), name="watch"))
        try:
            yield
        finally:
            for task in runtime.tasks:
                task.cancel()
            await asyncio.gather(*runtime.tasks, return_exceptions=True)

    app = FastAPI(
        title="edge_model_serving",
        version=__version__,
        description="Serves quantized LiteRT models: REST under /v1, KServe Open Inference Protocol under /v2.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    app.include_router(router)
    app.include_router(oip_router)
    return app
