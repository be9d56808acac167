"""The fleet's queries on a real SQLite database built from the hub's schema: statuses, today's figures,
KPIs per line, station and day, hourly trends and recent results."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, insert

from edge_orchestrator.telemetry import Heartbeat
from hub import fleet, fleet_results
from hub.fleet import Thresholds
from hub.schema import devices, heartbeats, images, metadata, results

NOW = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
LIMITS = Thresholds(stale_after_beats=2.5, offline_after_s=600)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """The schema on SQLite and on a real PostgreSQL: the queries must read the same on both."""
    engine = create_engine(database_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def heartbeat(device_id: str, *, version: str = "1.4.0", station: str = "duck-line") -> dict[str, Any]:
    """A heartbeat as the device sends it (parsed by the wire contract, so the test data stays valid)."""
    beat = Heartbeat.model_validate(
        {
            "device_id": device_id,
            "sent_at": NOW,
            "interval_s": 10,
            "version": version,
            "station_id": station,
            "station_revision": "abc123",
            "models": [{"name": "duck-detector", "version": "3", "cameras": ["top"]}],
            "health": {"ready": False, "problems": ["Camera side does not answer."]},
            "disk": {"fs_free_bytes": 5 * 2**30, "fs_total_bytes": 30 * 2**30, "image_bytes": 2**20},
            "since": NOW - timedelta(seconds=10),
            "counts": {"ok": 3, "ko": 1},
            "outbox": [{"channel": "hub", "pending": 7, "parked": 0}],
        }
    )
    return beat.model_dump(mode="json")


def add_device(
    conn: Connection,
    device_id: str,
    *,
    site: str = "lyon",
    line: str = "lyon-1",
    heard: datetime | None = None,
    interval_s: float = 10,
    version: str = "1.4.0",
) -> None:
    conn.execute(
        insert(devices).values(
            device_id=device_id,
            site=site,
            line=line,
            token_hash=uuid.uuid4().hex,
            registered_at=naive(NOW - timedelta(days=30)),
            last_heartbeat_at=naive(heard) if heard else None,
            interval_s=interval_s if heard else None,
            version=version if heard else None,
            station_id="duck-line" if heard else None,
            ready=False if heard else None,
            heartbeat=heartbeat(device_id, version=version) if heard else None,
        )
    )


def item(
    decision: str, decided_at: datetime, station: str = "duck-line", *, boxes: int = 1
) -> dict[str, Any]:
    detections = [
        {"label": "hole", "score": 0.9, "box": [0.5 * i, 0.25, 0.5 * i + 0.25, 0.5]} for i in range(boxes)
    ]
    return {
        "item_id": str(uuid.uuid4()),
        "station_id": station,
        "station_revision": "abc123",
        "state": "done",
        "source": "api",
        "accepted_at": decided_at.isoformat(),
        "decided_at": decided_at.isoformat(),
        "decision": decision,
        "cameras": [
            {
                "camera_id": "top",
                "decision": decision,
                "prediction": {
                    "model_name": "duck-detector",
                    "model_version": "3",
                    "task": "detection",
                    "detections": detections if decision == "KO" else [],
                },
                "image": {"width": 640, "height": 480, "bytes": 1000},
            }
        ],
    }


def add_result(
    conn: Connection,
    device_id: str,
    decision: str,
    decided_at: datetime,
    *,
    line: str = "lyon-1",
    station: str = "duck-line",
    verdict: str | None = None,
    image: bool = False,
    boxes: int = 1,
) -> str:
    body = item(decision, decided_at, station, boxes=boxes)
    item_id: str = body["item_id"]
    conn.execute(
        insert(results).values(
            item_id=item_id,
            device_id=device_id,
            device_seq=0,
            line=line,
            station_id=station,
            decision=decision,
            verdict=verdict,
            overridden=verdict is not None and verdict != decision,
            final=verdict or decision,
            labels="hole" if decision == "KO" else None,
            accepted_at=naive(decided_at),
            decided_at=naive(decided_at),
            received_at=naive(decided_at),
            item=body,
        )
    )
    if image:
        conn.execute(
            insert(images).values(
                item_id=item_id,
                camera_id="top",
                device_id=device_id,
                path=f"{device_id}/{item_id}/top.jpg",
                bytes=1000,
                sha256="0" * 64,
                received_at=naive(decided_at),
            )
        )
    return item_id


# --- status ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("silent_s", "interval_s", "expected"),
    [
        (0, 10, "online"),
        (24.9, 10, "online"),  # 2.5 beats of 10 s not yet passed
        (25.1, 10, "stale"),
        (599, 10, "stale"),
        (600, 10, "offline"),
        (3600, 10, "offline"),
        (1000, 900, "online"),  # a slow beat is not late while it is on time, whatever the offline limit
        (2300, 900, "offline"),
    ],
)
def test_status_follows_the_heartbeat_interval_then_the_offline_limit(
    silent_s: float, interval_s: float, expected: str
) -> None:
    # given a device last heard silent_s ago, beating every interval_s
    heard = NOW - timedelta(seconds=silent_s)
    # then its status is
    assert fleet.device_status(heard, interval_s, NOW, LIMITS) == expected


def test_a_device_never_heard_from_is_never_seen() -> None:
    assert fleet.device_status(None, None, NOW, LIMITS) == "never_seen"


# --- the fleet table ------------------------------------------------------------------------------


def test_fleet_rows_carry_status_heartbeat_facts_and_todays_figures_since_utc_midnight(
    engine: Engine,
) -> None:
    midnight = NOW.replace(hour=0, minute=0)
    with engine.begin() as conn:
        # given three devices: one heard now, one heard a minute ago, one never heard from
        add_device(conn, "lyon-1-a", heard=NOW - timedelta(seconds=3), version="1.4.0")
        add_device(conn, "lyon-1-b", heard=NOW - timedelta(seconds=60), version="1.3.2")
        add_device(conn, "porto-1-a", site="porto", line="porto-1")
        # and lyon-1-a decided 3 OK, 1 KO (overridden to OK) and 1 NO_DECISION today, and 5 OK yesterday
        for _ in range(3):
            add_result(conn, "lyon-1-a", "OK", NOW - timedelta(hours=1))
        add_result(conn, "lyon-1-a", "KO", midnight + timedelta(seconds=1), verdict="OK")
        add_result(conn, "lyon-1-a", "NO_DECISION", NOW - timedelta(minutes=5))
        for _ in range(5):
            add_result(conn, "lyon-1-a", "OK", midnight - timedelta(seconds=1))

        # when the fleet is read
        found = fleet.fleet(conn, NOW, LIMITS)

    # then every device is listed, by site and line, with its status
    rows = {row.device_id: row for row in found.devices}
    assert [row.device_id for row in found.devices] == ["lyon-1-a", "lyon-1-b", "porto-1-a"]
    assert {d: r.status for d, r in rows.items()} == {
        "lyon-1-a": "online",
        "lyon-1-b": "stale",
        "porto-1-a": "never_seen",
    }
    assert found.statuses == {"online": 1, "stale": 1, "offline": 0, "never_seen": 1}
    # and what its latest heartbeat said
    a = rows["lyon-1-a"]
    assert (a.version, a.station_id, a.station_revision) == ("1.4.0", "duck-line", "abc123")
    assert [(m.name, m.version) for m in a.models] == [("duck-detector", "3")]
    assert a.problems == ["Camera side does not answer."]
    assert (a.outbox_pending, a.fs_free_bytes) == (7, 5 * 2**30)
    assert a.silent_s == pytest.approx(3)
    # and today's figures count only since UTC midnight, by the machine's decision
    assert (a.today.total, a.today.ok, a.today.ko, a.today.no_decision, a.today.overridden) == (5, 3, 1, 1, 1)
    assert a.today.yield_ratio == pytest.approx(0.6)
    assert a.today.reject_rate == pytest.approx(0.2)
    assert rows["lyon-1-b"].today.total == 0 and rows["lyon-1-b"].today.yield_ratio is None
    assert rows["porto-1-a"].models == [] and rows["porto-1-a"].last_heartbeat_at is None
    assert found.today.total == 5
    assert (found.sites, found.lines) == (["lyon", "porto"], ["lyon-1", "porto-1"])


def test_fleet_filters_by_site_and_line(engine: Engine) -> None:
    with engine.begin() as conn:
        add_device(conn, "lyon-1-a", heard=NOW)
        add_device(conn, "lyon-2-a", line="lyon-2", heard=NOW)
        add_device(conn, "porto-1-a", site="porto", line="porto-1", heard=NOW)
        by_site = fleet.fleet(conn, NOW, LIMITS, site="lyon")
        by_line = fleet.fleet(conn, NOW, LIMITS, line="lyon-2")
    assert [r.device_id for r in by_site.devices] == ["lyon-1-a", "lyon-2-a"]
    assert [r.device_id for r in by_line.devices] == ["lyon-2-a"]
    assert by_line.lines == ["lyon-1", "lyon-2", "porto-1"]  # the filters still offer every line


# --- KPIs ------------------------------------------------------------------------------------------


def test_kpis_group_by_line_station_and_utc_day(engine: Engine) -> None:
    with engine.begin() as conn:
        add_device(conn, "lyon-1-a", heard=NOW)
        add_device(conn, "porto-1-a", site="porto", line="porto-1", heard=NOW)
        # given today: lyon-1 3 OK + 1 KO on duck-line; porto-1 1 OK + 1 KO on duck-bench
        for _ in range(3):
            add_result(conn, "lyon-1-a", "OK", NOW - timedelta(hours=2))
        add_result(conn, "lyon-1-a", "KO", NOW - timedelta(hours=2))
        add_result(conn, "porto-1-a", "OK", NOW, line="porto-1", station="duck-bench")
        add_result(conn, "porto-1-a", "KO", NOW, line="porto-1", station="duck-bench")
        # and two days ago lyon-1 2 KO; and 8 days ago (out of the window) 4 OK
        for _ in range(2):
            add_result(conn, "lyon-1-a", "KO", NOW - timedelta(days=2))
        for _ in range(4):
            add_result(conn, "lyon-1-a", "OK", NOW - timedelta(days=8))

        # when the 7-day KPIs are read
        found = fleet.kpis(conn, NOW, days=7)

    # then there are 7 UTC days, the last today
    assert found.days == [f"2026-03-{d:02d}" for d in range(4, 11)]
    lines = {g.key: g for g in found.lines}
    assert set(lines) == {"lyon-1", "porto-1"}
    lyon = lines["lyon-1"]
    assert lyon.site == "lyon"
    assert (lyon.today.total, lyon.today.ok, lyon.today.ko) == (4, 3, 1)
    assert lyon.today.yield_ratio == pytest.approx(0.75)
    assert [d.total for d in lyon.days] == [0, 0, 0, 0, 2, 0, 4]
    assert lyon.days[4].reject_rate == 1.0
    assert (lyon.window.total, lyon.window.ok) == (6, 3)
    stations = {g.key: g for g in found.stations}
    assert (stations["duck-bench"].today.total, stations["duck-bench"].today.reject_rate) == (2, 0.5)
    assert stations["duck-line"].window.total == 6
    assert (found.total.today.total, found.total.window.total) == (6, 8)


# --- one device -----------------------------------------------------------------------------------


def test_trends_bucket_parts_and_heartbeats_per_hour(engine: Engine) -> None:
    with engine.begin() as conn:
        add_device(conn, "lyon-1-a", heard=NOW)
        # given parts in the current hour and three hours ago, and one 30 hours ago (out of the window)
        add_result(conn, "lyon-1-a", "OK", NOW - timedelta(minutes=10))
        add_result(conn, "lyon-1-a", "KO", NOW - timedelta(minutes=20))
        add_result(conn, "lyon-1-a", "OK", NOW - timedelta(hours=3))
        add_result(conn, "lyon-1-a", "OK", NOW - timedelta(hours=30))
        # and heartbeats: two this hour (one not ready), one three hours ago
        for minutes, ready, free in ((1, True, 900), (2, False, 800), (180, True, 1000)):
            at = naive(NOW - timedelta(minutes=minutes))
            conn.execute(
                insert(heartbeats).values(
                    device_id="lyon-1-a",
                    received_at=at,
                    sent_at=at,
                    since=at,
                    ok=0,
                    ko=0,
                    no_decision=0,
                    ready=ready,
                    fs_free_bytes=free,
                    outbox_pending=minutes,
                )
            )
        found = fleet.trends(conn, "lyon-1-a", NOW, hours=24)

    assert len(found.hours) == 24
    assert found.hours[-1].start == NOW.replace(minute=0)
    current, three_ago = found.hours[-1], found.hours[-4]
    assert (current.parts.total, current.parts.ok, current.parts.ko) == (2, 1, 1)
    assert (current.beats, current.ready_share, current.fs_free_bytes_min, current.outbox_pending_max) == (
        2,
        0.5,
        800,
        2,
    )
    assert (three_ago.parts.total, three_ago.beats, three_ago.ready_share) == (1, 1, 1.0)
    assert sum(h.parts.total for h in found.hours) == 3
    assert found.hours[0].ready_share is None


def test_recent_kos_newest_first_with_their_images_and_boxes(engine: Engine) -> None:
    with engine.begin() as conn:
        add_device(conn, "lyon-1-a", heard=NOW)
        add_device(conn, "lyon-1-b", heard=NOW)
        older = add_result(conn, "lyon-1-a", "KO", NOW - timedelta(minutes=3), image=True, boxes=2)
        add_result(conn, "lyon-1-a", "OK", NOW - timedelta(minutes=2))
        newer = add_result(conn, "lyon-1-a", "KO", NOW - timedelta(minutes=1), verdict="OK")
        add_result(conn, "lyon-1-b", "KO", NOW)

        kos = fleet_results.device_results(conn, "lyon-1-a", decision="KO", limit=20)
        latest = fleet_results.device_results(conn, "lyon-1-a", limit=1)
        detail = fleet_results.result(conn, older)
        path = fleet_results.image_path(conn, older, "top")
        missing = fleet_results.image_path(conn, newer, "top")
        unknown = fleet_results.result(conn, str(uuid.uuid4()))

    assert [r.item_id for r in kos] == [newer, older]
    assert (kos[0].verdict, kos[0].overridden, kos[0].final) == ("OK", True, "OK")
    camera = kos[1].cameras[0]
    assert camera.image and not kos[0].cameras[0].image
    assert [d.box for d in camera.detections] == [(0.0, 0.25, 0.25, 0.5), (0.5, 0.25, 0.75, 0.5)]
    assert (camera.width, camera.height, camera.model) == (640, 480, "duck-detector v3")
    assert kos[1].labels == ["hole"]
    assert [r.decision for r in latest] == ["KO"]
    assert detail is not None and detail.item["item_id"] == older and detail.device_id == "lyon-1-a"
    assert path == f"lyon-1-a/{older}/top.jpg" and missing is None
    assert unknown is None
