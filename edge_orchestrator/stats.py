"""Statistics over a window of inspections: counts, yield, throughput, latency percentiles, rejects by label."""

from __future__ import annotations

import math
import sqlite3
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from edge_orchestrator import retention
from edge_orchestrator.domain import Decision


class LatencyPercentiles(BaseModel):
    model_config = ConfigDict(frozen=True)

    p50: float | None
    p90: float | None
    p99: float | None


class Stats(BaseModel):
    """Counts over items accepted in [since, until); decisions are the machine's, verdicts counted apart."""

    model_config = ConfigDict(frozen=True)

    since: datetime
    until: datetime
    total: int = Field(description="Items accepted in the window, decided or not.")
    counts: dict[Decision, int] = Field(description="Items per decision (every decision present).")
    yield_ratio: float | None = Field(
        description="OK / decided (OK + KO + NO_DECISION); None with none decided."
    )
    throughput_per_min: float = Field(description="Items accepted per minute over the whole window.")
    latency_ms: LatencyPercentiles = Field(description="Accepted to decided, for items that ran to the end.")
    overridden: int = Field(description="Items whose operator verdict differs from the machine's decision.")
    interrupted: int = Field(description="Items the device stopped on (decision NO_DECISION).")
    ko_by_label: dict[str, int] = Field(description="KO items per label predicted by their KO cameras.")
    per_station: dict[str, dict[Decision, int]] = Field(description="Decided items per station and decision.")


def compute_stats(conn: sqlite3.Connection, since: datetime, until: datetime) -> Stats:
    window = (retention.timestamp(since), retention.timestamp(until))
    counts = dict.fromkeys(Decision, 0)
    per_station: dict[str, dict[Decision, int]] = {}
    total = overridden = interrupted = 0
    # INDEXED BY: on its own the planner prefers items_station plus a row lookup per item, several
    # times slower than this covering index over a day at one part per second.
    for station, n, ok, ko, nd, n_overridden, n_interrupted in conn.execute(
        "SELECT station_id, COUNT(*), COUNT(*) FILTER (WHERE decision = 'OK'),"
        " COUNT(*) FILTER (WHERE decision = 'KO'), COUNT(*) FILTER (WHERE decision = 'NO_DECISION'),"
        " COUNT(*) FILTER (WHERE overridden = 1), COUNT(*) FILTER (WHERE state = 'interrupted')"
        " FROM items INDEXED BY items_accepted WHERE accepted_at >= ? AND accepted_at < ? GROUP BY station_id",
        window,
    ):
        total, overridden, interrupted = total + n, overridden + n_overridden, interrupted + n_interrupted
        per_station[station] = {Decision.OK: ok, Decision.KO: ko, Decision.NO_DECISION: nd}
        for decision, count in per_station[station].items():
            counts[decision] += count
    latencies = sorted(
        value
        for (value,) in conn.execute(
            "SELECT latency_ms FROM items INDEXED BY items_accepted WHERE accepted_at >= ? AND accepted_at < ?"
            " AND state = 'done' AND latency_ms IS NOT NULL",
            window,
        )
    )
    ko_by_label = dict(
        conn.execute(
            "SELECT label.value, COUNT(*) FROM items, json_each(items.ko_labels) AS label"
            " WHERE items.decision = 'KO' AND items.accepted_at >= ? AND items.accepted_at < ?"
            " GROUP BY label.value ORDER BY 2 DESC, 1",
            window,
        ).fetchall()
    )
    decided = sum(counts.values())
    minutes = (until - since).total_seconds() / 60
    return Stats(
        since=since,
        until=until,
        total=total,
        counts=counts,
        yield_ratio=counts[Decision.OK] / decided if decided else None,
        throughput_per_min=total / minutes if minutes > 0 else 0.0,
        latency_ms=LatencyPercentiles(
            p50=_percentile(latencies, 0.50),
            p90=_percentile(latencies, 0.90),
            p99=_percentile(latencies, 0.99),
        ),
        overridden=overridden,
        interrupted=interrupted,
        ko_by_label=ko_by_label,
        per_station=per_station,
    )


def _percentile(ordered: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
