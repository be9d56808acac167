"""The fleet's read API (readers): the fleet table, KPIs, one device's results and trends, a result, an image."""

from __future__ import annotations

import asyncio
import mimetypes
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from hub import fleet, fleet_results
from hub.api.deps import ReaderAccess, RuntimeDep
from hub.errors import NotFoundError
from hub.fleet import DeviceRow, Fleet, Kpis, Thresholds, Trends
from hub.fleet_results import DecisionName, ResultDetail, ResultSummary

router = APIRouter(prefix="/api/v1", tags=["fleet"], dependencies=[ReaderAccess])


class DeviceNotFoundError(NotFoundError):
    code = "device_not_found"


class ResultNotFoundError(NotFoundError):
    code = "result_not_found"


class ImageNotFoundError(NotFoundError):
    code = "image_not_found"


class Results(BaseModel):
    results: list[ResultSummary] = Field(description="Newest first.")


def thresholds(runtime: RuntimeDep) -> Thresholds:
    return Thresholds(runtime.settings.stale_after_beats, runtime.settings.offline_after_s)


def now() -> datetime:
    return datetime.now(UTC)


@router.get("/fleet", response_model=Fleet)
async def get_fleet(
    runtime: RuntimeDep,
    site: Annotated[str | None, Query(max_length=64)] = None,
    line: Annotated[str | None, Query(max_length=64)] = None,
) -> Fleet:
    """Every device (or a site's, a line's) with its status and today's figures (since UTC midnight)."""
    limits, at = thresholds(runtime), now()
    return await runtime.db.run(lambda conn: fleet.fleet(conn, at, limits, site=site, line=line))


@router.get("/fleet/kpis", response_model=Kpis)
async def get_kpis(runtime: RuntimeDep, days: Annotated[int, Query(ge=1, le=fleet.MAX_DAYS)] = 7) -> Kpis:
    """Parts, yield and reject rate per line and per station, per UTC day (the last one today)."""
    at = now()
    return await runtime.db.run(lambda conn: fleet.kpis(conn, at, days))


async def _device(runtime: RuntimeDep, device_id: str) -> DeviceRow:
    limits, at = thresholds(runtime), now()
    found = await runtime.db.run(lambda conn: fleet.fleet(conn, at, limits, device_id=device_id))
    if not found.devices:
        raise DeviceNotFoundError(f"No device {device_id!r} is registered on this hub.")
    return found.devices[0]


@router.get("/fleet/devices/{device_id}", response_model=DeviceRow)
async def get_device(runtime: RuntimeDep, device_id: str) -> DeviceRow:
    """One row of the fleet table."""
    return await _device(runtime, device_id)


@router.get("/fleet/devices/{device_id}/results", response_model=Results)
async def get_device_results(
    runtime: RuntimeDep,
    device_id: str,
    decision: DecisionName | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> Results:
    """The device's latest results (of the machine's `decision` when given), with the cameras' boxes."""

    def read(conn: Connection) -> list[ResultSummary] | None:
        if not fleet.device_exists(conn, device_id):
            return None
        return fleet_results.device_results(conn, device_id, decision=decision, limit=limit)

    found = await runtime.db.run(read)
    if found is None:
        raise DeviceNotFoundError(f"No device {device_id!r} is registered on this hub.")
    return Results(results=found)


@router.get("/fleet/devices/{device_id}/trends", response_model=Trends)
async def get_device_trends(
    runtime: RuntimeDep,
    device_id: str,
    hours: Annotated[int, Query(ge=1, le=fleet.MAX_HOURS)] = 24,
) -> Trends:
    """Parts per hour and readiness, disk and outbox per hour, the last one the current hour (UTC)."""
    at = now()

    def read(conn: Connection) -> Trends | None:
        return fleet.trends(conn, device_id, at, hours) if fleet.device_exists(conn, device_id) else None

    found = await runtime.db.run(read)
    if found is None:
        raise DeviceNotFoundError(f"No device {device_id!r} is registered on this hub.")
    return found


@router.get("/results/{item_id}", response_model=ResultDetail)
async def get_result(runtime: RuntimeDep, item_id: str) -> ResultDetail:
    """One result as received, with the item the device sent."""
    found = await runtime.db.run(lambda conn: fleet_results.result(conn, item_id))
    if found is None:
        raise ResultNotFoundError(f"The hub has no result for item {item_id!r}.")
    return found


@router.get(
    "/images/{item_id}/{camera_id}",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}},
)
async def get_image(runtime: RuntimeDep, item_id: str, camera_id: str) -> FileResponse:
    """A camera's image of an item, as the device uploaded it."""
    relative = await runtime.db.run(lambda conn: fleet_results.image_path(conn, item_id, camera_id))
    folder = runtime.images_dir
    path = await asyncio.to_thread(_inside, folder, relative) if relative else None
    if path is None:
        raise ImageNotFoundError(f"The hub holds no image of camera {camera_id!r} for item {item_id!r}.")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    # An image never changes once stored (the same item and camera is refused with other bytes).
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=86400"})


def _inside(folder: Path, relative: str) -> Path | None:
    """The file, if it exists inside the images folder (a row can never point the server elsewhere)."""
    root = folder.resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None
