"""The one shared HTTP client to edge_model_serving: predictions parsed into domain types, errors typed."""

from __future__ import annotations

import asyncio
from typing import Protocol

import httpx
from pydantic import BaseModel, Field, ValidationError

from edge_orchestrator.domain import Detection, Prediction
from edge_orchestrator.errors import ModelError, ModelTimeoutError, ModelUnavailableError


class _Classification(BaseModel):
    task: str
    label: str
    score: float
    scores: dict[str, float]


class _Detections(BaseModel):
    task: str
    detections: list[Detection]


class _Answer(BaseModel):
    model_name: str
    model_version: int
    task: str
    prediction: _Classification | _Detections
    timings_ms: dict[str, float]


class VersionDescription(BaseModel):
    version: int
    status: str
    task: str | None = None
    labels: list[str] = Field(default_factory=list)


class ModelDescription(BaseModel):
    name: str
    latest_version: int | None
    versions: list[VersionDescription]

    def version(self, pinned: int | None) -> VersionDescription | None:
        wanted = self.latest_version if pinned is None else pinned
        return next((v for v in self.versions if v.version == wanted and v.status == "ready"), None)


class Predictor(Protocol):
    """What the pipeline needs from the model server (the HTTP client here; a fake in unit tests)."""

    async def predict(self, name: str, version: str | None, jpeg: bytes, timeout_s: float) -> Prediction: ...


class ModelClient:
    """Keeps one connection pool for the whole process; each call has an explicit timeout."""

    def __init__(self, base_url: str, connect_timeout_s: float = 1.0, max_connections: int = 16) -> None:
        self._connect_timeout = connect_timeout_s
        # Predictions beyond the pool wait here, not in httpcore's pool, whose bookkeeping rescans every
        # waiting request on each change: under overload that scan ate half the event loop.
        self._slots = asyncio.Semaphore(max_connections)
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(5.0, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"content-type": "image/jpeg"},
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def predict(self, name: str, version: str | None, jpeg: bytes, timeout_s: float) -> Prediction:
        path = (
            f"/v1/models/{name}:predict"
            if version is None
            else f"/v1/models/{name}/versions/{version}:predict"
        )
        connect = min(self._connect_timeout, timeout_s)
        try:
            # One deadline for waiting for a connection and the whole exchange (httpx's own timeouts are
            # per operation, so a slow trickle of bytes could otherwise outlast timeout_s).
            async with asyncio.timeout(timeout_s), self._slots:
                response = await self._client.post(
                    path, content=jpeg, timeout=httpx.Timeout(timeout_s, connect=connect)
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ModelTimeoutError(f"model {name} did not answer within {timeout_s:g} s") from exc
        except httpx.TransportError as exc:
            raise ModelUnavailableError(f"model server unreachable ({type(exc).__name__}: {exc})") from exc
        if response.status_code != 200:
            raise ModelError(f"model {name} answered {response.status_code}: {_detail(response)}")
        try:
            answer = _Answer.model_validate_json(response.content)
        except ValidationError as exc:
            raise ModelError(
                f"model {name} sent an answer that is not a prediction: {exc.errors()[0]['msg']}"
            ) from exc
        p = answer.prediction
        return Prediction(
            model_name=answer.model_name,
            model_version=str(answer.model_version),
            task="classification" if isinstance(p, _Classification) else "detection",
            label=p.label if isinstance(p, _Classification) else None,
            score=p.score if isinstance(p, _Classification) else None,
            scores=p.scores if isinstance(p, _Classification) else {},
            detections=p.detections if isinstance(p, _Detections) else [],
            timings_ms=answer.timings_ms,
        )

    async def ready(self, timeout_s: float = 1.0) -> tuple[bool, str]:
        """Whether the model server answers /health/ready, and a sentence saying how it is."""
        try:
            response = await self._client.get("/health/ready", timeout=timeout_s)
        except httpx.HTTPError as exc:
            return False, f"model server unreachable ({type(exc).__name__})"
        if response.status_code == 200:
            return True, "ready"
        return False, f"model server not ready ({response.status_code}: {_detail(response)})"

    async def describe(self, name: str, timeout_s: float = 2.0) -> ModelDescription | None:
        """The model's ready versions with their task and labels; None when the server has no such model."""
        try:
            response = await self._client.get(f"/v1/models/{name}", timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise ModelUnavailableError(f"model server unreachable ({type(exc).__name__})") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ModelError(f"model {name} listing answered {response.status_code}: {_detail(response)}")
        try:
            return ModelDescription.model_validate_json(response.content)
        except ValidationError as exc:
            raise ModelError(f"model {name} listing is not understood: {exc.errors()[0]['msg']}") from exc

    async def models(self, timeout_s: float = 2.0) -> list[dict[str, object]]:
        """The model server's listing, for the system page (passed through as JSON)."""
        try:
            response = await self._client.get("/v1/models", timeout=timeout_s)
            response.raise_for_status()
            models = response.json().get("models", [])
        except (httpx.HTTPError, ValueError) as exc:
            raise ModelUnavailableError(f"model server listing failed ({type(exc).__name__})") from exc
        return list(models)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return f"{body.get('detail', '')} ({body.get('code', 'unknown')})"
    return str(body)[:200]
