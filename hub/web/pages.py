"""The fleet dashboard's pages: the fleet table, KPIs per line and station, one device, roll-outs and a run, and
the login page. Server-rendered; hub.js then keeps them current from the JSON API (no full reload)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, HTMLResponse, Response
from markupsafe import Markup

from edge_interface import charts
from edge_interface.charts import KO_COLOR, ND_COLOR, OK_COLOR, Bar, Series
from hub import fleet, fleet_results
from hub.api.deps import RuntimeDep
from hub.fleet import Figures, KpiGroup, Kpis, Thresholds, Trends
from hub.web.rendering import RendererDep, ViewerDep, not_found, percent, to_login

LINE_COLORS = ("#1d4ed8", "#7c3aed", "#0f766e", "#c2410c", "#be185d", "#4d7c0f", "#0369a1", "#a16207")
router = APIRouter(include_in_schema=False)


def now() -> datetime:
    return datetime.now(UTC)


# --- static files ----------------------------------------------------------------------------------


@router.get("/static/{name}")
async def static_file(name: str, renderer: RendererDep) -> Response:
    path = renderer.static_files.get(name)
    if path is None:
        return Response("No such file.", status_code=404, media_type="text/plain")
    # The URL carries the files' version: a new release is never served from a stale cache.
    return FileResponse(path, headers={"Cache-Control": "public, max-age=31536000, immutable"})


# --- login -----------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_page(
    renderer: RendererDep,
    viewer: ViewerDep,
    next: Annotated[str, Query(max_length=2000)] = "/",
    error: Annotated[str, Query(max_length=100)] = "",
) -> HTMLResponse:
    return renderer.page(
        "login.html", {"next": next, "error": bool(error)}, viewer=viewer, nav="login", title="Log in"
    )


# --- the fleet -------------------------------------------------------------------------------------


@router.get("/", response_model=None)
async def fleet_page(
    runtime: RuntimeDep,
    renderer: RendererDep,
    viewer: ViewerDep,
    site: Annotated[str, Query(max_length=64)] = "",
    line: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    if not viewer.allowed:
        return to_login(viewer)
    limits, at = Thresholds(runtime.settings.stale_after_beats, runtime.settings.offline_after_s), now()
    found = await runtime.db.run(
        lambda conn: fleet.fleet(conn, at, limits, site=site or None, line=line or None)
    )
    filters = urlencode({key: value for key, value in (("site", site), ("line", line)) if value})
    api = f"/api/v1/fleet?{filters}" if filters else "/api/v1/fleet"  # what hub.js polls: the same filters
    return renderer.page(
        "fleet.html",
        {"fleet": found, "site": site, "line": line, "api": api},
        viewer=viewer,
        nav="fleet",
        title="Fleet",
    )


# --- KPIs ------------------------------------------------------------------------------------------


def _yield_bars(groups: list[KpiGroup], name: str) -> list[Bar]:
    return [
        Bar(name_of(g, name), 100 * (g.today.yield_ratio or 0), OK_COLOR, percent(g.today.yield_ratio))
        for g in groups
    ]


def name_of(group: KpiGroup, what: str) -> str:
    return group.key or f"no {what}"


@dataclass(frozen=True)
class KpiCharts:
    kind: str  # "line" or "station"
    volume_today: Markup
    yield_today: Markup
    reject_today: Markup
    volume_days: Markup
    yield_days: Markup
    reject_days: Markup


def kpi_charts(kpis: Kpis, groups: list[KpiGroup], kind: str) -> KpiCharts:
    days = [d[5:] for d in kpis.days]  # MM-DD: the year is in the page's heading
    colors = {g.key: LINE_COLORS[i % len(LINE_COLORS)] for i, g in enumerate(groups)}
    # Stations get three day charts in a row, lines two: each drawn at about its card's width, so its text
    # stays the size of the page's.
    width, height = (440, 230) if kind == "station" else (640, 240)

    def per_day(pick: str) -> list[Series]:
        return [
            Series(
                name_of(g, kind),
                [None if getattr(f, pick) is None else 100 * getattr(f, pick) for f in g.days],
                colors[g.key],
            )
            for g in groups
        ]

    return KpiCharts(
        kind=kind,
        volume_today=charts.horizontal_bars(
            [Bar(name_of(g, kind), g.today.total, colors[g.key]) for g in groups],
            title=f"Parts decided today per {kind}",
            testid=f"kpi-{kind}-volume-today",
            empty="Nothing decided today",
        ),
        yield_today=charts.horizontal_bars(
            _yield_bars(groups, kind),
            title=f"Yield today per {kind}",
            testid=f"kpi-{kind}-yield-today",
            max_value=100,
            empty="Nothing decided today",
        ),
        reject_today=charts.horizontal_bars(
            [
                Bar(
                    name_of(g, kind), 100 * (g.today.reject_rate or 0), KO_COLOR, percent(g.today.reject_rate)
                )
                for g in groups
            ],
            title=f"Reject rate today per {kind}",
            testid=f"kpi-{kind}-reject-today",
            max_value=100,
            empty="Nothing decided today",
        ),
        volume_days=charts.stacked_bars(
            days,
            [Series(name_of(g, kind), [f.total for f in g.days], colors[g.key]) for g in groups],
            title=f"Parts decided per day per {kind}",
            testid=f"kpi-{kind}-volume-days",
            integer=True,
            width=width,
            height=height,
        ),
        yield_days=charts.line_chart(
            days,
            per_day("yield_ratio"),
            title=f"Yield per day per {kind}",
            testid=f"kpi-{kind}-yield-days",
            unit="%",
            width=width,
            height=height,
        ),
        reject_days=charts.line_chart(
            days,
            per_day("reject_rate"),
            title=f"Reject rate per day per {kind}",
            testid=f"kpi-{kind}-reject-days",
            unit="%",
            width=width,
            height=height,
        ),
    )


def decision_donut(today: Figures) -> Markup:
    return charts.donut(
        [
            Bar("OK", today.ok, OK_COLOR),
            Bar("KO", today.ko, KO_COLOR),
            Bar("NO_DECISION", today.no_decision, ND_COLOR),
        ],
        title="Fleet yield today",
        center=percent(today.yield_ratio),
        testid="kpi-fleet-yield",
        draw_center=False,
    )


@router.get("/kpis", response_model=None)
async def kpis_page(
    runtime: RuntimeDep,
    renderer: RendererDep,
    viewer: ViewerDep,
    days: Annotated[str, Query(max_length=8)] = "7",
) -> Response:
    if not viewer.allowed:
        return to_login(viewer)
    # A page forgives a hand-edited address (the API answers 422): out of range is clamped, nonsense is 7.
    count = max(1, min(int(days), fleet.MAX_DAYS)) if days.isdigit() else 7
    at = now()
    found = await runtime.db.run(lambda conn: fleet.kpis(conn, at, count))
    return renderer.page(
        "kpis.html",
        {
            "kpis": found,
            "donut": decision_donut(found.total.today),
            "sections": [
                kpi_charts(found, found.lines, "line"),
                kpi_charts(found, found.stations, "station"),
            ],
        },
        viewer=viewer,
        nav="kpis",
        title="KPIs",
    )


# --- one device ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrendCharts:
    volume: Markup
    yield_: Markup
    ready: Markup
    disk: Markup


def trend_charts(trends: Trends) -> TrendCharts:
    hours = [h.start.strftime("%H:00") for h in trends.hours]
    parts = [h.parts for h in trends.hours]
    return TrendCharts(
        volume=charts.stacked_bars(
            hours,
            [
                Series("OK", [p.ok for p in parts], OK_COLOR),
                Series("KO", [p.ko for p in parts], KO_COLOR),
                Series("NO_DECISION", [p.no_decision for p in parts], ND_COLOR),
            ],
            title="Parts decided per hour (UTC)",
            testid="trend-volume",
            integer=True,
            height=220,
        ),
        yield_=charts.line_chart(
            hours,
            [
                Series(
                    "yield", [None if p.yield_ratio is None else 100 * p.yield_ratio for p in parts], OK_COLOR
                )
            ],
            title="Yield per hour (UTC)",
            testid="trend-yield",
            unit="%",
            height=220,
        ),
        ready=charts.line_chart(
            hours,
            [
                Series(
                    "ready",
                    [None if h.ready_share is None else 100 * h.ready_share for h in trends.hours],
                    charts.ACCENT,
                )
            ],
            title="Heartbeats saying ready, per hour (UTC)",
            testid="trend-ready",
            unit="%",
            step=True,
            height=220,
        ),
        disk=charts.line_chart(
            hours,
            [
                Series(
                    "free disk",
                    [
                        None if h.fs_free_bytes_min is None else h.fs_free_bytes_min / 2**30
                        for h in trends.hours
                    ],
                    "#7c3aed",
                )
            ],
            title="Lowest free disk space per hour (UTC)",
            testid="trend-disk",
            unit="GiB",
            height=220,
        ),
    )


@router.get("/devices/{device_id}", response_model=None)
async def device_page(
    device_id: str, runtime: RuntimeDep, renderer: RendererDep, viewer: ViewerDep
) -> Response:
    if not viewer.allowed:
        return to_login(viewer)
    limits, at = Thresholds(runtime.settings.stale_after_beats, runtime.settings.offline_after_s), now()

    def read(conn: Any) -> tuple[fleet.Fleet, list[fleet_results.ResultSummary], Trends]:
        return (
            fleet.fleet(conn, at, limits, device_id=device_id),
            fleet_results.device_results(conn, device_id, decision="KO", limit=12),
            fleet.trends(conn, device_id, at, 24),
        )

    found, kos, trends = await runtime.db.run(read)
    if not found.devices:
        return not_found(
            renderer, viewer, f"No device {device_id!r} is registered on this hub.", "/", "fleet"
        )
    return renderer.page(
        "device.html",
        {
            "device": found.devices[0],
            "kos": kos,
            "charts": trend_charts(trends),
            "device_path": quote(device_id, safe=""),
        },
        viewer=viewer,
        nav="fleet",
        title=f"Device {device_id}",
    )


# --- roll-outs (drawn by hub.js from the roll-out API) ------------------------------------------------


@router.get("/rollouts", response_model=None)
async def rollouts_page(renderer: RendererDep, viewer: ViewerDep) -> Response:
    if not viewer.allowed:
        return to_login(viewer)
    return renderer.page("rollouts.html", {}, viewer=viewer, nav="rollouts", title="Roll-outs")


@router.get("/rollouts/{rollout_id}", response_model=None)
async def rollout_page(rollout_id: str, renderer: RendererDep, viewer: ViewerDep) -> Response:
    if not viewer.allowed:
        return to_login(viewer)
    if not rollout_id.isdigit() or len(rollout_id) > 18:
        return not_found(renderer, viewer, f"There is no roll-out {rollout_id!r}.", "/rollouts", "rollouts")
    return renderer.page(
        "rollout.html",
        {"rollout_id": rollout_id},
        viewer=viewer,
        nav="rollouts",
        title=f"Roll-out {rollout_id}",
    )
