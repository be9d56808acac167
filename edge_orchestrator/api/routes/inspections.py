"""Inspection routes: trigger (with an optional wait), read, list, images, operator verdicts."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Header, Query, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from edge_orchestrator.annotate import annotate
from edge_orchestrator.api.deps import ReadAccess, RuntimeDep, WriteAccess
from edge_orchestrator.domain import Decision, Inspection, ItemState, TriggerRequest, is_item_id
from edge_orchestrator.errors import ImageNotFoundError, InvalidItemIdError
from edge_orchestrator.storage import InspectionPage, InspectionQuery

router = APIRouter(prefix="/api/v1/inspections", tags=["inspections"])

_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"description": "Malformed item id or cursor."},
    401: {"description": "Missing or wrong API key."},
    404: {"description": "Unknown item or image."},
}


def _checked(item_id: str) -> str:
    if not is_item_id(item_id):
        raise InvalidItemIdError(f"{item_id[:64]!r} is not an item id (item ids are UUIDs)")
    return item_id


@router.post(
    "",
    status_code=202,
    dependencies=[WriteAccess],
    responses={
        200: {"description": "Decided within ?wait=.", "model": Inspection},
        202: {"description": "Accepted; decision pending. Location names the item."},
        409: {"description": "The Idempotency-Key was used for a different trigger (idempotency_conflict)."},
        429: {"description": "Too many inspections in flight (queue_full)."},
        503: {"description": "No active station (not_ready)."},
    },
)
async def trigger(
    runtime: RuntimeDep,
    response: Response,
    body: Annotated[TriggerRequest | None, Body()] = None,
    wait: Annotated[
        float | None,
        Query(
            gt=0, le=300, description="Seconds to wait for the decision; 200 if decided in time, else 202."
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=128,
            pattern=r"^[\x21-\x7e]+$",
            description=(
                "Client-chosen key (printable ASCII): a repeat within the idempotency window returns the first"
                " item (header Idempotent-Replayed: true) instead of inspecting again. Without it, the part id"
                " is the key."
            ),
        ),
    ] = None,
) -> Inspection:
    """Start an inspection of the part in front of the cameras now.

    Safe to retry: a repeat with the same Idempotency-Key, or else the same part id, returns the same item.
    """
    trigger = body or TriggerRequest()
    key = idempotency_key or trigger.part_id
    if key is None:
        item = await runtime.inspector.submit(trigger, source="api")
    else:
        item, replayed = await runtime.inspector.submit_once(trigger, "api", key)
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/api/v1/inspections/{item.item_id}"
    if item.decision is not None and wait is None:
        response.status_code = 200  # a replay of a decided item: nothing is pending
        return item
    if wait is not None:
        decided = await runtime.inspector.wait(item.item_id, min(wait, runtime.settings.max_wait_s))
        if decided is not None:
            response.status_code = 200
            return decided
    return item


@router.get("", dependencies=[ReadAccess], responses=_ERRORS)
async def list_inspections(
    runtime: RuntimeDep,
    decision: Annotated[list[Decision] | None, Query(description="One or more decisions.")] = None,
    state: Annotated[ItemState | None, Query()] = None,
    station_id: Annotated[str | None, Query(max_length=64)] = None,
    part_id: Annotated[str | None, Query(max_length=128)] = None,
    since: Annotated[datetime | None, Query(description="Accepted at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, Query(description="Accepted before (ISO 8601).")] = None,
    overridden: Annotated[bool | None, Query(description="Only items an operator overrode (or not).")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=256, description="next_cursor of the previous page.")
    ] = None,
) -> InspectionPage:
    """Newest first, from the database's indexes; follow next_cursor for the next page."""
    query = InspectionQuery(
        decision=decision,
        state=state,
        station_id=station_id,
        part_id=part_id,
        since=since,
        until=until,
        overridden=overridden,
        limit=limit,
        cursor=cursor,
    )
    return await runtime.store.query(query)


@router.get("/{item_id}", dependencies=[ReadAccess], responses=_ERRORS)
async def get_inspection(
    item_id: str,
    runtime: RuntimeDep,
    wait: Annotated[
        float | None,
        Query(gt=0, le=300, description="Long-poll: wait up to this many seconds for the decision."),
    ] = None,
) -> Inspection:
    """The item as it is now; with ?wait=, as soon as it is decided (or as it is when the wait ends)."""
    item = await runtime.store.get(_checked(item_id))
    if wait is not None and item.decision is None:
        decided = await runtime.inspector.wait(item_id, min(wait, runtime.settings.max_wait_s))
        return decided or await runtime.store.get(item_id)
    return item


@router.get(
    "/{item_id}/images/{camera_id}",
    dependencies=[ReadAccess],
    response_class=Response,
    responses={**_ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "The JPEG."}},
)
async def get_image(
    item_id: str,
    camera_id: str,
    runtime: RuntimeDep,
    annotated: Annotated[bool, Query(description="Draw boxes, labels and the decision.")] = False,
) -> Response:
    """The original JPEG as captured, or an annotated copy."""
    item_id = _checked(item_id)
    path = await runtime.store.image_file(item_id, camera_id)
    headers = {"Cache-Control": "private, max-age=31536000, immutable"}
    if not annotated:
        return FileResponse(path, media_type="image/jpeg", headers=headers)
    item = await runtime.store.get(item_id)
    camera = item.camera(camera_id)
    if camera is None:
        raise ImageNotFoundError(f"item {item_id} has no camera {camera_id!r}")
    data = await asyncio.to_thread(path.read_bytes)
    return Response(await asyncio.to_thread(annotate, data, camera), media_type="image/jpeg", headers=headers)


class VerdictRequest(BaseModel):
    decision: Literal[Decision.OK, Decision.KO] = Field(description="What the part really is.")
    reason: str | None = Field(default=None, max_length=500, description="Why, in the operator's words.")
    operator: str | None = Field(default=None, max_length=100, description="Who decided.")


@router.post(
    "/{item_id}/verdict",
    dependencies=[WriteAccess],
    responses={**_ERRORS, 409: {"description": "Not decided yet."}},
)
async def post_verdict(item_id: str, verdict: VerdictRequest, runtime: RuntimeDep) -> Inspection:
    """An operator confirms or overrides the machine's decision; both are kept."""
    item = await runtime.store.set_verdict(
        _checked(item_id), verdict.decision, verdict.reason, verdict.operator
    )
    if item.verdict is not None:
        runtime.events.publish(
            "item.verdict",
            {
                "item_id": item.item_id,
                "decision": item.decision.value if item.decision else None,
                "verdict": item.verdict.decision.value,
                "overrides": item.verdict.overrides,
            },
        )
    return item
