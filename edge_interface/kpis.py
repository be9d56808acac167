"""Shift KPIs: the window's statistics and its sub-windows, turned into the charts of the KPIs page."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, TypeVar

from markupsafe import Markup

from edge_interface import charts
from edge_interface.charts import ND_COLOR, OK_COLOR, Bar, Series
from edge_interface.client import OrchestratorClient
from edge_orchestrator.domain import Decision, utcnow
from edge_orchestrator.storage import Stats

T = TypeVar("T")
WindowName = Literal["shift", "hour", "day"]


@dataclass(frozen=True)
class Window:
    name: WindowName
    label: str
    span: timedelta
    buckets: int  # sub-windows of the throughput and latency charts
    bucket_label: str


WINDOWS: dict[str, Window] = {
    "shift": Window("shift", "Shift (last 8 h)", timedelta(hours=8), 16, "30 min"),
    "hour": Window("hour", "Last hour", timedelta(hours=1), 12, "5 min"),
    "day": Window("day", "Last 24 h", timedelta(hours=24), 24, "hour"),
}


@dataclass(frozen=True)
class Kpis:
    window: Window
    stats: Stats
    yield_text: str
    decided: int
    yield_chart: Markup
    counts: Markup
    reject_by_defect: Markup
    throughput: Markup
    latency: Markup


async def gather_all(*jobs: Awaitable[T]) -> list[T]:
    """Every job at once; the first failure cancels the rest and is raised as itself (not as a group)."""

    async def run(job: Awaitable[T]) -> T:
        return await job

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(run(job)) for job in jobs]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def _label(value: str) -> str:
    return value.replace("_", " ")


def build(window: Window, stats: Stats, buckets: list[tuple[datetime, Stats]]) -> Kpis:
    """The charts, from the whole window's stats and its consecutive sub-windows (start, stats), oldest first."""
    counts = stats.counts
    decided = sum(counts.values())
    yield_text = "—" if stats.yield_ratio is None else f"{stats.yield_ratio * 100:.1f} %"
    decision_bars = [
        Bar("OK", counts.get(Decision.OK, 0), OK_COLOR),
        Bar("KO", counts.get(Decision.KO, 0), charts.KO_COLOR),
        Bar("NO_DECISION", counts.get(Decision.NO_DECISION, 0), ND_COLOR),
    ]
    rejects = [
        Bar(_label(label), 100 * n / decided, charts.KO_COLOR, f"{100 * n / decided:.1f} % ({n})")
        for label, n in sorted(stats.ko_by_label.items(), key=lambda kv: (-kv[1], kv[0]))
        if decided
    ]
    times = [start.astimezone().strftime("%H:%M") for start, _ in buckets]
    parts = [b for _, b in buckets]
    per_decision = [
        Series(d.value, [b.counts.get(d, 0) for b in parts], charts.DECISION_COLORS[d.value])
        for d in Decision
    ]
    latency = [
        Series("p50", [b.latency_ms.p50 for b in parts], charts.ACCENT),
        Series("p90", [b.latency_ms.p90 for b in parts], "#7c3aed"),
        Series("p99", [b.latency_ms.p99 for b in parts], "#0f766e"),
    ]
    return Kpis(
        window=window,
        stats=stats,
        yield_text=yield_text,
        decided=decided,
        yield_chart=charts.donut(
            decision_bars, title="Yield (OK among decided parts)", center=yield_text, draw_center=False
        ),
        counts=charts.bar_chart(
            decision_bars,
            title="Parts per decision",
            testid="kpi-counts",
            width=400,
            height=200,
            integer=True,
        ),
        reject_by_defect=charts.horizontal_bars(
            rejects,
            title="Rejects by label (share of decided parts)",
            testid="kpi-reject-by-defect",
            width=400,
            empty="No rejects in this window",
        ),
        throughput=charts.stacked_bars(
            times,
            per_decision,
            title=f"Parts inspected per {window.bucket_label}",
            testid="kpi-throughput",
            height=210,
            integer=True,
        ),
        latency=charts.line_chart(
            times,
            latency,
            title=f"Trigger to decision latency per {window.bucket_label}",
            testid="kpi-latency",
            unit="ms",
            height=210,
        ),
    )


def _edges(window: Window, since: datetime, until: datetime) -> list[datetime]:
    """Sub-windows on round times (04:30, 05:00, ...) covering the window; the first and last are clipped
    to it, so they add up to the headline figures. Labels then read like a clock."""
    step = window.span / window.buckets
    start = _ceil(since, step)
    if start > since:
        start -= step
    edges = [start]
    while edges[-1] < until:
        edges.append(edges[-1] + step)
    return edges


def calls(window: Window) -> int:
    """How many statistics calls the page makes for this window (one for it, one per sub-window)."""
    until = utcnow()
    return len(_edges(window, until - window.span, until))


async def load(client: OrchestratorClient, window: Window, now: datetime | None = None) -> Kpis:
    """One call for the window and one per sub-window, all at once: the page costs one round trip.

    The calls are quiet: if the orchestrator stops answering, the page logs it once, not once per call."""
    until = now or utcnow()
    since = until - window.span
    edges = _edges(window, since, until)
    whole, *parts = await gather_all(
        client.stats(since, until, quiet=True),
        *(client.stats(max(a, since), min(b, until), quiet=True) for a, b in itertools.pairwise(edges)),
    )
    return build(window, whole, list(zip(edges, parts, strict=False)))


def _ceil(value: datetime, step: timedelta) -> datetime:
    """The first multiple of `step` (counted from the epoch, in the device's time zone) at or after value."""
    local = value.astimezone()
    # Wall-clock time since the local epoch: hour-long steps then fall on local hours, whatever the offset.
    remainder = (local - datetime(1970, 1, 1, tzinfo=local.tzinfo)) % step
    return value if not remainder else value + (step - remainder)
