"""Station routes: the installed stations, their schema, installing one, and switching the active one."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from edge_orchestrator.api.deps import ReadAccess, RuntimeDep, WriteAccess
from edge_orchestrator.errors import OrchestratorError, StationError
from edge_orchestrator.station import MAX_STATION_BYTES, Station, StationSummary, redact_source

router = APIRouter(prefix="/api/v1/stations", tags=["stations"])


class StationConflictError(OrchestratorError):
    code = "station_active"


class StationDocument(BaseModel):
    id: str
    revision: str
    active: bool
    station: dict[str, Any] = Field(description="The validated station, defaults filled in.")
    source: str = Field(
        description="The file as installed (YAML), with URL credentials and passwords masked."
    )


class ActiveStation(BaseModel):
    station_id: str | None
    revision: str | None = None
    station: dict[str, Any] | None = None
    cameras: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Each camera's status.")


class Activate(BaseModel):
    station_id: str = Field(description="Id of an installed station.")


def _active_document(runtime: RuntimeDep) -> ActiveStation:
    active = runtime.inspector.active
    if active is None:
        return ActiveStation(station_id=None)
    return ActiveStation(
        station_id=active.station.id,
        revision=active.station.revision,
        station=active.station.public(),
        cameras={cid: camera.status().model_dump(mode="json") for cid, camera in active.cameras.items()},
    )


@router.get("", dependencies=[ReadAccess])
async def list_stations(runtime: RuntimeDep) -> list[StationSummary]:
    """Every installed station file, valid or not (with its errors)."""
    active = runtime.inspector.station
    return await asyncio.to_thread(runtime.stations.list, active.id if active else None)


@router.get("/schema", dependencies=[ReadAccess])
async def station_schema() -> dict[str, Any]:
    """The JSON Schema of a station file (every field described), for editors and the dashboard."""
    return Station.model_json_schema()


@router.get("/active", dependencies=[ReadAccess])
async def get_active(runtime: RuntimeDep) -> ActiveStation:
    return _active_document(runtime)


@router.put("/active", dependencies=[WriteAccess], responses={404: {}, 422: {}})
async def put_active(body: Activate, runtime: RuntimeDep) -> ActiveStation:
    """Switch atomically: items in flight finish on the station they started with. Survives a restart."""
    station = await asyncio.to_thread(runtime.stations.get, body.station_id)
    await runtime.inspector.activate(station)
    await asyncio.to_thread(runtime.stations.set_active_id, station.id)
    return _active_document(runtime)


@router.get("/{station_id}", dependencies=[ReadAccess], responses={404: {}})
async def get_station(station_id: str, runtime: RuntimeDep) -> StationDocument:
    station = await asyncio.to_thread(runtime.stations.get, station_id)
    source = await asyncio.to_thread(runtime.stations.raw, station_id)
    active = runtime.inspector.station
    return StationDocument(
        id=station.id,
        revision=station.revision,
        active=active is not None and active.id == station.id,
        station=station.public(),
        source=redact_source(source),
    )


@router.put(
    "/{station_id}",
    dependencies=[WriteAccess],
    openapi_extra={
        "requestBody": {
            "content": {
                "application/yaml": {"schema": {"type": "string"}},
                "application/json": {"schema": {}},
            },
            "required": True,
        }
    },
    responses={413: {}, 422: {"description": "invalid_station, with each error's location."}},
)
async def put_station(
    station_id: str, request: Request, response: Response, runtime: RuntimeDep
) -> StationSummary:
    """Install or replace a station file (YAML or JSON body). Replacing the active one re-activates it."""
    body = await request.body()
    if len(body) > MAX_STATION_BYTES:
        raise StationError(f"the station file is larger than {MAX_STATION_BYTES // 1024} KiB")
    existed = await asyncio.to_thread(runtime.stations.exists, station_id)
    station = await asyncio.to_thread(runtime.stations.check, station_id, body)
    active = runtime.inspector.station
    if active is not None and active.id == station.id:
        # Start the new revision first: if its cameras cannot open, the running one and its file stay.
        await runtime.inspector.activate(station)
    await asyncio.to_thread(runtime.stations.install, station_id, body)
    response.status_code = 200 if existed else 201
    return StationSummary(
        id=station.id,
        name=station.name,
        revision=station.revision,
        active=active is not None and active.id == station.id,
        valid=True,
    )


@router.delete("/{station_id}", status_code=204, dependencies=[WriteAccess], responses={404: {}, 409: {}})
async def delete_station(station_id: str, runtime: RuntimeDep) -> Response:
    active = runtime.inspector.station
    if active is not None and active.id == station_id:
        raise StationConflictError(f"station {station_id!r} is active: activate another one first")
    await asyncio.to_thread(runtime.stations.remove, station_id)
    return Response(status_code=204)
