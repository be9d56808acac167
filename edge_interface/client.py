"""The one shared HTTP client to the orchestrator: answers parsed into typed models, failures into our errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from edge_interface.errors import SLOW_SENTENCE, FieldError, OrchestratorDown, OrchestratorError
from edge_interface.metrics import InterfaceMetrics
from edge_orchestrator import station
from edge_orchestrator.domain import Inspection
from edge_orchestrator.integrations.status import LinkStatus
from edge_orchestrator.outbox import ChannelDepth
from edge_orchestrator.storage import DiskUsage, InspectionPage, Stats

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

# The orchestrator's answers that live in its API layer (importing that would pull in its cameras and
# OpenCV); mirrored here with only the fields the dashboard reads, so extra fields never break parsing.


class Readiness(BaseModel):
    ready: bool
    station: str | None = None
    model_server: str = "unknown"
    cameras: dict[str, str] = Field(default_factory=dict)


class ModelVersionInfo(BaseModel):
    version: int
    status: str
    error: str | None = None
    task: str | None = None
    decoder: str | None = None
    labels: list[str] = Field(default_factory=list)


class ModelInfo(BaseModel):
    name: str
    latest_version: int | None = None
    versions: list[ModelVersionInfo] = Field(default_factory=list)


class SystemInfo(BaseModel):
    version: str
    uptime_s: float
    api_key_source: str
    station: str | None
    station_revision: str | None
    queue_depth: int
    max_in_flight: int
    readiness: Readiness
    models: list[ModelInfo]
    disk: DiskUsage
    storage_policy: dict[str, Any] | None
    event_subscribers: int
    outbox: list[ChannelDepth] = Field(default_factory=list)
    integrations: list[LinkStatus] = Field(default_factory=list)


class StationSummary(station.StationSummary):
    """The orchestrator's summary, with its errors as the dashboard shows them."""

    @property
    def field_errors(self) -> list[FieldError]:
        return [_field_error(e) for e in self.errors]


class CameraStatus(BaseModel):
    connected: bool
    detail: str | None = None
    last_frame_at: datetime | None = None
    frames: int = 0
    errors: int = 0


class ActiveStation(BaseModel):
    station_id: str | None
    revision: str | None = None
    station: dict[str, Any] | None = Field(default=None, description="The validated station, as JSON.")
    cameras: dict[str, CameraStatus] = Field(default_factory=dict)

    @property
    def camera_ids(self) -> list[str]:
        cameras = (self.station or {}).get("cameras") or []
        return [str(c["id"]) for c in cameras if isinstance(c, dict) and "id" in c]

    @property
    def name(self) -> str | None:
        name = (self.station or {}).get("name")
        return str(name) if name else self.station_id


class Image(BaseModel):
    content: bytes
    media_type: str
    cache_control: str | None


class _ErrorBody(BaseModel):
    detail: str = ""
    code: str | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list)


_STATIONS = TypeAdapter(list[StationSummary])
EVENTS_PATH = "/api/v1/events"


def _field_error(raw: Mapping[str, Any]) -> FieldError:
    return FieldError(location=str(raw.get("location") or "file"), message=str(raw.get("message") or ""))


class ApiKeySource:
    """The orchestrator's key, from EDGE_API_KEY or the file EDGE_API_KEY_FILE (never logged, never sent to
    the browser). A missing file is read again later: on first start the orchestrator creates it after us."""

    def __init__(self, key: str | None, path: Path | None) -> None:
        self._key = key.strip() if key else None
        self._path = path

    async def headers(self) -> dict[str, str]:
        if self._key is None and self._path is not None:
            with contextlib.suppress(OSError):
                self._key = (await asyncio.to_thread(self._path.read_text)).strip() or None
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}


class OrchestratorClient:
    """Keeps one connection pool for the whole process; every call has an explicit timeout."""

    def __init__(
        self,
        base_url: str,
        key: ApiKeySource,
        metrics: InterfaceMetrics,
        timeout_s: float = 3.0,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: an in-process orchestrator
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = key
        self._metrics = metrics
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 1.0))
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self._timeout,
            # KPI pages ask for many sub-windows at once, and each open live page holds one event stream.
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            transport=transport,
        )

    async def close(self) -> None:
        await self._client.aclose()

    # --- reads ---------------------------------------------------------------------------------

    async def readiness(self, timeout_s: float | None = None, *, quiet: bool = False) -> Readiness:
        """The orchestrator's own health; its 503 (not ready) is an answer here, not a failure.

        `quiet`: an unreachable orchestrator is not logged here (the health monitor logs its changes)."""
        response = await self._send("GET", "/health/ready", ok=(200, 503), timeout_s=timeout_s, quiet=quiet)
        return self._parse(Readiness, response)

    async def inspection(self, item_id: str) -> Inspection:
        return self._parse(Inspection, await self._send("GET", f"/api/v1/inspections/{item_id}"))

    async def inspections(self, params: Mapping[str, str | list[str]]) -> InspectionPage:
        response = await self._send("GET", "/api/v1/inspections", params=params)
        return self._parse(InspectionPage, response)

    async def image(self, item_id: str, camera_id: str, annotated: bool) -> Image:
        response = await self._send(
            "GET",
            f"/api/v1/inspections/{item_id}/images/{camera_id}",
            params={"annotated": "true"} if annotated else {},
        )
        return Image(
            content=response.content,
            media_type=response.headers.get("content-type", "image/jpeg"),
            cache_control=response.headers.get("cache-control"),
        )

    async def stats(self, since: datetime, until: datetime, *, quiet: bool = False) -> Stats:
        """`quiet`: the KPI page asks for many windows at once and logs one line if they fail."""
        params = {"since": since.isoformat(), "until": until.isoformat()}
        return self._parse(Stats, await self._send("GET", "/api/v1/stats", params=params, quiet=quiet))

    async def system(self) -> SystemInfo:
        return self._parse(SystemInfo, await self._send("GET", "/api/v1/system"))

    async def stations(self) -> list[StationSummary]:
        response = await self._send("GET", "/api/v1/stations")
        try:
            return _STATIONS.validate_json(response.content)
        except ValidationError as exc:
            raise self._not_understood("/api/v1/stations", exc) from exc

    async def station_schema(self) -> dict[str, Any]:
        response = await self._send("GET", "/api/v1/stations/schema")
        schema = response.json()
        if not isinstance(schema, dict):
            raise self._not_understood("/api/v1/stations/schema", None)
        return schema

    async def active_station(self) -> ActiveStation:
        return self._parse(ActiveStation, await self._send("GET", "/api/v1/stations/active"))

    # --- writes --------------------------------------------------------------------------------

    async def trigger(self, part_id: str | None) -> Inspection:
        body = {"part_id": part_id} if part_id else None
        # A press of Trigger is a request to inspect now, even a part inspected before: its own key, so the
        # orchestrator's part-id idempotency (meant for retried machine triggers) never answers an old item.
        headers = {"Idempotency-Key": f"dashboard-{uuid.uuid4()}"}
        response = await self._send("POST", "/api/v1/inspections", json=body, headers=headers)
        return self._parse(Inspection, response)

    async def verdict(
        self, item_id: str, decision: str, reason: str | None, operator: str | None
    ) -> Inspection:
        body = {"decision": decision, "reason": reason, "operator": operator}
        response = await self._send("POST", f"/api/v1/inspections/{item_id}/verdict", json=body)
        return self._parse(Inspection, response)

    async def activate(self, station_id: str) -> ActiveStation:
        # Activation opens the new station's cameras and checks it against the model server: allow for it.
        response = await self._send(
            "PUT", "/api/v1/stations/active", json={"station_id": station_id}, timeout_s=30.0
        )
        return self._parse(ActiveStation, response)

    async def install_station(self, station_id: str, source: bytes) -> StationSummary:
        response = await self._send(
            "PUT",
            f"/api/v1/stations/{station_id}",
            content=source,
            headers={"Content-Type": "application/yaml"},
            timeout_s=30.0,
        )
        return self._parse(StationSummary, response)

    # --- the event stream ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def events(self, last_event_id: str | None) -> AsyncIterator[httpx.Response]:
        """The orchestrator's SSE stream, open; it pings every 15 s, so a longer silence means it is gone.

        Failures are not logged here: the relay reconnects with backoff and logs when the stream is lost and
        when it is back, not once per attempt."""
        headers = await self._key.headers()
        headers["Accept"] = "text/event-stream"
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(45.0, connect=self._timeout.connect)
        try:
            async with self._client.stream("GET", EVENTS_PATH, headers=headers, timeout=timeout) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise self._error(response)
                yield response
        except httpx.TimeoutException as exc:
            raise self._down(EVENTS_PATH, exc, slow=False, quiet=True) from exc
        except httpx.TransportError as exc:
            raise self._down(EVENTS_PATH, exc, quiet=True) from exc

    def url(self, path: str) -> str:
        """The orchestrator's address for `path`, as logs show it (always one slash between the two)."""
        return f"{self.base_url}/{path.lstrip('/')}"

    # --- plumbing ------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        timeout_s: float | None = None,
        headers: Mapping[str, str] | None = None,
        quiet: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        all_headers = {**(await self._key.headers()), **(headers or {})}
        timeout = (
            self._timeout if timeout_s is None else httpx.Timeout(timeout_s, connect=self._timeout.connect)
        )
        try:
            response = await self._client.request(
                method, path, headers=all_headers, timeout=timeout, **kwargs
            )
        except httpx.TimeoutException as exc:
            # A refused connection is "down"; one that connected and then stalled is "slow".
            raise self._down(path, exc, slow=not isinstance(exc, httpx.ConnectTimeout), quiet=quiet) from exc
        except httpx.TransportError as exc:
            raise self._down(path, exc, quiet=quiet) from exc
        if response.status_code not in ok:
            raise self._error(response)
        return response

    def _down(
        self, path: str, exc: Exception, *, slow: bool = False, quiet: bool = False
    ) -> OrchestratorDown:
        self._metrics.orchestrator_errors.labels(code="timeout" if slow else "unreachable").inc()
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            "orchestrator %s: %s",
            self.url(path),
            type(exc).__name__,
        )
        reason = type(exc).__name__
        return OrchestratorDown(SLOW_SENTENCE, reason=reason) if slow else OrchestratorDown(reason=reason)

    def _error(self, response: httpx.Response) -> OrchestratorError:
        try:
            body = _ErrorBody.model_validate_json(response.content)
        except ValidationError:
            body = _ErrorBody()
        errors = [_field_error(e) for e in body.errors]
        if body.code == "invalid_station" and not errors and body.detail:
            errors = [FieldError("file", body.detail)]  # e.g. too large: the detail is the only explanation
        error = OrchestratorError(response.status_code, body.code, body.detail, errors)
        self._metrics.orchestrator_errors.labels(code=error.code).inc()
        log.info("orchestrator %s %s: %s", response.request.method, response.request.url.path, error)
        return error

    def _parse(self, model: type[M], response: httpx.Response) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise self._not_understood(response.request.url.path, exc) from exc

    def _not_understood(self, path: str, exc: ValidationError | None) -> OrchestratorError:
        log.error("orchestrator answer to %s not understood: %s", path, exc)
        self._metrics.orchestrator_errors.labels(code="bad_answer").inc()
        return OrchestratorError(502, "bad_answer", "answer not understood")
