"""The edge side of the hub link against a real hub process: results with their sampled images, heartbeats and
verdicts arrive exactly once and in order through a hub that is killed mid-run; a wrong token keeps everything."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_orchestrator.hub_link import sample_point
from tests.conftest import AUTH, duck_station, free_port, install_station, run_orchestrator
from tests.hub.conftest import register, run_hub

pytestmark = [pytest.mark.slow]
OK_SHARE = 0.3


@contextlib.contextmanager
def device(
    tmp: Path, model_server: str, hub: str, token: str, device_id: str = "dev-1"
) -> Iterator[tuple[str, Any]]:
    stations = tmp / "stations"
    if not stations.exists():
        install_station(stations, duck_station("duck-line"))
    with run_orchestrator(
        tmp / "edge",
        stations,
        model_server,
        default_station="duck-line",
        EDGE_ORCHESTRATOR_DEVICE_ID=device_id,
        EDGE_ORCHESTRATOR_HUB_URL=hub,
        EDGE_HUB_TOKEN=token,
        EDGE_ORCHESTRATOR_HUB_HEARTBEAT_S="0.5",
        EDGE_ORCHESTRATOR_HUB_OK_IMAGE_SHARE=str(OK_SHARE),
        EDGE_ORCHESTRATOR_HUB_TIMEOUT_S="2",
    ) as running:
        yield running


def trigger(client: httpx.Client, part_id: str) -> dict[str, Any]:
    response = client.post("/api/v1/inspections?wait=20", json={"part_id": part_id}, headers=AUTH)
    assert response.status_code == 200, response.text
    item: dict[str, Any] = response.json()
    assert item["decision"] is not None
    return item


def system(client: httpx.Client) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/api/v1/system", headers=AUTH).json()
    return body


def hub_channel(client: httpx.Client) -> dict[str, Any]:
    return next(c for c in system(client)["outbox"] if c["channel"] == "hub")


def hub_link(client: httpx.Client) -> dict[str, Any]:
    return next(link for link in system(client)["integrations"] if link["name"] == "hub")


def until(check: Callable[[], bool], within: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {within} s: {what}")
        time.sleep(0.1)


def hub_rows(hub_dir: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Read the hub's database the way an analyst would: read-only, beside the running hub."""
    conn = sqlite3.connect(f"{(hub_dir / 'hub.db').as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def counted(hub_dir: Path, device_id: str) -> int:
    """Decisions the heartbeats the hub kept counted (a beat repeated after a lost answer replaced the one it
    repeats on the hub, so the plain sum must match)."""
    [(total,)] = hub_rows(
        hub_dir, "SELECT SUM(ok + ko + no_decision) FROM heartbeats WHERE device_id = ?", device_id
    )
    return int(total or 0)


def test_results_images_verdicts_and_counts_arrive_once_in_order_through_a_hub_crash(
    tmp_path: Path, model_server: str
) -> None:
    hub_dir, port = tmp_path / "hub", free_port()
    decided: list[dict[str, Any]] = []
    with run_hub(hub_dir, port=port) as (hub, hub_proc):
        with httpx.Client(base_url=hub, timeout=10) as admin:
            token = register(admin, "dev-1", line="line-1")
        with (
            device(tmp_path, model_server, hub, token) as (base, _),
            httpx.Client(base_url=base, timeout=30) as edge,
        ):
            # Given a line inspecting continuously with the hub up
            until(lambda: hub_link(edge)["up"], 10, "the hub link up")
            decided += [trigger(edge, f"A-{n}") for n in range(20)]
            # When the hub dies without a word, the line keeps inspecting; results wait on the device
            os.kill(hub_proc.pid, signal.SIGKILL)
            hub_proc.wait(timeout=10)
            decided += [trigger(edge, f"B-{n}") for n in range(20)]
            # And an operator overrides an OK item meanwhile
            ok_item = next(i for i in decided if i["decision"] == "OK")
            answer = edge.post(
                f"/api/v1/inspections/{ok_item['item_id']}/verdict",
                json={"decision": "KO", "reason": "dented beak", "operator": "ana"},
                headers=AUTH,
            )
            assert answer.status_code == 200, answer.text
            # And confirms a KO one (sent too, not an override)
            ko_item = next(i for i in decided if i["decision"] == "KO")
            answer = edge.post(
                f"/api/v1/inspections/{ko_item['item_id']}/verdict", json={"decision": "KO"}, headers=AUTH
            )
            assert answer.status_code == 200, answer.text
            until(lambda: not hub_link(edge)["up"], 10, "the hub link down")
            link = hub_link(edge)
            assert link["state"] == "retrying" and "hub unreachable" in link["detail"]
            assert hub_channel(edge)["pending"] > 0
            metrics = edge.get("/metrics").text
            assert 'edge_integration_up{link="hub"} 0.0' in metrics
            # When the hub comes back on the same address and data, everything is delivered
            with run_hub(hub_dir, port=port):
                decided += [trigger(edge, f"C-{n}") for n in range(20)]
                until(lambda: hub_channel(edge)["pending"] == 0, 30, "the hub outbox empty")
                until(
                    lambda: counted(hub_dir, "dev-1") >= len(decided),
                    10,
                    "heartbeats covering every decision",
                )
                assert hub_link(edge) == {
                    "name": "hub",
                    "up": True,
                    "state": "connected",
                    "detail": None,
                    "results": None,
                }
                assert hub_channel(edge)["parked"] == 0 and hub_channel(edge)["dropped"] == 0
                metrics = edge.get("/metrics").text
                assert 'edge_integration_up{link="hub"} 1.0' in metrics
                assert 'edge_outbox_pending{channel="hub"} 0.0' in metrics
                assert 'edge_outbox_dropped{channel="hub"} 0.0' in metrics

    ids = [i["item_id"] for i in decided]
    # Then every item is on the hub exactly once, in the order it was decided
    results = hub_rows(hub_dir, "SELECT item_id, decision, verdict, overridden FROM results ORDER BY id")
    assert [r[0] for r in results] == ids
    assert [r[1] for r in results] == [i["decision"] for i in decided]
    # And every KO and NO_DECISION item has its images, OK ones the deterministic share, the override all
    images: dict[str, set[str]] = {}
    for item_id, camera_id in hub_rows(hub_dir, "SELECT item_id, camera_id FROM images"):
        images.setdefault(item_id, set()).add(camera_id)
    for item in decided:
        cameras = {c["camera_id"] for c in item["cameras"]}
        wanted = (
            item["decision"] != "OK"
            or item["item_id"] == ok_item["item_id"]
            or sample_point(item["item_id"]) < OK_SHARE
        )
        assert images.get(item["item_id"], set()) == (cameras if wanted else set()), item["item_id"]
    # And the override and the confirmation landed as the operator's verdicts
    verdicts = {
        item_id: (verdict, bool(overridden), final)
        for item_id, verdict, overridden, final in hub_rows(
            hub_dir, "SELECT item_id, verdict, overridden, final FROM results WHERE verdict IS NOT NULL"
        )
    }
    assert verdicts == {ok_item["item_id"]: ("KO", True, "KO"), ko_item["item_id"]: ("KO", False, "KO")}
    # And the heartbeats counted every decision once, the hub's absence notwithstanding
    assert counted(hub_dir, "dev-1") == len(decided)


def test_a_wrong_token_keeps_everything_until_the_right_one_delivers_it(
    tmp_path: Path, model_server: str
) -> None:
    hub_dir = tmp_path / "hub"
    with run_hub(hub_dir) as (hub, _):
        with httpx.Client(base_url=hub, timeout=10) as admin:
            token = register(admin, "dev-2")
        # Given a device started with a token the hub does not know
        with (
            device(tmp_path, model_server, hub, "not-the-token", "dev-2") as (base, _),
            httpx.Client(base_url=base, timeout=30) as edge,
        ):
            ids = [trigger(edge, f"W-{n}")["item_id"] for n in range(5)]
            # Then the link shows why it fails, and every result waits in the outbox
            until(lambda: hub_link(edge)["detail"] is not None, 10, "the refusal shown")
            link = hub_link(edge)
            assert (link["up"], link["state"]) == (False, "retrying")
            assert link["detail"].startswith("hub refused the token (401")
            assert hub_channel(edge)["pending"] == 5 and hub_channel(edge)["parked"] == 0
            assert 'edge_integration_up{link="hub"} 0.0' in edge.get("/metrics").text
        assert hub_rows(hub_dir, "SELECT COUNT(*) FROM results") == [(0,)]
        # When the device restarts with the right token, all of it is delivered, counts included
        with (
            device(tmp_path, model_server, hub, token, "dev-2") as (base, _),
            httpx.Client(base_url=base, timeout=30) as edge,
        ):
            until(lambda: hub_channel(edge)["pending"] == 0, 30, "the hub outbox empty")
            until(lambda: counted(hub_dir, "dev-2") >= 5, 10, "heartbeats covering the decisions")
            assert hub_link(edge)["up"] is True
        assert [r[0] for r in hub_rows(hub_dir, "SELECT item_id FROM results ORDER BY id")] == ids
        assert counted(hub_dir, "dev-2") == 5
