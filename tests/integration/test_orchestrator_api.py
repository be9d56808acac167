"""The real orchestrator process with the real model server and the replayed duck line, over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import yaml

from edge_orchestrator.domain import ItemState
from edge_orchestrator.storage import InspectionQuery, Store
from tests.conftest import (
    AUTH,
    DEMO_FRAMES,
    duck_station,
    free_port,
    install_station,
    run_orchestrator,
)

TRUTH = [json.loads(line) for line in (DEMO_FRAMES / "truth.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def line(model_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One orchestrator on the duck line for the read/write API tests of this module."""
    tmp = tmp_path_factory.mktemp("line")
    install_station(tmp / "stations", duck_station())
    with run_orchestrator(tmp / "data", tmp / "stations", model_server, default_station="duck-line") as (
        base,
        _,
    ):
        yield base


def trigger(base: str, wait: float | None = 10, **body: Any) -> httpx.Response:
    url = f"{base}/api/v1/inspections" + (f"?wait={wait}" if wait else "")
    return httpx.post(url, json=body or None, headers=AUTH, timeout=30)


def test_the_replayed_line_is_decided_like_the_ground_truth(model_server: str, tmp_path: Path) -> None:
    # Given a fresh orchestrator replaying the 24 demo ducks from the first frame
    install_station(tmp_path / "stations", duck_station())
    with run_orchestrator(
        tmp_path / "data", tmp_path / "stations", model_server, default_station="duck-line"
    ) as (
        base,
        _,
    ):
        for index in range(24):
            # When each duck is triggered with ?wait
            response = trigger(base, part_id=f"duck-{index:04d}")
            # Then the decision comes back at once and matches the line's ground truth, camera by camera
            assert response.status_code == 200, response.text
            item = response.json()
            truth = {t["camera"]: t["ok"] for t in TRUTH if t["index"] == index}
            cameras = {c["camera_id"]: c for c in item["cameras"]}
            for camera_id, ok in truth.items():
                assert cameras[camera_id]["decision"] == ("OK" if ok else "KO"), (
                    index,
                    cameras[camera_id]["reasons"],
                )
            assert item["decision"] == ("OK" if all(truth.values()) else "KO")
            assert item["part_id"] == f"duck-{index:04d}" and item["state"] == "done"
            assert {"capture", "predict", "rules", "total"} <= set(item["timings_ms"])
            assert all(c["model_version"] == "1" for c in item["cameras"])
            assert item["station_revision"]


def test_a_trigger_without_wait_is_accepted_and_decided_later(line: str) -> None:
    response = trigger(line, wait=None, part_id="later", lot="L7", recipe="yellow", metadata={"shift": 2})
    assert response.status_code == 202
    item = response.json()
    assert item["state"] == "accepted" and item["decision"] is None
    assert response.headers["location"] == f"/api/v1/inspections/{item['item_id']}"
    got = httpx.get(f"{line}{response.headers['location']}?wait=10", headers=AUTH, timeout=20).json()
    assert got["state"] == "done"
    assert got["decision"] in ("OK", "KO") and got["lot"] == "L7" and got["metadata"] == {"shift": 2}


def test_images_are_the_originals_and_can_be_annotated(line: str) -> None:
    item = trigger(line, part_id="images").json()
    for camera in ("top", "side"):
        url = f"{line}/api/v1/inspections/{item['item_id']}/images/{camera}"
        original = httpx.get(url, headers=AUTH)
        assert original.status_code == 200 and original.headers["content-type"] == "image/jpeg"
        assert original.content in {p.read_bytes() for p in (DEMO_FRAMES / camera).glob("*.jpg")}
        annotated = httpx.get(url, params={"annotated": "true"}, headers=AUTH)
        assert annotated.status_code == 200 and annotated.content != original.content
        image = cv2.imdecode(np.frombuffer(annotated.content, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[:2] == (480, 640)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/v1/inspections/not-a-uuid", 400, "invalid_item_id"),
        (f"/api/v1/inspections/{uuid.uuid4()}", 404, "item_not_found"),
        (f"/api/v1/inspections/{uuid.uuid4()}/images/top", 404, "item_not_found"),
        ("/api/v1/inspections/..%2F..%2Fapi-key/images/top", 404, "not_found"),
        ("/api/v1/inspections/%2E%2E/images/top", 400, "invalid_item_id"),
        ("/api/v1/inspections?decision=MAYBE", 422, "validation_error"),
        ("/api/v1/inspections?cursor=garbage", 400, "invalid_cursor"),
        ("/api/v1/inspections?limit=0", 422, "validation_error"),
        ("/api/v1/stations/nope", 404, "station_not_found"),
        ("/api/v1/nothing-here", 404, "not_found"),
    ],
)
def test_bad_reads_get_a_clear_error(line: str, path: str, status: int, code: str) -> None:
    response = httpx.get(f"{line}{path}", headers=AUTH)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and response.json()["detail"]


def test_image_routes_are_safe_against_path_traversal(line: str) -> None:
    item = trigger(line, part_id="traversal").json()
    for camera in ("%2E%2E", "..%2F..%2F..%2Fapi-key", "%2e%2e%2fapi-key", "top.jpg", "TOP", "top%00"):
        response = httpx.get(f"{line}/api/v1/inspections/{item['item_id']}/images/{camera}", headers=AUTH)
        assert response.status_code == 404, camera
        assert ORCHESTRATOR_SECRET_MARK not in response.text


ORCHESTRATOR_SECRET_MARK = "test-key-"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/inspections", None),
        ("PUT", "/api/v1/stations/active", {"station_id": "duck-line"}),
        ("POST", f"/api/v1/inspections/{uuid.uuid4()}/verdict", {"decision": "OK"}),
        ("GET", "/api/v1/inspections", None),
    ],
)
@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_routes_need_the_api_key(line: str, method: str, path: str, body: Any, key: str | None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.request(method, f"{line}{path}", json=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized" and response.headers["www-authenticate"] == "Bearer"


def test_bad_triggers_get_a_clear_error(line: str) -> None:
    cases = [
        ({"part_id": "x" * 200}, "validation_error"),
        ({"serial": "unknown field"}, "validation_error"),
        ({"metadata": {"blob": "x" * 5000}}, "validation_error"),
    ]
    for body, code in cases:
        response = httpx.post(f"{line}/api/v1/inspections", json=body, headers=AUTH)
        assert response.status_code == 422 and response.json()["code"] == code, response.text
    response = httpx.post(f"{line}/api/v1/inspections?wait=-1", headers=AUTH)
    assert response.status_code == 422
    response = httpx.post(
        f"{line}/api/v1/inspections",
        content=b"{not json",
        headers={**AUTH, "content-type": "application/json"},
    )
    assert response.status_code == 422


def test_history_filters_and_pages_from_the_index(line: str) -> None:
    lot = uuid.uuid4().hex[:8]
    ids = [trigger(line, part_id=f"{lot}-{i}").json()["item_id"] for i in range(7)]
    one = httpx.get(f"{line}/api/v1/inspections", params={"part_id": f"{lot}-3"}, headers=AUTH).json()
    assert [i["item_id"] for i in one["items"]] == [ids[3]]

    since = httpx.get(f"{line}/api/v1/inspections/{ids[0]}", headers=AUTH).json()["accepted_at"]
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"since": since, "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{line}/api/v1/inspections", params=params, headers=AUTH).json()
        seen += [i["item_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, every item exactly once

    kos = httpx.get(
        f"{line}/api/v1/inspections", params={"decision": "KO", "since": since}, headers=AUTH
    ).json()
    assert kos["items"] and all(i["decision"] == "KO" for i in kos["items"])
    both = httpx.get(
        f"{line}/api/v1/inspections",
        params=[("decision", "KO"), ("decision", "OK"), ("since", since)],
        headers=AUTH,
    ).json()
    assert len(both["items"]) == 7


def test_an_operator_verdict_is_kept_beside_the_machine_decision(line: str) -> None:
    item = trigger(line, part_id="verdict").json()
    other = "KO" if item["decision"] == "OK" else "OK"
    url = f"{line}/api/v1/inspections/{item['item_id']}/verdict"
    response = httpx.post(
        url, json={"decision": other, "reason": "scratch under the tail", "operator": "ana"}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    judged = response.json()
    assert judged["decision"] == item["decision"]  # the machine's decision is never rewritten
    assert judged["verdict"]["decision"] == other and judged["verdict"]["overrides"] is True
    overridden = httpx.get(f"{line}/api/v1/inspections", params={"overridden": "true"}, headers=AUTH).json()
    assert item["item_id"] in [i["item_id"] for i in overridden["items"]]

    assert httpx.post(url, json={"decision": "MAYBE"}, headers=AUTH).status_code == 422
    unknown = httpx.post(
        f"{line}/api/v1/inspections/{uuid.uuid4()}/verdict", json={"decision": "OK"}, headers=AUTH
    )
    assert unknown.status_code == 404 and unknown.json()["code"] == "item_not_found"


def test_events_stream_every_state_change_and_decision(line: str) -> None:
    received: list[tuple[str, dict[str, Any]]] = []
    ready = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{line}/api/v1/events", headers=AUTH, timeout=15) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            ready.set()
            event = ""
            for raw in response.iter_lines():
                if raw.startswith("event:"):
                    event = raw.split(":", 1)[1].strip()
                elif raw.startswith("data:"):
                    received.append((event, json.loads(raw.split(":", 1)[1])["data"]))
                    if event == "item.decided":
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10)
    time.sleep(0.2)
    item = trigger(line, wait=None, part_id="sse").json()
    listener.join(15)
    mine = [event for event, data in received if data.get("item_id") == item["item_id"]]
    assert mine == ["item.accepted", "item.running", "item.decided"]
    decided = next(data for event, data in received if event == "item.decided")
    assert decided["decision"] in ("OK", "KO") and decided["part_id"] == "sse"


def test_stats_count_decisions_yield_and_latency(line: str) -> None:
    for i in range(4):
        trigger(line, part_id=f"stats-{i}")
    stats = httpx.get(f"{line}/api/v1/stats", params={"window_s": 600}, headers=AUTH).json()
    assert stats["total"] >= 4 and set(stats["counts"]) == {"OK", "KO", "NO_DECISION"}
    decided = sum(stats["counts"].values())
    assert stats["yield_ratio"] == pytest.approx(stats["counts"]["OK"] / decided)
    assert 0 < stats["latency_ms"]["p50"] <= stats["latency_ms"]["p99"]
    assert stats["throughput_per_min"] > 0


def test_health_metrics_and_system(line: str) -> None:
    assert httpx.get(f"{line}/health/live").status_code == 200
    ready = httpx.get(f"{line}/health/ready")
    assert ready.status_code == 200 and ready.json()["cameras"] == {"top": "ok", "side": "ok"}
    trigger(line, part_id="metrics")
    text = httpx.get(f"{line}/metrics").text
    assert 'edge_inspections_total{decision="' in text
    assert 'edge_stage_seconds_bucket{le="0.005",stage="predict"}' in text
    assert "edge_queue_depth" in text
    system = httpx.get(f"{line}/api/v1/system", headers=AUTH).json()
    assert system["station"] == "duck-line" and system["api_key_source"].startswith("environment")
    assert {m["name"] for m in system["models"]} == {"duck-detector", "duck-classifier"}
    assert system["disk"]


def test_stations_install_validate_and_switch_atomically_and_survive_a_restart(
    model_server: str, tmp_path: Path
) -> None:
    stations, data = tmp_path / "stations", tmp_path / "data"
    install_station(stations, duck_station())
    with run_orchestrator(data, stations, model_server, default_station="duck-line") as (base, _):
        # An invalid station is refused with each error's location, and nothing is written
        bad = yaml.safe_dump({**duck_station("night-shift"), "colour": "red"})
        response = httpx.put(f"{base}/api/v1/stations/night-shift", content=bad, headers=AUTH)
        assert response.status_code == 422 and response.json()["code"] == "invalid_station"
        assert any(e["location"] == "colour" for e in response.json()["errors"])
        assert not (stations / "night-shift.yaml").exists()
        # A valid one installs (201) and is listed, not active
        night = duck_station("night-shift", item_rule={"type": "min_ok", "count": 1})
        response = httpx.put(
            f"{base}/api/v1/stations/night-shift", content=yaml.safe_dump(night), headers=AUTH
        )
        assert response.status_code == 201, response.text
        listed = {s["id"]: s for s in httpx.get(f"{base}/api/v1/stations", headers=AUTH).json()}
        assert listed["duck-line"]["active"] and not listed["night-shift"]["active"]
        # Switching while items are in flight: each item finishes on the station it started with
        in_flight = [trigger(base, wait=None, part_id=f"switch-{i}").json()["item_id"] for i in range(3)]
        switched = httpx.put(
            f"{base}/api/v1/stations/active", json={"station_id": "night-shift"}, headers=AUTH
        )
        assert switched.status_code == 200 and switched.json()["station_id"] == "night-shift"
        after = trigger(base, part_id="after-switch").json()
        assert after["station_id"] == "night-shift"
        for item_id in in_flight:
            got = httpx.get(f"{base}/api/v1/inspections/{item_id}?wait=5", headers=AUTH, timeout=10).json()
            assert got["station_id"] == "duck-line" and got["state"] == "done"
        # The active station cannot be deleted; unknown ones are 404
        assert httpx.delete(f"{base}/api/v1/stations/night-shift", headers=AUTH).status_code == 409
        unknown = httpx.put(f"{base}/api/v1/stations/active", json={"station_id": "nope"}, headers=AUTH)
        assert unknown.status_code == 404 and unknown.json()["code"] == "station_not_found"
        schema = httpx.get(f"{base}/api/v1/stations/schema", headers=AUTH).json()
        assert schema["properties"]["cameras"]["description"]
    # After a restart (without the default pointing there), the switched station is still active
    with run_orchestrator(data, stations, model_server, default_station="duck-line") as (base, _):
        assert httpx.get(f"{base}/api/v1/stations/active", headers=AUTH).json()["station_id"] == "night-shift"


def test_a_full_queue_refuses_triggers_with_429(model_server: str, tmp_path: Path) -> None:
    # A slow camera (one frame a second) and room for two inspections in flight
    install_station(tmp_path / "stations", duck_station(fps=1))
    with run_orchestrator(
        tmp_path / "data",
        tmp_path / "stations",
        model_server,
        default_station="duck-line",
        EDGE_ORCHESTRATOR_MAX_IN_FLIGHT="2",
    ) as (base, _):
        responses = [trigger(base, wait=None) for _ in range(6)]
        statuses = [r.status_code for r in responses]
        assert statuses[:2] == [202, 202] and 429 in statuses
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.json()["code"] == "queue_full" and "in flight" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "1"
        # and the accepted ones are all decided
        for r in responses:
            if r.status_code == 202:
                item_id = r.json()["item_id"]
                deadline = time.monotonic() + 15
                while (
                    httpx.get(f"{base}/api/v1/inspections/{item_id}", headers=AUTH).json()["state"] != "done"
                ):
                    assert time.monotonic() < deadline
                    time.sleep(0.1)


def test_an_unreachable_model_server_is_no_decision_and_not_ready(tmp_path: Path) -> None:
    install_station(tmp_path / "stations", duck_station())
    dead = f"http://127.0.0.1:{free_port()}"
    with run_orchestrator(tmp_path / "data", tmp_path / "stations", dead, default_station="duck-line") as (
        base,
        _,
    ):
        item = trigger(base, part_id="no-model").json()
        assert item["decision"] == "NO_DECISION"
        assert {c["error_code"] for c in item["cameras"]} == {"model_unavailable"}
        assert all("unreachable" in c["reasons"][0] for c in item["cameras"])
        ready = httpx.get(f"{base}/health/ready")
        assert ready.status_code == 503 and "unreachable" in ready.json()["model_server"]
        # the frames are kept: a NO_DECISION image is what a human reviews
        image = httpx.get(f"{base}/api/v1/inspections/{item['item_id']}/images/top", headers=AUTH)
        assert image.status_code == 200


def test_a_dead_camera_makes_the_item_no_decision(model_server: str, tmp_path: Path) -> None:
    station = duck_station()
    station["cameras"][1]["source"] = {
        "type": "http",
        "url": f"http://127.0.0.1:{free_port()}/snapshot.jpg",
        "timeout_s": 0.5,
    }
    install_station(tmp_path / "stations", station)
    with run_orchestrator(
        tmp_path / "data", tmp_path / "stations", model_server, default_station="duck-line"
    ) as (base, _):
        item = trigger(base, part_id="dead-camera").json()
        side = next(c for c in item["cameras"] if c["camera_id"] == "side")
        assert item["decision"] == "NO_DECISION" and side["decision"] == "NO_DECISION"
        assert side["error_code"] in ("camera_error", "camera_timeout") and side["reasons"]
        assert httpx.get(f"{base}/health/ready").status_code == 503


def test_a_periodic_trigger_inspects_on_its_own_and_the_file_sink_gets_every_decision(
    model_server: str, tmp_path: Path
) -> None:
    station = duck_station(
        triggers={"periodic": {"interval_ms": 100}}, sinks=[{"type": "file", "path": "decisions.jsonl"}]
    )
    install_station(tmp_path / "stations", station)
    data = tmp_path / "data"
    with run_orchestrator(data, tmp_path / "stations", model_server, default_station="duck-line") as (
        base,
        _,
    ):
        time.sleep(1.5)
        stats = httpx.get(f"{base}/api/v1/stats", headers=AUTH).json()
        assert 8 <= stats["total"] <= 20, stats  # about ten a second, no burst, no stall
    # after a graceful stop, every decided item is in the sink file exactly once, in the database too
    lines = [json.loads(line) for line in (data / "decisions.jsonl").read_text().splitlines()]
    assert lines and all(item["source"] == "periodic" and item["decision"] for item in lines)
    assert len({item["item_id"] for item in lines}) == len(lines)

    async def stored() -> set[str]:
        store = Store(data)
        await store.open()
        try:
            page = await store.query(InspectionQuery(state=ItemState.DONE, limit=500))
            return {item.item_id for item in page.items}
        finally:
            await store.close()

    assert asyncio.run(stored()) == {item["item_id"] for item in lines}


@pytest.mark.parametrize(
    ("change", "location", "kind"),
    [
        ({"model": {"name": "duck-detektor"}}, "cameras.0.model.name", "unknown_model"),
        ({"model": {"name": "duck-detector", "version": 7}}, "cameras.0.model.version", "unknown_version"),
        (
            {"rules": [{"type": "label_count", "labels": ["stian"], "max": 0}]},
            "cameras.0.rules.0",
            "unknown_label",
        ),
        ({"rules": [{"type": "expected_label", "label": "ok"}]}, "cameras.0.rules.0", "wrong_task"),
    ],
    ids=["typo-in-model", "missing-version", "typo-in-label", "classifier-rule-on-detector"],
)
def test_a_station_that_does_not_fit_the_served_models_is_refused(
    line: str, change: dict[str, Any], location: str, kind: str
) -> None:
    # A label typo would never match, so "max 0 defects" would pass every part: refuse it up front
    station = duck_station("misfit")
    station["cameras"][0].update(change)
    response = httpx.put(f"{line}/api/v1/stations/misfit", content=yaml.safe_dump(station), headers=AUTH)
    assert response.status_code in (200, 201)  # installing only validates the file
    switched = httpx.put(f"{line}/api/v1/stations/active", json={"station_id": "misfit"}, headers=AUTH)
    assert switched.status_code == 422 and switched.json()["code"] == "invalid_station"
    assert [(e["location"], e["type"]) for e in switched.json()["errors"]] == [(location, kind)]
    assert httpx.get(f"{line}/api/v1/stations/active", headers=AUTH).json()["station_id"] == "duck-line"
