"""What devices send (device token): heartbeats, result batches and sample images."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from edge_orchestrator.telemetry import MAX_IMAGE_BYTES, Heartbeat, IngestReceipt, ResultBatch
from hub.api.deps import DeviceDep, RuntimeDep
from hub.db import from_db_time
from hub.errors import InvalidInputError
from hub.ingest import ImageTooLargeError, check_camera_id, check_item_id

router = APIRouter(prefix="/api/v1/ingest", tags=["ingest"])

_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No token, an unknown one (`invalid_token`) or a revoked one (`token_revoked`)."},
    403: {"description": "`device_mismatch`: the payload's device_id is not the token's device."},
}


class HeartbeatAck(BaseModel):
    received_at: datetime = Field(description="When the hub stored the beat (its clock, UTC).")


@router.post("/heartbeat", responses=_AUTH_ERRORS)
async def heartbeat(beat: Heartbeat, device_id: DeviceDep, runtime: RuntimeDep) -> HeartbeatAck:
    """Store the device's heartbeat and make it its latest state (the fleet table reads it)."""
    received_at = await runtime.ingest.heartbeat(device_id, beat)
    runtime.metrics.heartbeats.inc()
    return HeartbeatAck(received_at=from_db_time(received_at) or received_at)


@router.post("/results", responses={**_AUTH_ERRORS, 422: {"description": "Invalid body or undecided item."}})
async def results(batch: ResultBatch, device_id: DeviceDep, runtime: RuntimeDep) -> IngestReceipt:
    """Store a batch of results in its order, once per item id: a repeated `inspection.decided` is counted as a
    duplicate; an `inspection.verdict` inserts the item or updates its verdict. A batch is all or nothing."""
    receipt = await runtime.ingest.results(device_id, batch)
    runtime.metrics.results.labels("accepted").inc(receipt.accepted)
    runtime.metrics.results.labels("duplicate").inc(receipt.duplicates)
    return receipt


class ImageStored(BaseModel):
    item_id: str
    camera_id: str
    bytes: int
    sha256: str
    created: bool = Field(description="False when the very same image was already stored (answered 200).")


@router.put(
    "/images/{item_id}/{camera_id}",
    status_code=201,
    responses={
        **_AUTH_ERRORS,
        200: {"model": ImageStored, "description": "The very same image was already stored."},
        409: {"description": "`image_conflict`: another device sent this item's camera image."},
        413: {"description": f"`image_too_large`: more than {MAX_IMAGE_BYTES} bytes."},
        415: {"description": "`unsupported_media_type`: the body is neither a JPEG nor a PNG."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                m: {"schema": {"type": "string", "format": "binary"}} for m in ("image/jpeg", "image/png")
            },
        }
    },
)
async def image(
    item_id: str, camera_id: str, request: Request, device_id: DeviceDep, runtime: RuntimeDep
) -> JSONResponse:
    """Upload one camera's image of an item (the raw JPEG or PNG bytes as the body), before the result that
    lists it. 201 stored, 200 when the same bytes were already stored."""
    check_item_id(item_id)
    check_camera_id(camera_id)
    body = await _read_body(request)
    stored = await runtime.ingest.image(device_id, item_id, camera_id, body)
    runtime.metrics.images.labels("stored" if stored.created else "duplicate").inc()
    answer = ImageStored(
        item_id=item_id, camera_id=camera_id, bytes=stored.bytes, sha256=stored.sha256, created=stored.created
    )
    return JSONResponse(answer.model_dump(), status_code=201 if stored.created else 200)


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it passes the limit (never read whole into memory first)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInputError(
                "Content-Length is not a number", code="invalid_content_length", status=400
            )
        if int(declared) > MAX_IMAGE_BYTES:
            raise ImageTooLargeError(f"the image is larger than {MAX_IMAGE_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_IMAGE_BYTES:
            raise ImageTooLargeError(f"the image is larger than {MAX_IMAGE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
