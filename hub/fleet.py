"""Fleet reads: each device's status and today's figures, KPIs per line and station per day, and a device's
hourly trends (SQLAlchemy Core, the same SQL on SQLite and PostgreSQL; results and images: hub.fleet_results).

Figures count the machine's decisions, as the device's own KPIs page does (yield = OK among decided parts), so
the hub and the line's screen never disagree; operator overrides are counted beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import ColumnElement, Connection, case, func, select

from edge_orchestrator.telemetry import Heartbeat, ModelRef
from hub.db import from_db_time, to_db_time
from hub.schema import devices, heartbeats, results

Status = Literal["online", "stale", "offline", "never_seen"]
MAX_DAYS = 31
MAX_HOURS = 168


@dataclass(frozen=True)
class Thresholds:
    """When silence makes a device stale, then offline (from HubSettings)."""

    stale_after_beats: float
    offline_after_s: float


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Figures(_Out):
    """Decided parts in a window, by the machine's decision."""

    total: int = Field(description="Parts decided in the window.")
    ok: int
    ko: int
    no_decision: int
    overridden: int = Field(description="Parts whose operator verdict differs from the machine's decision.")
    yield_ratio: float | None = Field(description="OK / decided; None with nothing decided.")
    reject_rate: float | None = Field(description="KO / decided; None with nothing decided.")


def figures(ok: int = 0, ko: int = 0, no_decision: int = 0, overridden: int = 0) -> Figures:
    total = ok + ko + no_decision
    return Figures(
        total=total,
        ok=ok,
        ko=ko,
        no_decision=no_decision,
        overridden=overridden,
        yield_ratio=ok / total if total else None,
        reject_rate=ko / total if total else None,
    )


def _add(a: Figures, b: Figures) -> Figures:
    return figures(a.ok + b.ok, a.ko + b.ko, a.no_decision + b.no_decision, a.overridden + b.overridden)


# --- time ------------------------------------------------------------------------------------------


def utc_midnight(now: datetime) -> datetime:
    """Start of "today": the fleet spans time zones, so its day is the UTC day (and the pages say so)."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def device_status(
    last_heartbeat_at: datetime | None, interval_s: float | None, now: datetime, limits: Thresholds
) -> Status:
    """online while fewer than `stale_after_beats` intervals passed silently, stale until `offline_after_s`,
    then offline (times aware). A device whose interval is longer than the offline limit stays online while on time: it is
    not late until it misses its beats."""
    if last_heartbeat_at is None:
        return "never_seen"
    silent = (now - last_heartbeat_at).total_seconds()
    if interval_s is not None and silent < interval_s * limits.stale_after_beats:
        return "online"
    return "offline" if silent >= limits.offline_after_s else "stale"


def _bucket(column: Any, edges: Sequence[datetime]) -> ColumnElement[int]:
    """Index i of the window [edges[i], edges[i+1]) a time falls in: a CASE over boundaries computed here,
    so no dialect's date functions are needed (rows outside the edges are filtered by the caller)."""
    whens = [(column >= to_db_time(edge), i) for i, edge in reversed(list(enumerate(edges[:-1])))]
    return case(*whens, else_=-1)


def _counts(decision: Any, overridden: Any) -> list[ColumnElement[Any]]:
    """OK, KO, NO_DECISION and overridden counts of a grouped query (portable SUM(CASE ...))."""
    return [
        func.coalesce(func.sum(case((decision == d, 1), else_=0)), 0).label(d.lower())
        for d in ("OK", "KO", "NO_DECISION")
    ] + [func.coalesce(func.sum(case((overridden, 1), else_=0)), 0).label("overridden")]


# --- the fleet table -------------------------------------------------------------------------------


class DeviceRow(_Out):
    device_id: str
    site: str | None
    line: str | None
    description: str | None
    status: Status = Field(
        description="online, stale, offline, or never_seen (registered, never heard from)."
    )
    revoked: bool = Field(description="Its token was revoked: it can no longer send.")
    registered_at: datetime
    last_heartbeat_at: datetime | None = Field(
        description="When the hub received the latest heartbeat (UTC)."
    )
    silent_s: float | None = Field(description="Seconds since then.")
    interval_s: float | None
    version: str | None
    station_id: str | None
    station_revision: str | None
    ready: bool | None
    problems: list[str] = Field(description="Why the device is not ready, as it reported.")
    models: list[ModelRef]
    fs_free_bytes: int | None
    fs_total_bytes: int | None
    outbox_pending: int | None = Field(description="Messages waiting in the device's outboxes.")
    today: Figures = Field(description="Parts decided since UTC midnight (from the results received).")


class Fleet(_Out):
    now: datetime
    today_since: datetime = Field(description="UTC midnight: the start of today's figures.")
    devices: list[DeviceRow]
    statuses: dict[str, int] = Field(description="Devices per status.")
    today: Figures = Field(description="The listed devices' figures added up.")
    sites: list[str] = Field(description="Every site and line of the fleet (for the filters).")
    lines: list[str]


def _heartbeat(raw: Any) -> Heartbeat | None:
    if raw is None:
        return None
    try:
        return Heartbeat.model_validate(raw)
    except ValidationError:
        return None  # written by another version of the wire contract: show what the columns hold


def fleet(
    conn: Connection,
    now: datetime,
    limits: Thresholds,
    *,
    site: str | None = None,
    line: str | None = None,
    device_id: str | None = None,
) -> Fleet:
    """Every device (or those of a site, a line, or one device) with today's figures: one query, the day's
    results grouped by device in the database."""
    midnight = utc_midnight(now)
    today = (
        select(results.c.device_id, *_counts(results.c.decision, results.c.overridden))
        .where(results.c.decided_at >= to_db_time(midnight))
        .group_by(results.c.device_id)
        .subquery()
    )
    query = (
        select(devices, today.c.ok, today.c.ko, today.c.no_decision, today.c.overridden)
        .select_from(devices.outerjoin(today, today.c.device_id == devices.c.device_id))
        .order_by(devices.c.site, devices.c.line, devices.c.device_id)
    )
    if site:
        query = query.where(devices.c.site == site)
    if line:
        query = query.where(devices.c.line == line)
    if device_id is not None:
        query = query.where(devices.c.device_id == device_id)
    rows = [_device_row(row._mapping, now, limits) for row in conn.execute(query)]
    places = conn.execute(select(devices.c.site, devices.c.line).distinct()).all()
    statuses = dict.fromkeys(("online", "stale", "offline", "never_seen"), 0)
    total = figures()
    for row in rows:
        statuses[row.status] += 1
        total = _add(total, row.today)
    return Fleet(
        now=now,
        today_since=midnight,
        devices=rows,
        statuses=statuses,
        today=total,
        sites=sorted({s for s, _ in places if s}),
        lines=sorted({ln for _, ln in places if ln}),
    )


def _device_row(row: Any, now: datetime, limits: Thresholds) -> DeviceRow:
    beat = _heartbeat(row["heartbeat"])
    last = from_db_time(row["last_heartbeat_at"])
    return DeviceRow(
        device_id=row["device_id"],
        site=row["site"],
        line=row["line"],
        description=row["description"],
        status=device_status(last, row["interval_s"], now, limits),
        revoked=row["revoked_at"] is not None,
        registered_at=from_db_time(row["registered_at"]),
        last_heartbeat_at=last,
        silent_s=(now - last).total_seconds() if last else None,
        interval_s=row["interval_s"],
        version=row["version"],
        station_id=row["station_id"],
        station_revision=beat.station_revision if beat else None,
        ready=row["ready"],
        problems=beat.health.problems if beat else [],
        models=beat.models if beat else [],
        fs_free_bytes=beat.disk.fs_free_bytes if beat else None,
        fs_total_bytes=beat.disk.fs_total_bytes if beat else None,
        outbox_pending=sum(o.pending for o in beat.outbox) if beat else None,
        today=figures(row["ok"] or 0, row["ko"] or 0, row["no_decision"] or 0, row["overridden"] or 0),
    )


# --- KPIs per line and station ---------------------------------------------------------------------


class KpiGroup(_Out):
    key: str | None = Field(description="The line or station id (None: devices registered without a line).")
    site: str | None = Field(default=None, description="The line's site (lines only).")
    today: Figures
    window: Figures = Field(description="All the days added up.")
    days: list[Figures] = Field(description="One per day, oldest first (the last is today).")


class Kpis(_Out):
    now: datetime
    days: list[str] = Field(description="The UTC days, oldest first (YYYY-MM-DD).")
    since: datetime
    total: KpiGroup = Field(description="The whole fleet.")
    lines: list[KpiGroup]
    stations: list[KpiGroup]


def day_edges(now: datetime, days: int) -> list[datetime]:
    """UTC midnights from `days - 1` days ago to tomorrow: `days` windows, the last one today."""
    midnight = utc_midnight(now)
    return [midnight - timedelta(days=days - 1 - i) for i in range(days + 1)]


def kpis(conn: Connection, now: datetime, days: int = 7) -> Kpis:
    """Parts per line and per station per UTC day: grouped in the database, added up here (a few rows)."""
    days = max(1, min(days, MAX_DAYS))
    edges = day_edges(now, days)
    inner = (
        select(
            results.c.line,
            results.c.station_id,
            results.c.decision,
            results.c.overridden,
            _bucket(results.c.decided_at, edges).label("day"),
        )
        .where(results.c.decided_at >= to_db_time(edges[0]), results.c.decided_at < to_db_time(edges[-1]))
        .subquery()
    )
    # Grouped on the subquery's column: PostgreSQL cannot match a GROUP BY CASE to the SELECT's CASE when
    # their boundaries are separate bind parameters.
    grouped = select(
        inner.c.line, inner.c.station_id, inner.c.day, *_counts(inner.c.decision, inner.c.overridden)
    ).group_by(inner.c.line, inner.c.station_id, inner.c.day)
    per_line: dict[str | None, list[Figures]] = {}
    per_station: dict[str | None, list[Figures]] = {}
    everything = [figures() for _ in range(days)]
    for row in conn.execute(grouped):
        found = figures(row.ok, row.ko, row.no_decision, row.overridden)
        for table, key in ((per_line, row.line), (per_station, row.station_id)):
            series = table.setdefault(key, [figures() for _ in range(days)])
            series[row.day] = _add(series[row.day], found)
        everything[row.day] = _add(everything[row.day], found)
    sites: dict[str | None, str | None] = {
        line: site for line, site in conn.execute(select(devices.c.line, devices.c.site).distinct())
    }

    def group(key: str | None, series: list[Figures], site: str | None = None) -> KpiGroup:
        window = figures()
        for day in series:
            window = _add(window, day)
        return KpiGroup(key=key, site=site, today=series[-1], window=window, days=series)

    return Kpis(
        now=now,
        days=[edge.strftime("%Y-%m-%d") for edge in edges[:-1]],
        since=edges[0],
        total=group("fleet", everything),
        lines=[group(k, v, sites.get(k)) for k, v in sorted(per_line.items(), key=lambda kv: kv[0] or "")],
        stations=[group(k, v) for k, v in sorted(per_station.items(), key=lambda kv: kv[0] or "")],
    )


# --- one device's trends ---------------------------------------------------------------------------


class HourTrend(_Out):
    start: datetime
    parts: Figures = Field(description="Results received for parts decided in this hour.")
    beats: int = Field(description="Heartbeats received in this hour.")
    ready_share: float | None = Field(description="Share of those heartbeats that said ready.")
    fs_free_bytes_min: int | None = Field(description="The lowest free disk space reported in the hour.")
    outbox_pending_max: int | None


class Trends(_Out):
    device_id: str
    now: datetime
    hours: list[HourTrend] = Field(description="One per hour, oldest first (the last is the current hour).")


def hour_edges(now: datetime, hours: int) -> list[datetime]:
    """Whole UTC hours: `hours` windows, the last one the current hour."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [current - timedelta(hours=hours - 1 - i) for i in range(hours + 1)]


def trends(conn: Connection, device_id: str, now: datetime, hours: int = 24) -> Trends:
    """Parts per decision per hour (results) and readiness, disk and outbox per hour (heartbeats)."""
    hours = max(1, min(hours, MAX_HOURS))
    edges = hour_edges(now, hours)
    since, until = to_db_time(edges[0]), to_db_time(edges[-1])
    parts_inner = (
        select(results.c.decision, results.c.overridden, _bucket(results.c.decided_at, edges).label("hour"))
        .where(results.c.device_id == device_id, results.c.decided_at >= since, results.c.decided_at < until)
        .subquery()
    )
    parts = {
        row.hour: figures(row.ok, row.ko, row.no_decision, row.overridden)
        for row in conn.execute(
            select(parts_inner.c.hour, *_counts(parts_inner.c.decision, parts_inner.c.overridden)).group_by(
                parts_inner.c.hour
            )
        )
    }
    beats_inner = (
        select(
            heartbeats.c.ready,
            heartbeats.c.fs_free_bytes,
            heartbeats.c.outbox_pending,
            _bucket(heartbeats.c.received_at, edges).label("hour"),
        )
        .where(
            heartbeats.c.device_id == device_id,
            heartbeats.c.received_at >= since,
            heartbeats.c.received_at < until,
        )
        .subquery()
    )
    beats = {
        row.hour: row
        for row in conn.execute(
            select(
                beats_inner.c.hour,
                func.count().label("beats"),
                func.sum(case((beats_inner.c.ready, 1), else_=0)).label("ready"),
                func.min(beats_inner.c.fs_free_bytes).label("fs_free"),
                func.max(beats_inner.c.outbox_pending).label("outbox"),
            ).group_by(beats_inner.c.hour)
        )
    }
    trend = []
    for i, start in enumerate(edges[:-1]):
        beat = beats.get(i)
        trend.append(
            HourTrend(
                start=start,
                parts=parts.get(i, figures()),
                beats=beat.beats if beat else 0,
                ready_share=beat.ready / beat.beats if beat and beat.beats else None,
                fs_free_bytes_min=beat.fs_free if beat else None,
                outbox_pending_max=beat.outbox if beat else None,
            )
        )
    return Trends(device_id=device_id, now=now, hours=trend)


# --- devices ---------------------------------------------------------------------------------------


def device_exists(conn: Connection, device_id: str) -> bool:
    query = select(devices.c.device_id).where(devices.c.device_id == device_id)
    return conn.execute(query).first() is not None
