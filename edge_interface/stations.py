"""The station page: installed stations, switching with a confirmation, the active configuration, uploads."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from edge_interface.client import ActiveStation, StationSummary
from edge_interface.deps import Runtime, RuntimeDep, SameOrigin, with_health
from edge_interface.errors import (
    Failure,
    FieldError,
    OrchestratorDown,
    OrchestratorError,
    action_sentence,
    page_sentences,
    unavailable,
)
from edge_interface.station_view import CardView, station_view

router = APIRouter()

STATION_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # the orchestrator's id pattern
MAX_SOURCE_BYTES = 256 * 1024  # the orchestrator's limit: refused here before the upload is sent on


async def _station_page(
    runtime: Runtime,
    *,
    upload: dict[str, str] | None = None,
    errors: list[FieldError] | None = None,
    error_sentence: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    client = runtime.client

    async def load() -> tuple[list[StationSummary], ActiveStation, dict[str, Any]]:
        stations, active, schema = await asyncio.gather(
            client.stations(), client.active_station(), client.station_schema()
        )
        return stations, active, schema

    health, data, failure = await with_health(runtime, load())
    config: CardView | None = None
    stations: list[StationSummary] = []
    active = ActiveStation(station_id=None)
    if data is not None:
        stations, active, schema = data
        if active.station is not None:
            config = station_view(active.station, schema)
    return runtime.renderer.page(
        "station.html",
        {
            "stations": stations,
            "active": active,
            "config": config,
            "upload": upload or {"station_id": "", "source": ""},
            "upload_failed": upload is not None,
            "field_errors": errors or [],
            "error_sentence": error_sentence,
            "notice": notice,
            "loaded": data is not None,
        },
        health=health,
        nav="station",
        title="Station",
        errors=page_sentences(failure),
        status=failure.status if failure else status,
        unavailable=unavailable(failure),
    )


@router.get("/station", response_class=HTMLResponse)
async def station_page(runtime: RuntimeDep, switched: str = "", installed: str = "") -> HTMLResponse:
    notice = None
    if STATION_ID.match(switched):
        notice = f"The line now runs station {switched}."
    elif STATION_ID.match(installed):
        notice = f"Station {installed} is installed."
    return await _station_page(runtime, notice=notice)


@router.post("/station/activate", dependencies=[SameOrigin], response_model=None)
async def activate(
    runtime: RuntimeDep,
    station_id: Annotated[str, Form(max_length=200)] = "",
    confirm: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Without confirm=yes, the confirmation page; with it, the switch (items in flight finish on the old one)."""
    if not STATION_ID.match(station_id):
        return await _station_page(runtime, error_sentence="Choose a station from the list.", status=400)
    if confirm != "yes":
        return await _confirm_page(runtime, station_id)
    try:
        await runtime.client.activate(station_id)
    except (OrchestratorError, OrchestratorDown) as exc:
        return await _failed(runtime, exc, f"Station {station_id} was not activated")
    finally:
        runtime.health.invalidate()  # the cameras (and whether any station runs) just changed
    return RedirectResponse(f"/station?switched={station_id}", status_code=303)


async def _confirm_page(runtime: Runtime, station_id: str) -> HTMLResponse:
    async def load() -> tuple[list[StationSummary], ActiveStation]:
        return await asyncio.gather(runtime.client.stations(), runtime.client.active_station())

    health, data, failure = await with_health(runtime, load())
    stations, active = data if data else ([], ActiveStation(station_id=None))
    target = next((s for s in stations if s.id == station_id), None)
    if data is not None and target is None:
        failure = OrchestratorError(404, "station_not_found")
    return runtime.renderer.page(
        "station_confirm.html",
        {"target": target, "station_id": station_id, "active": active},
        health=health,
        nav="station",
        title="Switch station?",
        errors=page_sentences(failure),
        status=failure.status if failure else 200,
        unavailable=unavailable(failure),
    )


async def _failed(runtime: Runtime, failure: Failure, what_failed: str, **page: Any) -> HTMLResponse:
    """The station page again, with what did not happen and why (not the banner's sentence once more)."""
    if isinstance(failure, OrchestratorError) and failure.code == "invalid_station":
        sentence = failure.sentence  # already says that nothing was installed, and points at the list
    else:
        sentence = action_sentence(what_failed, failure)
    return await _station_page(
        runtime, errors=failure.errors, error_sentence=sentence, status=failure.status, **page
    )


@router.post("/station/upload", dependencies=[SameOrigin], response_model=None)
async def upload(
    runtime: RuntimeDep,
    station_id: Annotated[str, Form(max_length=200)] = "",
    source: Annotated[str, Form(max_length=MAX_SOURCE_BYTES * 2)] = "",
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """Install (or replace) a station file; its validation errors come back beside the form, with where."""
    station_id = station_id.strip()
    content = source.encode()
    if file is not None and file.filename:
        content = await file.read(MAX_SOURCE_BYTES + 1)
        source = content.decode("utf-8", errors="replace")
    form = {"station_id": station_id, "source": source}
    problems = []
    if not STATION_ID.match(station_id):
        problems.append(
            FieldError(
                "station_id",
                "Use lowercase letters, digits, - and _ (at most 63), starting with a letter or digit.",
            )
        )
    if not content.strip():
        problems.append(FieldError("source", "Paste the station file (YAML) or choose a file."))
    elif len(content) > MAX_SOURCE_BYTES:
        problems.append(FieldError("source", f"The file is larger than {MAX_SOURCE_BYTES // 1024} KiB."))
    if problems:
        sentence = "The station was not installed: fix the errors listed below and try again."
        return await _station_page(runtime, upload=form, errors=problems, error_sentence=sentence, status=422)
    try:
        await runtime.client.install_station(station_id, content)
    except (OrchestratorError, OrchestratorDown) as exc:
        return await _failed(runtime, exc, f"Station {station_id} was not installed", upload=form)
    finally:
        runtime.health.invalidate()  # replacing the active station re-opens its cameras
    return RedirectResponse(f"/station?installed={station_id}", status_code=303)
