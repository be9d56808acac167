"""What the live page's script talks to: the event relay, the trigger, item JSON, the station, and images."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_interface.deps import ClientDep, Runtime, RuntimeDep, SameOrigin
from edge_interface.errors import SENTENCES, OrchestratorDown, OrchestratorError

log = logging.getLogger(__name__)
router = APIRouter()

CAMERA_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # the orchestrator's id pattern
_EVENT_ID = re.compile(r"^\d{1,20}$")
# Between two attempts to reach a missing orchestrator: short, so the line's screens recover at once.
RECONNECT_S = 1.0


def is_item_id(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _health_event(data: str) -> bytes:
    return f"event: interface.health\ndata: {data}\n\n".encode()


async def _pump(runtime: Runtime, last_event_id: str | None, queue: asyncio.Queue[bytes]) -> None:
    """Copies the orchestrator's events into `queue`, reconnecting (resuming after the last id) for ever."""
    last = last_event_id
    while True:
        try:
            async with runtime.client.events(last) as response:
                block: list[str] = []
                async for line in response.aiter_lines():
                    if line:
                        if line.startswith("id:"):
                            last = line[3:].strip()
                        if not line.startswith(
                            ":"
                        ):  # upstream keep-alive comments: our health events suffice
                            block.append(line)
                    elif block:
                        await queue.put(("\n".join(block) + "\n\n").encode())
                        block = []
        except OrchestratorDown as exc:
            # Tell this browser now rather than at the next health tick.
            await queue.put(_health_event(runtime.health.reported_down(exc.sentence).model_dump_json()))
        except (OrchestratorError, httpx.HTTPError) as exc:
            log.info("event stream from the orchestrator ended: %s", exc)
        await asyncio.sleep(RECONNECT_S)


async def _relay(runtime: Runtime, request: Request, last_event_id: str | None) -> AsyncIterator[bytes]:
    """The orchestrator's events as they come, and `interface.health` every health_interval_s."""
    loop = asyncio.get_running_loop()
    interval = runtime.settings.health_interval_s
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=512)
    upstream = asyncio.create_task(_pump(runtime, last_event_id, queue), name="event-relay")
    try:
        yield b"retry: 2000\n\n"  # how long the browser waits before reconnecting to us
        next_health = loop.time()
        while True:
            wait = next_health - loop.time()
            if wait > 0:
                try:
                    chunk = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    pass
                else:
                    yield chunk
                    continue
            # Every tick writes, so a browser that left is noticed within one interval even without a
            # disconnect message; the upstream stream is then closed below.
            if await request.is_disconnected():
                return
            yield _health_event((await runtime.health.current()).model_dump_json())
            next_health = loop.time() + interval
    finally:
        upstream.cancel()


@router.get("/events", response_class=StreamingResponse)
async def events(
    request: Request,
    runtime: RuntimeDep,
    last_event_id: Annotated[str | None, Header(description="Resume after this orchestrator event.")] = None,
) -> StreamingResponse:
    """Server-Sent Events: the orchestrator's item and station events, plus `interface.health`."""
    resume = last_event_id if last_event_id and _EVENT_ID.match(last_event_id) else None
    return StreamingResponse(
        _relay(runtime, request, resume),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class TriggerBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    part_id: str | None = Field(default=None, max_length=128)


@router.post("/api/trigger", status_code=202, dependencies=[SameOrigin], response_model=None)
async def trigger(request: Request, client: ClientDep) -> JSONResponse:
    """Inspect the part in front of the cameras now: 202 {"item_id"}, or {"error": sentence}."""
    # JSON only: a cross-site page cannot send it without a CORS preflight, which we never grant.
    if "application/json" not in request.headers.get("content-type", ""):
        return JSONResponse({"error": "The trigger must be sent as JSON by the dashboard."}, status_code=415)
    raw = await request.body()
    try:
        body = TriggerBody.model_validate_json(raw) if raw.strip() else TriggerBody()
    except ValidationError:
        return JSONResponse({"error": "The part id must be text of at most 128 characters."}, status_code=422)
    item = await client.trigger(body.part_id.strip() if body.part_id and body.part_id.strip() else None)
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
