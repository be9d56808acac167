"""The operators' pages: live, KPIs, history, one item with its verdict, and the system overview."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from edge_interface import charts, kpis
from edge_interface.charts import Bar
from edge_interface.client import ActiveStation, SystemInfo
from edge_interface.deps import RuntimeDep, SameOrigin, with_health
from edge_interface.errors import (
    Failure,
    OrchestratorDown,
    OrchestratorError,
    action_sentence,
    page_sentences,
    unavailable,
)
from edge_interface.health import OK, Health
from edge_interface.live import is_item_id
from edge_orchestrator.domain import Decision, Inspection
from edge_orchestrator.storage import InspectionPage

log = logging.getLogger(__name__)
router = APIRouter()
OPERATOR_COOKIE = "operator"


# --- live ------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def live_page(runtime: RuntimeDep) -> HTMLResponse:
    size = runtime.settings.strip_size

    async def load() -> tuple[ActiveStation, InspectionPage]:
        # A few more than the strip: items still being inspected are not shown in it.
        return await asyncio.gather(
            runtime.client.active_station(), runtime.client.inspections({"limit": str(size + 4)})
        )

    health, data, failure = await with_health(runtime, load())
    active, page = (
        data if data else (ActiveStation(station_id=None), InspectionPage(items=[], next_cursor=None))
    )
    decided = [item for item in page.items if item.decision is not None][:size]
    latest = decided[0] if decided else None
    cameras = (
        [c.camera_id for c in latest.cameras] if latest and latest.station_id == active.station_id else []
    )
    cameras += [c for c in active.camera_ids if c not in cameras]
    return runtime.renderer.page(
        "live.html",
        {"latest": latest, "strip": decided, "cameras": cameras, "station": active, "strip_size": size},
        health=health,
        nav="live",
        title="Live",
        errors=page_sentences(failure),
        unavailable=unavailable(failure),
    )


# --- KPIs ------------------------------------------------------------------------------------


@router.get("/kpis", response_class=HTMLResponse)
async def kpis_page(runtime: RuntimeDep, window: str = "shift") -> HTMLResponse:
    chosen = kpis.WINDOWS.get(window, kpis.WINDOWS["shift"])
    # The page asks for one window per chart bar (17 calls for a shift): first ask the shared health check
    # (at most one request a second, however many pages) whether the orchestrator answers at all.
    health: Health = await runtime.health.current()
    data: kpis.Kpis | None = None
    failure: Failure | None = None
    if health.orchestrator != OK:
        failure = OrchestratorDown(health.orchestrator)
        log.warning(
            "KPIs not loaded: the orchestrator %s is not answering (%d statistics calls skipped)",
            runtime.client.base_url,
            kpis.calls(chosen),
        )
    else:
        health, data, failure = await with_health(runtime, kpis.load(runtime.client, chosen))
        if isinstance(failure, OrchestratorDown):
            # The calls are quiet (one warning per call would be one per chart bar): say it once.
            log.warning(
                "KPIs not loaded: the orchestrator %s stopped answering (%s)",
                runtime.client.base_url,
                failure.reason or "no answer",
            )
    return runtime.renderer.page(
        "kpis.html",
        {"kpis": data, "window": chosen, "windows": kpis.WINDOWS.values()},
        health=health,
        nav="kpis",
        title=f"KPIs · {chosen.label}",
        errors=page_sentences(failure),
        status=_status(failure),
        unavailable=unavailable(failure),
    )


# --- history ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryFilters:
    decision: str = ""
    part_id: str = ""
    since: str = ""
    until: str = ""
    overridden: str = ""


def _local_time(value: str, what: str, problems: list[str]) -> str | None:
    """A datetime-local value, read in the device's time zone (the one the pages show times in)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).astimezone().isoformat()
    except ValueError:
        problems.append(f"The {what} time is not a valid date and time: use the date picker.")
        return None


def history_query(
    filters: HistoryFilters, cursor: str | None, limit: int
) -> tuple[dict[str, str], list[str]]:
    """The orchestrator's query for the form's filters; a filter that cannot be read is left out, with why."""
    problems: list[str] = []
    query: dict[str, str] = {"limit": str(limit)}
    if filters.decision in Decision.__members__:
        query["decision"] = filters.decision
    elif filters.decision:
        problems.append("Choose a decision from the list.")
    if filters.part_id:
        query["part_id"] = filters.part_id[:128]
    for key, what in (("since", "start"), ("until", "end")):
        parsed = _local_time(getattr(filters, key), what, problems)
        if parsed:
            query[key] = parsed
    if filters.overridden in ("true", "false"):
        query["overridden"] = filters.overridden
    if cursor:
        query["cursor"] = cursor[:256]
    return query, problems


@router.get("/history", response_class=HTMLResponse)
async def history_page(
    runtime: RuntimeDep,
    decision: str = "",
    part_id: str = "",
    since: str = "",
    until: str = "",
    overridden: str = "",
    cursor: Annotated[str | None, Query(max_length=256)] = None,
) -> HTMLResponse:
    filters = HistoryFilters(decision, part_id.strip(), since, until, overridden)
    query, problems = history_query(filters, cursor, runtime.settings.history_page_size)
    health, page, failure = await with_health(runtime, runtime.client.inspections(query))
    next_link = None
    if page is not None and page.next_cursor:
        kept = {k: v for k, v in vars(filters).items() if v}
        next_link = "/history?" + urlencode({**kept, "cursor": page.next_cursor})
    return runtime.renderer.page(
        "history.html",
        {
            "items": page.items if page else [],
            "filters": filters,
            "next_link": next_link,
            "first_link": "/history?" + urlencode({k: v for k, v in vars(filters).items() if v})
            if cursor
            else None,
            "loaded": page is not None,
        },
        health=health,
        nav="history",
        title="History",
        errors=problems + page_sentences(failure),
        status=400 if problems else _status(failure),
        unavailable=unavailable(failure),
    )


# --- one item and its verdict ------------------------------------------------------------------


def _timings_chart(item: Inspection) -> Markup:
    stages = [(k, v) for k, v in item.timings_ms.items() if k != "total"]
    bars = [Bar(stage, value, charts.ACCENT) for stage, value in stages]
    if "total" in item.timings_ms:
        bars.append(Bar("total", item.timings_ms["total"], charts.INK))
    return charts.horizontal_bars(bars, title="Time per stage", unit="ms", empty="No timings recorded")


def _scores_chart(scores: dict[str, float]) -> Markup:
    bars = [
        Bar(label, score * 100, charts.ACCENT, f"{score * 100:.1f} %")
        for label, score in sorted(scores.items(), key=lambda kv: -kv[1])
    ]
    return charts.horizontal_bars(bars, title="Scores per label", max_value=100, width=360)


async def _item_response(
    runtime: RuntimeDep,
    item_id: str,
    *,
    form_errors: list[str] | None = None,
    form: dict[str, str] | None = None,
    operator: str = "",
    status: int = 200,
) -> HTMLResponse:
    item: Inspection | None = None
    failure: Failure | None = None
    if is_item_id(item_id):
        health, item, failure = await with_health(runtime, runtime.client.inspection(item_id))
    else:
        # Never sent on: the orchestrator would only say the same, and the id ends up in its URL.
        health, failure = await runtime.health.current(), OrchestratorError(404, "item_not_found")
    return runtime.renderer.page(
        "item.html",
        {
            "item": item,
            "timings": _timings_chart(item) if item else None,
            "scores": _scores_chart,
            "form_errors": form_errors or [],
            "form": form or {"decision": "", "reason": "", "operator": operator},
        },
        health=health,
        nav="history",
        title=f"Item {item.part_id or item.item_id[:8]}" if item else "Item",
        errors=page_sentences(failure),
        status=_status(failure) if failure else status,
        unavailable=unavailable(failure),
    )


@router.get("/items/{item_id}", response_class=HTMLResponse)
async def item_page(item_id: str, request: Request, runtime: RuntimeDep) -> HTMLResponse:
    return await _item_response(runtime, item_id, operator=request.cookies.get(OPERATOR_COOKIE, "")[:100])


@router.post("/items/{item_id}/verdict", dependencies=[SameOrigin], response_model=None)
async def post_verdict(
    item_id: str,
    runtime: RuntimeDep,
    decision: Annotated[str, Form()] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
    operator: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """The operator's verdict: back to the item page, or the same page with the problem beside the form."""
    form = {"decision": decision, "reason": reason, "operator": operator}
    problems = []
    if decision not in ("OK", "KO"):
        problems.append("Choose OK or KO.")
    if len(reason.strip()) > 500:
        problems.append("The reason is too long: keep it under 500 characters.")
    if len(operator.strip()) > 100:
        problems.append("The operator name is too long: keep it under 100 characters.")
    if problems or not is_item_id(item_id):
        return await _item_response(runtime, item_id, form_errors=problems, form=form, status=400)
    try:
        await runtime.client.verdict(item_id, decision, reason.strip() or None, operator.strip() or None)
    except (OrchestratorError, OrchestratorDown) as exc:
        sentence = (
            action_sentence("The verdict was not saved", exc)
            if isinstance(exc, OrchestratorDown)
            else exc.sentence
        )
        return await _item_response(runtime, item_id, form_errors=[sentence], form=form, status=exc.status)
    response = RedirectResponse(f"/items/{item_id}", status_code=303)
    if operator.strip():
        # Remembered for the next verdict on this screen: one less thing to type at the line.
        response.set_cookie(
            OPERATOR_COOKIE, operator.strip(), max_age=12 * 3600, httponly=True, samesite="strict"
        )
    return response


# --- system ----------------------------------------------------------------------------------


@router.get("/system", response_class=HTMLResponse)
async def system_page(runtime: RuntimeDep) -> HTMLResponse:
    health, info, failure = await with_health(runtime, runtime.client.system())
    disk = _disk_chart(info) if info is not None else None
    return runtime.renderer.page(
        "system.html",
        {"info": info, "health": health, "disk_chart": disk, "interface_url": runtime.client.base_url},
        health=health,
        nav="system",
        title="System",
        errors=page_sentences(failure),
        status=_status(failure),
        unavailable=unavailable(failure),
    )


def _disk_chart(info: SystemInfo) -> Markup:
    """Disk and image quota as shares of their limits, so both bars read on one scale."""
    gib = 2**30
    used = info.disk.fs_total_bytes - info.disk.fs_free_bytes
    total = max(info.disk.fs_total_bytes, 1)
    bars = [Bar("Data disk", 100 * used / total, charts.ACCENT, f"{used / gib:.1f} of {total / gib:.1f} GiB")]
    quota = (info.storage_policy or {}).get("quota_mb")
    if isinstance(quota, int | float) and quota > 0:
        images = info.disk.image_bytes / 2**20
        share = 100 * images / quota
        color = charts.KO_COLOR if share > 90 else charts.ACCENT
        bars.append(Bar("Images", share, color, f"{images:,.1f} of {quota:,.0f} MiB"))
    return charts.horizontal_bars(bars, title="Disk use", max_value=100)


# --- shared ------------------------------------------------------------------------------------


def _status(failure: Failure | None) -> int:
    return failure.status if failure is not None else 200
