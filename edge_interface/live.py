"""What the live page's script talks to: the event relay, the trigger, item JSON, the station, and images."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_interface.client import EVENTS_PATH
from edge_interface.deps import ClientDep, Runtime, RuntimeDep, SameOrigin
from edge_interface.errors import (
    DOWN_SENTENCE,
    SENTENCES,
    OrchestratorDown,
    OrchestratorError,
    action_sentence,
)
from edge_interface.health import OK, Health

log = logging.getLogger(__name__)
router = APIRouter()

CAMERA_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # the orchestrator's id pattern
_EVENT_ID = re.compile(r"^\d{1,20}$")
# Between two attempts to reach a missing orchestrator: short at first, so the line's screens recover at
# once, then longer. A health check that finds the orchestrator answering again cuts the wait short.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
# After the orchestrator ended the stream itself (its restart, or a stream.overflow): resume soon.
RESUME_S = 1.0
STREAM_LOST = (
    "Live updates from the orchestrator are interrupted: reconnecting. Decisions shown may be out of date."
)


def is_item_id(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _health_event(health: Health) -> bytes:
    return f"event: interface.health\ndata: {health.model_dump_json()}\n\n".encode()


@dataclass(frozen=True)
class _Event:
    """One complete orchestrator event, as the SSE block to forward, and its id (None if it has none)."""

    id: str | None
    block: bytes


@dataclass(frozen=True)
class _Connected:
    """The orchestrator accepted the stream (it answered 200)."""


@dataclass(frozen=True)
class _Ended:
    """The upstream stream is over: `failure` is why, or None when the orchestrator closed it itself."""

    failure: Exception | None


_Upstream = _Event | _Connected | _Ended


def backoff_s(failures: int) -> float:
    """The wait before the next attempt after `failures` attempts in a row failed (0.5, 1, 2, 4, 8, 10, 10 s)."""
    return min(BACKOFF_FIRST_S * 2.0 ** max(failures - 1, 0), BACKOFF_MAX_S)


class _Relay:
    """One browser's stream: the orchestrator's events as they come, and `interface.health` every interval.

    The upstream connection is read by a task of its own that reports everything, in order, through one
    queue: the events, that it connected, and how it ended. This generator owns the rest: the last event id
    it relayed (sent when reconnecting, so nothing is lost or repeated), the backoff, the health events that
    tell the browser what is wrong, and the ending (the browser leaving, or the server stopping).
    """

    def __init__(self, runtime: Runtime, last_event_id: str | None) -> None:
        self.runtime = runtime
        self.last_id = last_event_id  # the last orchestrator event relayed to this browser
        self.queue: asyncio.Queue[_Upstream] = asyncio.Queue(maxsize=512)
        self.upstream: asyncio.Task[None] | None = None
        self.failures = 0  # attempts in a row that failed
        self.reconnect_at = 0.0  # loop time of the next attempt, while upstream is None
        self.problem: str | None = (
            None  # what is wrong with this stream, when the orchestrator itself answers
        )
        self.down = (
            False  # the last failure was "not answering" (so an answering health check retries at once)
        )
        self.lost = False  # the loss was logged: log the recovery too
        self.told_down = False  # the browser was already told that the orchestrator is down

    # --- upstream -----------------------------------------------------------------------------

    def _connect(self) -> None:
        self.upstream = asyncio.create_task(self._read(self.last_id), name="event-relay-upstream")

    async def _read(self, after: str | None) -> None:
        """One connection to the orchestrator's stream; every failure ends up in the queue, never raised."""
        ended: Exception | None = None
        try:
            async with self.runtime.client.events(after) as response:
                await self.queue.put(_Connected())
                event_id: str | None = None
                block: list[str] = []
                async for line in response.aiter_lines():
                    if line:
                        # Comments are the orchestrator's keep-alive pings (our health events suffice), and
                        # its retry hint is not for the browser, which reconnects to us, not to it.
                        if line.startswith(":") or line.startswith("retry:"):
                            continue
                        if line.startswith("id:"):
                            event_id = line[3:].strip() or None
                        block.append(line)
                    elif block:
                        await self.queue.put(_Event(event_id, ("\n".join(block) + "\n\n").encode()))
                        event_id, block = None, []
        except asyncio.CancelledError:
            raise  # the browser left or the server stops: nothing to report
        except Exception as exc:  # httpx errors, the orchestrator's refusals, and anything unforeseen
            ended = exc
        await self.queue.put(_Ended(ended))

    def _ended(self, failure: Exception | None, now: float) -> Health | None:
        """Schedules the next attempt; returns the health to send the browser now, if it must hear it now."""
        self.upstream = None
        self.failures += 1
        url = self.runtime.client.url(EVENTS_PATH)
        if failure is None:
            log.info("the orchestrator ended its event stream: resuming after event %s", self.last_id)
            self.reconnect_at = now + RESUME_S
            return None
        self.reconnect_at = now + backoff_s(self.failures)
        first = self.failures == 1
        if isinstance(failure, OrchestratorDown):
            reason, problem = failure.reason or "no answer", STREAM_LOST
        elif isinstance(failure, OrchestratorError):
            reason = f"{failure.status} {failure.code}"
            problem = f"Live updates are not available: {failure.sentence}"
        elif isinstance(failure, httpx.HTTPError):
            reason, problem = type(failure).__name__, STREAM_LOST
        else:
            reason, problem = repr(failure), STREAM_LOST
            if first:
                log.error("unexpected failure of the event relay from %s", url, exc_info=failure)
        self.down = isinstance(failure, OrchestratorDown | httpx.TransportError)
        if not self.lost:
            self.lost = True
            log.warning(
                "event stream from the orchestrator %s lost (%s): reconnecting with backoff", url, reason
            )
        else:
            log.debug("event stream from %s: attempt %d failed (%s)", url, self.failures, reason)
        changed = problem != self.problem
        self.problem = problem
        if self.down:
            # Say it to every page at once (the shared health), and to this browser now, once.
            health = self.runtime.health.reported_down(
                failure.sentence if isinstance(failure, OrchestratorDown) else DOWN_SENTENCE
            )
            if not self.told_down:
                return self._health(health)
            return None
        # The orchestrator answers, but refuses the stream (its key, its version): the banner must say so.
        latest = self.runtime.health.latest
        return self._health(latest) if changed and latest is not None else None

    def _connected(self) -> None:
        if self.lost:
            log.info(
                "event stream from the orchestrator %s is back: resuming after event %s",
                self.runtime.client.base_url,
                self.last_id,
            )
        self.failures, self.problem, self.down, self.lost = 0, None, False, False

    # --- health -------------------------------------------------------------------------------

    def _health(self, health: Health) -> Health:
        """The line's health as this browser must hear it: with this stream's own problem, if it has one the
        shared health does not already say (the orchestrator answers its health check, but not the stream)."""
        self.told_down = health.orchestrator != OK
        if self.problem is None or self.told_down or self.problem in health.problems:
            return health
        return health.model_copy(update={"problems": [*health.problems, self.problem]})

    # --- the stream ---------------------------------------------------------------------------

    async def run(self, request: Request, stopping: asyncio.Event) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        interval = self.runtime.settings.health_interval_s
        stop: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
        getter: asyncio.Future[Any] | None = None  # the queue's next item (_Upstream)
        checking: asyncio.Future[Any] | None = None  # the shared health check (Health)
        try:
            yield b"retry: 2000\n\n"  # how long the browser waits before reconnecting to us
            next_health = loop.time()
            while not stopping.is_set():
                now = loop.time()
                if self.upstream is None and now >= self.reconnect_at:
                    self._connect()
                if now >= next_health:
                    # Every tick writes, so a browser that left is noticed within one interval even without a
                    # disconnect message; the upstream stream is then closed below.
                    if await request.is_disconnected():
                        return
                    checking = checking or asyncio.ensure_future(self.runtime.health.current())
                    await asyncio.wait({checking, stop}, return_when=asyncio.FIRST_COMPLETED)
                    if not checking.done():
                        return  # the server stops
                    health: Health = checking.result()
                    checking = None
                    if self.upstream is None and self.down and health.orchestrator == OK:
                        self.reconnect_at = loop.time()  # it answers again: no need to wait out the backoff
                    yield _health_event(self._health(health))
                    next_health = loop.time() + interval
                    continue
                deadline = next_health if self.upstream is not None else min(next_health, self.reconnect_at)
                getter = getter or asyncio.ensure_future(self.queue.get())
                done, _ = await asyncio.wait(
                    {getter, stop}, timeout=max(deadline - now, 0.0), return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    continue
                item: _Upstream = getter.result()
                getter = None
                if isinstance(item, _Event):
                    yield item.block
                    self.last_id = item.id or self.last_id
                elif isinstance(item, _Connected):
                    self._connected()
                else:
                    told = self._ended(item.failure, loop.time())
                    if told is not None:
                        yield _health_event(told)
                        next_health = loop.time() + interval
        finally:
            # No await here: when the browser leaves, this runs inside a cancelled scope. Cancelling the reader
            # closes the orchestrator's stream in the reader's own task.
            for task in (self.upstream, getter, checking, stop):
                if task is not None:
                    task.cancel()


@router.get("/events", response_class=StreamingResponse)
async def events(
    request: Request,
    runtime: RuntimeDep,
    last_event_id: Annotated[str | None, Header(description="Resume after this orchestrator event.")] = None,
) -> StreamingResponse:
    """Server-Sent Events: the orchestrator's item and station events, plus `interface.health`."""
    resume = last_event_id if last_event_id and _EVENT_ID.match(last_event_id) else None
    return StreamingResponse(
        _Relay(runtime, resume).run(request, runtime.stopping),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class TriggerBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    part_id: str | None = Field(default=None, max_length=128)


@router.post("/api/trigger", status_code=202, dependencies=[SameOrigin], response_model=None)
async def trigger(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Inspect the part in front of the cameras now: 202 {"item_id"}, or {"error": sentence}."""
    # JSON only: a cross-site page cannot send it without a CORS preflight, which we never grant.
    if "application/json" not in request.headers.get("content-type", ""):
        return JSONResponse({"error": "The trigger must be sent as JSON by the dashboard."}, status_code=415)
    raw = await request.body()
    try:
        body = TriggerBody.model_validate_json(raw) if raw.strip() else TriggerBody()
    except ValidationError:
        return JSONResponse({"error": "The part id must be text of at most 128 characters."}, status_code=422)
    try:
        item = await runtime.client.trigger(
            body.part_id.strip() if body.part_id and body.part_id.strip() else None
        )
    except OrchestratorDown as exc:
        # The banner says the orchestrator is down; beside the button, say what did not happen.
        runtime.health.reported_down(exc.sentence)
        sentence = action_sentence("The part was not inspected", exc)
        return JSONResponse({"error": sentence}, status_code=exc.status)
    return JSONResponse({"item_id": item.item_id}, status_code=202)


@router.get("/api/items/{item_id}", response_model=None)
async def item_json(item_id: str, client: ClientDep) -> JSONResponse:
    """The item as the orchestrator stores it, for the live page to draw."""
    if not is_item_id(item_id):
        return JSONResponse({"error": SENTENCES["invalid_item_id"]}, status_code=404)
    item = await client.inspection(item_id)
    return JSONResponse(item.model_dump(mode="json"))


@router.get("/api/station", response_model=None)
async def station_json(client: ClientDep) -> JSONResponse:
    """The active station's id, name and cameras: the live page redraws its panels after a switch."""
    active = await client.active_station()
    body: dict[str, Any] = {
        "station_id": active.station_id,
        "name": active.name,
        "cameras": active.camera_ids,
    }
    return JSONResponse(body)


@router.get("/images/{item_id}/{camera_id}", response_class=Response)
async def image(item_id: str, camera_id: str, client: ClientDep, annotated: bool = False) -> Response:
    """One camera's JPEG of one item, as captured or with boxes and labels drawn."""
    if not is_item_id(item_id) or not CAMERA_ID.match(camera_id):
        return PlainTextResponse(SENTENCES["image_not_found"], status_code=404)
    picture = await client.image(item_id, camera_id, annotated)
    headers = {"Cache-Control": picture.cache_control} if picture.cache_control else {}
    return Response(picture.content, media_type=picture.media_type, headers=headers)
