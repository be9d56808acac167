"""The same hub on SQLite and on a real PostgreSQL 15: the migrations build exactly hub/schema.py, the ingest
scenario gives the same rows, and concurrent duplicate deliveries to a real hub process are stored once."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from edge_orchestrator.domain import Decision, Verdict
from hub.db import Database, alembic_config
from hub.schema import metadata
from tests.hub.conftest import (
    ADMIN,
    JPEG,
    HubFactory,
    bearer,
    decided,
    heartbeat,
    inspection,
    register,
    run_hub,
    verdict,
)


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def test_the_migrations_build_exactly_the_schema_of_hub_schema(database_url: str) -> None:
    # given an empty database
    db = Database(database_url)
    try:
        # when it is migrated (twice: the second is a no-op)
        db.migrate()
        db.migrate()
        # then Alembic finds no difference with hub/schema.py (what `alembic check` verifies)
        with db.engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            assert compare_metadata(context, metadata) == []
            assert context.get_current_revision() == "0001"
        # and the migration can be undone and redone
        config = alembic_config(database_url)
        command.downgrade(config, "base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        command.upgrade(config, "head")
        assert set(inspect(db.engine).get_table_names()) == {*metadata.tables, "alembic_version"}
    finally:
        db.close()


def test_the_ingest_scenario_gives_the_same_rows_on_both_backends(
    make_hub: HubFactory, database_url: str, tmp_path: Path
) -> None:
    # given a hub on this backend and a registered device on line L2
    hub = make_hub(database_url=database_url)
    token = register(hub, "pi-1", site="porto", line="L2")
    other = register(hub, "pi-2")
    # when the device beats, sends a batch twice, a verdict, and an image another device then claims
    assert (
        hub.post("/api/v1/ingest/heartbeat", json=heartbeat("pi-1"), headers=bearer(token)).status_code == 200
    )
    ko, ok = inspection(Decision.KO, labels=("stain",)), inspection()
    batch = {"results": [decided("pi-1", 1, ko, images=("top",)), decided("pi-1", 2, ok)]}
    receipts = [
        hub.post("/api/v1/ingest/results", json=batch, headers=bearer(token)).json() for _ in range(2)
    ]
    judged = ko.model_copy(
        update={"verdict": Verdict(decision=Decision.OK, at=ko.decided_at, overrides=True)}
    )
    applied = hub.post(
        "/api/v1/ingest/results", json={"results": [verdict("pi-1", 3, judged)]}, headers=bearer(token)
    ).json()
    stored = hub.put(f"/api/v1/ingest/images/{ko.item_id}/top", content=JPEG, headers=bearer(token))
    claimed = hub.put(f"/api/v1/ingest/images/{ko.item_id}/top", content=JPEG, headers=bearer(other))
    # then the answers are the same as on any backend
    assert receipts == [{"accepted": 2, "duplicates": 0}, {"accepted": 0, "duplicates": 2}]
    assert applied == {"accepted": 1, "duplicates": 0}
    assert (stored.status_code, claimed.status_code, claimed.json()["code"]) == (201, 409, "image_conflict")
    # and so are the rows
    assert query(
        database_url,
        "SELECT item_id, line, decision, verdict, overridden, final, labels FROM results ORDER BY id",
    ) == [
        (ko.item_id, "L2", "KO", "OK", True, "OK", "stain"),
        (ok.item_id, "L2", "OK", None, False, "OK", None),
    ]
    ((item,),) = query(database_url, f"SELECT item FROM results WHERE item_id = '{ko.item_id}'")
    assert (json.loads(item) if isinstance(item, str) else item)["verdict"]["decision"] == "OK"
    device = hub.get("/api/v1/devices/pi-1", headers=ADMIN).json()
    assert (device["site"], device["version"], device["ready"]) == ("porto", "0.1.0", True)
    assert query(database_url, "SELECT device_id, ok, ko, outbox_pending FROM heartbeats") == [
        ("pi-1", 28, 2, 3)
    ]
    assert query(database_url, "SELECT device_id, camera_id, bytes FROM images") == [
        ("pi-1", "top", len(JPEG))
    ]


def test_concurrent_duplicate_deliveries_to_a_real_hub_are_stored_once(
    database_url: str, tmp_path: Path
) -> None:
    # given a real hub process on this backend and a device with 60 results in three batches
    with run_hub(tmp_path / "hub", HUB_DATABASE_URL=database_url) as (base, _):
        with httpx.Client(base_url=base) as client:
            token = register(client, "pi-1", line="L1")
        items = [inspection(Decision.KO if i % 5 == 0 else Decision.OK) for i in range(60)]
        batches = [
            {"results": [decided("pi-1", i, items[i]) for i in range(start, start + 20)]}
            for start in (0, 20, 40)
        ]

        def deliver(batch: dict[str, Any]) -> dict[str, int]:
            answer = httpx.post(
                f"{base}/api/v1/ingest/results", json=batch, headers=bearer(token), timeout=30
            )
            assert answer.status_code == 200, answer.text
            receipt: dict[str, int] = answer.json()
            return receipt

        # when four senders deliver every batch at the same time (a device retrying while its first try is
        # still in flight, over and over)
        with ThreadPoolExecutor(max_workers=8) as pool:
            receipts = list(pool.map(deliver, [batch for batch in batches for _ in range(4)]))
        # then every item is stored exactly once and exactly one delivery of each item counted it as accepted
        assert sum(r["accepted"] for r in receipts) == 60
        assert sum(r["duplicates"] for r in receipts) == 3 * 60
        rows = query(database_url, "SELECT item_id, count(*) FROM results GROUP BY item_id")
        assert sorted(item_id for item_id, _ in rows) == sorted(i.item_id for i in items)
        assert {count for _, count in rows} == {1}
        assert query(database_url, "SELECT count(*) FROM results WHERE decision = 'KO'") == [(12,)]
