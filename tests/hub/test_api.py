"""The hub's API in-process on SQLite: registration and tokens, device isolation, heartbeats, results stored
exactly once, images, login sessions and error answers; and the real `python -m hub` process with its CLI."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, insert

from edge_orchestrator.domain import Decision, Verdict
from edge_orchestrator.telemetry import MAX_IMAGE_BYTES
from hub.schema import heartbeats
from tests.conftest import REPO
from tests.hub.conftest import (
    ADMIN,
    ADMIN_KEY,
    JPEG,
    PNG,
    bearer,
    decided,
    heartbeat,
    inspection,
    register,
    run_hub,
    verdict,
)


def rows(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    """What the hub stored, read from its database file (read-only)."""
    with sqlite3.connect(f"file:{data_dir / 'hub.db'}?mode=ro", uri=True) as db:
        return db.execute(sql).fetchall()


def test_registration_answers_the_token_once_and_refuses_a_repeat(hub_app: TestClient) -> None:
    # given an operator with the admin key
    # when they register a device
    answer = hub_app.post("/api/v1/devices", json={"device_id": "pi-lyon-1", "line": "L1"}, headers=ADMIN)
    # then the token is answered once, and later reads never show it
    assert answer.status_code == 201
    assert answer.json()["token"].startswith("hubd_")
    device = hub_app.get("/api/v1/devices/pi-lyon-1", headers=ADMIN).json()
    assert device["line"] == "L1" and "token" not in device and device["registered_at"].endswith("Z")
    assert [d["device_id"] for d in hub_app.get("/api/v1/devices", headers=ADMIN).json()["devices"]] == [
        "pi-lyon-1"
    ]
    # and registering it again is a conflict, not a new token
    again = hub_app.post("/api/v1/devices", json={"device_id": "pi-lyon-1"}, headers=ADMIN)
    assert again.status_code == 409 and again.json()["code"] == "device_exists"
    # and bad ids, unknown devices and missing keys get their own answers
    bad = hub_app.post("/api/v1/devices", json={"device_id": "-pi/../x"}, headers=ADMIN)
    assert bad.status_code == 422 and "device_id" in bad.json()["detail"]
    assert hub_app.get("/api/v1/devices/nope", headers=ADMIN).json()["code"] == "device_not_found"
    anonymous = hub_app.post("/api/v1/devices", json={"device_id": "pi-2"})
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthorized"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    wrong = hub_app.get("/api/v1/devices", headers=bearer("not-the-key"))
    assert wrong.status_code == 401


def test_a_device_token_writes_only_for_its_own_device(hub_app: TestClient) -> None:
    # given two registered devices
    token_a = register(hub_app, "pi-a")
    register(hub_app, "pi-b")
    item = inspection()
    # when device A's token sends data as device B, it is refused
    beat = hub_app.post("/api/v1/ingest/heartbeat", json=heartbeat("pi-b"), headers=bearer(token_a))
    assert beat.status_code == 403 and beat.json()["code"] == "device_mismatch"
    batch = {"results": [decided("pi-a", 1, item), decided("pi-b", 2, inspection())]}
    mixed = hub_app.post("/api/v1/ingest/results", json=batch, headers=bearer(token_a))
    assert mixed.status_code == 403 and mixed.json()["code"] == "device_mismatch"
    # then nothing of the refused batch was stored (a batch is all or nothing)
    assert hub_app.post(
        "/api/v1/ingest/results", json={"results": [decided("pi-a", 1, item)]}, headers=bearer(token_a)
    ).json() == {"accepted": 1, "duplicates": 0}
    # and no token, a made-up one, or the admin key are not device tokens
    for headers in ({}, bearer("hubd_made-up"), ADMIN):
        answer = hub_app.post("/api/v1/ingest/heartbeat", json=heartbeat("pi-a"), headers=headers)
        assert answer.status_code == 401 and answer.json()["code"] == "invalid_token"
        assert answer.headers["www-authenticate"] == "Bearer"


def test_a_revoked_token_is_refused_until_the_token_is_rotated(hub_app: TestClient) -> None:
    # given a device that has been writing
    old = register(hub_app, "pi-1")
    assert (
        hub_app.post("/api/v1/ingest/heartbeat", json=heartbeat("pi-1"), headers=bearer(old)).status_code
        == 200
    )
    # when its token is revoked
    revoked = hub_app.delete("/api/v1/devices/pi-1/token", headers=ADMIN)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    # then its writes are refused at once
    refused = hub_app.post("/api/v1/ingest/heartbeat", json=heartbeat("pi-1"), headers=bearer(old))
    assert refused.status_code == 401 and refused.json()["code"] == "token_revoked"
    # when the token is rotated, the new one writes and the old one stays refused
    rotated = hub_app.post("/api/v1/devices/pi-1/token", headers=ADMIN).json()
    assert rotated["revoked_at"] is None and rotated["token"] != old
    assert (
        hub_app.post(
            "/api/v1/ingest/heartbeat", json=heartbeat("pi-1"), headers=bearer(rotated["token"])
        ).status_code
        == 200
    )
    stale = hub_app.post("/api/v1/ingest/heartbeat", json=heartbeat("pi-1"), headers=bearer(old))
    assert stale.status_code == 401 and stale.json()["code"] == "invalid_token"
    assert hub_app.delete("/api/v1/devices/ghost/token", headers=ADMIN).status_code == 404


def test_a_heartbeat_updates_the_device_and_is_kept_in_the_history(
    hub_app: TestClient, tmp_path: Path
) -> None:
    # given a registered device, with a heartbeat older than the 30 days of history the hub keeps
    token = register(hub_app, "pi-1", site="lyon", line="L1")
    engine = create_engine(f"sqlite:///{tmp_path / 'hub' / 'hub.db'}")
    with engine.begin() as conn:
        old = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=31)
        conn.execute(
            insert(heartbeats).values(
                device_id="pi-1",
                received_at=old,
                sent_at=old,
                since=old,
                ok=1,
                ko=1,
                no_decision=1,
                ready=True,
            )
        )
    engine.dispose()
    # when it sends two heartbeats, the second one not ready on another version
    first = hub_app.post("/api/v1/ingest/heartbeat", json=heartbeat("pi-1"), headers=bearer(token))
    assert first.status_code == 200 and first.json()["received_at"].endswith("Z")
    second = heartbeat(
        "pi-1", version="0.2.0", interval_s=5, health={"ready": False, "problems": ["camera top"]}
    )
    assert hub_app.post("/api/v1/ingest/heartbeat", json=second, headers=bearer(token)).status_code == 200
    # then the device shows the latest beat
    device = hub_app.get("/api/v1/devices/pi-1", headers=ADMIN).json()
    assert (device["version"], device["interval_s"], device["ready"], device["station_id"]) == (
        "0.2.0",
        5.0,
        False,
        "duck-line",
    )
    assert device["last_heartbeat_at"] >= first.json()["received_at"]
    # and both beats are in the history with their counts and outbox depth; the old one was pruned
    history = rows(
        tmp_path / "hub", "SELECT ok, ko, no_decision, ready, outbox_pending FROM heartbeats ORDER BY id"
    )
    assert history == [(28, 2, 0, 1, 3), (28, 2, 0, 0, 3)]
    # when the answer to the second was lost and the device repeats its window, wider (same `since`)
    repeat = {**second, "counts": {"ok": 40, "ko": 3, "no_decision": 1}}
    assert hub_app.post("/api/v1/ingest/heartbeat", json=repeat, headers=bearer(token)).status_code == 200
    # then the repeat replaces the beat it repeats: the history never counts a decision twice
    history = rows(tmp_path / "hub", "SELECT ok, ko, no_decision FROM heartbeats ORDER BY id")
    assert history == [(28, 2, 0), (40, 3, 1)]
    # and a beat that does not parse is a 422 with the field's path
    broken = hub_app.post(
        "/api/v1/ingest/heartbeat", json={**heartbeat("pi-1"), "interval_s": -1}, headers=bearer(token)
    )
    assert broken.status_code == 422 and "body.interval_s" in broken.json()["detail"]


def test_results_are_stored_exactly_once_and_verdicts_update_them(
    hub_app: TestClient, tmp_path: Path
) -> None:
    # given a device on line L1 and three decided ducks, one KO with two labels
    token = register(hub_app, "pi-1", line="L1")
    ko = inspection(Decision.KO, labels=("stain", "beak_missing"))
    ok1, ok2 = inspection(), inspection()
    batch = {"results": [decided("pi-1", 1, ko), decided("pi-1", 2, ok1), decided("pi-1", 3, ok2)]}
    # when the batch is sent, then resent (its answer was lost)
    first = hub_app.post("/api/v1/ingest/results", json=batch, headers=bearer(token))
    again = hub_app.post("/api/v1/ingest/results", json=batch, headers=bearer(token))
    # then each item is stored once, in the batch's order, and the repeat is counted as duplicates
    assert first.json() == {"accepted": 3, "duplicates": 0}
    assert again.json() == {"accepted": 0, "duplicates": 3}
    stored = rows(
        tmp_path / "hub", "SELECT item_id, line, decision, final, labels, device_seq FROM results ORDER BY id"
    )
    assert stored == [
        (ko.item_id, "L1", "KO", "KO", "beak_missing stain", 1),
        (ok1.item_id, "L1", "OK", "OK", None, 2),
        (ok2.item_id, "L1", "OK", "OK", None, 3),
    ]
    # when an operator overrides the KO, and the verdict is delivered twice
    judged = ko.model_copy(
        update={"verdict": Verdict(decision=Decision.OK, at=ko.decided_at, overrides=True)}
    )
    verdicts = {"results": [verdict("pi-1", 4, judged)]}
    assert hub_app.post("/api/v1/ingest/results", json=verdicts, headers=bearer(token)).json() == {
        "accepted": 1,
        "duplicates": 0,
    }
    assert hub_app.post("/api/v1/ingest/results", json=verdicts, headers=bearer(token)).json() == {
        "accepted": 0,
        "duplicates": 1,
    }
    # then the item's verdict, final decision and record are updated once; the machine's decision stays
    query = f"SELECT decision, verdict, overridden, final, device_seq, item FROM results WHERE item_id = '{ko.item_id}'"
    ((decision, verdict_, overridden, final, seq, item),) = rows(tmp_path / "hub", query)
    assert (decision, verdict_, overridden, final, seq) == ("KO", "OK", 1, "OK", 4)
    assert '"operator"' in item and '"overrides":true' in item.replace(" ", "")
    # and an older event delivered late never overwrites a newer one
    late = hub_app.post(
        "/api/v1/ingest/results", json={"results": [verdict("pi-1", 1, ko)]}, headers=bearer(token)
    )
    assert late.json() == {"accepted": 0, "duplicates": 1}
    assert rows(tmp_path / "hub", query)[0][1] == "OK"
    # and a verdict whose decided event never arrived, then that event, give one row with the verdict
    orphan = inspection(Decision.KO, verdict=Decision.KO)
    mixed = {
        "results": [
            verdict("pi-1", 6, orphan),
            decided("pi-1", 5, orphan.model_copy(update={"verdict": None})),
        ]
    }
    assert hub_app.post("/api/v1/ingest/results", json=mixed, headers=bearer(token)).json() == {
        "accepted": 1,
        "duplicates": 1,
    }
    assert rows(
        tmp_path / "hub", f"SELECT verdict, final FROM results WHERE item_id = '{orphan.item_id}'"
    ) == [("KO", "KO")]
    assert rows(tmp_path / "hub", "SELECT count(*) FROM results") == [(4,)]


def test_results_that_cannot_be_stored_are_refused_with_their_reason(hub_app: TestClient) -> None:
    # given a registered device
    token = register(hub_app, "pi-1")
    undecided = inspection().model_copy(update={"decision": None})
    cases = [
        ({"results": [decided("pi-1", 1, undecided)]}, 422, "undecided_item"),
        ({"results": [decided("pi-1", 1, inspection(item_id="../../etc"))]}, 422, "invalid_item_id"),
        ({"results": []}, 422, "validation_error"),
        ({"results": [decided("pi-1", i, inspection()) for i in range(101)]}, 413, "batch_too_large"),
        (
            {"results": [{**decided("pi-1", 1, inspection()), "event": "inspection.deleted"}]},
            422,
            "validation_error",
        ),
    ]
    for body, status, code in cases:
        answer = hub_app.post("/api/v1/ingest/results", json=body, headers=bearer(token))
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    not_json = hub_app.post(
        "/api/v1/ingest/results",
        content=b"{not json",
        headers={**bearer(token), "content-type": "application/json"},
    )
    assert not_json.status_code == 422 and not_json.json()["code"] == "validation_error"


def test_images_are_checked_and_written_atomically_once(hub_app: TestClient, tmp_path: Path) -> None:
    # given two devices and an item of the first
    token_a, token_b = register(hub_app, "pi-a"), register(hub_app, "pi-b")
    item_id = str(uuid.uuid4())
    url = f"/api/v1/ingest/images/{item_id}/top"
    # when device A uploads its top image, then again (a lost answer)
    created = hub_app.put(url, content=JPEG, headers={**bearer(token_a), "content-type": "image/jpeg"})
    repeated = hub_app.put(url, content=JPEG, headers=bearer(token_a))
    # then it is stored once, at its documented place, with exactly the bytes sent
    assert (created.status_code, repeated.status_code) == (201, 200)
    assert repeated.json()["created"] is False
    images = tmp_path / "hub" / "images"
    path = images / "pi-a" / item_id[:2] / item_id / "top.jpg"
    assert path.read_bytes() == JPEG
    assert rows(tmp_path / "hub", "SELECT device_id, path, bytes FROM images") == [
        ("pi-a", f"pi-a/{item_id[:2]}/{item_id}/top.jpg", len(JPEG))
    ]
    # when the same item's camera comes from another device, it is refused and A's image is intact
    conflict = hub_app.put(url, content=PNG, headers=bearer(token_b))
    assert conflict.status_code == 409 and conflict.json()["code"] == "image_conflict"
    assert path.read_bytes() == JPEG
    # when A replaces it with a PNG, the JPEG file goes and the PNG takes its place
    assert hub_app.put(url, content=PNG, headers=bearer(token_a)).status_code == 201
    assert not path.exists() and path.with_suffix(".png").read_bytes() == PNG
    # and bad inputs get their own answers
    cases = [
        (url, b"GIF89a" + bytes(32), 415, "unsupported_media_type"),
        (url, b"", 415, "unsupported_media_type"),
        (url, JPEG + bytes(MAX_IMAGE_BYTES), 413, "image_too_large"),
        (f"/api/v1/ingest/images/{item_id}/top.jpg", JPEG, 422, "invalid_camera_id"),
        (f"/api/v1/ingest/images/{item_id}/-top", JPEG, 422, "invalid_camera_id"),
        (f"/api/v1/ingest/images/{item_id.upper()}/top", JPEG, 422, "invalid_item_id"),
        ("/api/v1/ingest/images/not-a-uuid/top", JPEG, 422, "invalid_item_id"),
    ]
    for target, body, status, code in cases:
        answer = hub_app.put(target, content=body, headers=bearer(token_a))
        assert (answer.status_code, answer.json()["code"]) == (status, code), target
    # and no temporary file is ever left behind
    assert sorted(p.name for p in images.rglob("*") if p.is_file()) == ["top.png"]


def test_login_sets_a_session_cookie_that_opens_admin_routes(hub_app: TestClient) -> None:
    # given the dashboard's login form
    # when someone posts a wrong key, they go back to the login page with the reason
    wrong = hub_app.post("/login", data={"key": "guess", "next": "/devices/pi-1"}, follow_redirects=False)
    assert (
        wrong.status_code == 303
        and wrong.headers["location"] == "/login?error=invalid_key&next=/devices/pi-1"
    )
    assert "set-cookie" not in wrong.headers
    # when they post the admin key, they get a strict, HttpOnly session cookie and go where they wanted
    right = hub_app.post("/login", data={"key": ADMIN_KEY, "next": "/devices/pi-1"}, follow_redirects=False)
    assert right.status_code == 303 and right.headers["location"] == "/devices/pi-1"
    cookie = right.headers["set-cookie"]
    assert cookie.startswith("hub_session=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Max-Age=43200" in cookie and ADMIN_KEY not in cookie
    # then the session (kept by the client, like a browser) opens admin routes without a Bearer key
    session = right.cookies["hub_session"]
    assert hub_app.get("/api/v1/devices").status_code == 200
    # and a tampered cookie does not
    expires, signature = session.split(".")
    for forged in (f"{int(expires) + 3600}.{signature}", f"{expires}.{'0' * 64}", "garbage", ""):
        hub_app.cookies.set("hub_session", forged)
        assert hub_app.get("/api/v1/devices").status_code == 401
    hub_app.cookies.clear()
    # and `next` never leaves the site
    for target in ("//evil.example/x", "https://evil.example", "\\\\evil", "javascript:alert(1)"):
        away = hub_app.post("/login", data={"key": ADMIN_KEY, "next": target}, follow_redirects=False)
        assert away.headers["location"] == "/"
    # when they log out, the cookie is cleared
    out = hub_app.post("/logout", follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert 'hub_session=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]


def test_health_metrics_and_error_answers(hub_app: TestClient) -> None:
    # given a hub that received one heartbeat and a duplicate result
    token = register(hub_app, "pi-1")
    hub_app.post("/api/v1/ingest/heartbeat", json=heartbeat("pi-1"), headers=bearer(token))
    body = {"results": [decided("pi-1", 1, item := inspection()), decided("pi-1", 1, item)]}
    hub_app.post("/api/v1/ingest/results", json=body, headers=bearer(token))
    # then it is live and ready, and its metrics count what it received
    assert hub_app.get("/health/live").json() == {"status": "live"}
    assert hub_app.get("/health/ready").json() == {"ready": True, "database": "ok"}
    text = hub_app.get("/metrics").text
    assert "hub_heartbeats_total 1.0" in text
    assert 'hub_results_total{outcome="accepted"} 1.0' in text
    assert 'hub_results_total{outcome="duplicate"} 1.0' in text
    # and unknown routes and methods answer JSON with a code
    missing = hub_app.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    wrong_method = hub_app.patch("/api/v1/ingest/heartbeat")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "method_not_allowed"
    assert 'hub_request_errors_total{code="not_found"} 1.0' in hub_app.get("/metrics").text


def test_the_hub_process_with_a_generated_key_and_a_device_registered_from_the_cli(tmp_path: Path) -> None:
    # given a data dir where the CLI registered a device, writing its token to a file
    data = tmp_path / "hub"
    token_file = tmp_path / "secrets" / "pi-1.token"
    env = {"HUB_DATA_DIR": str(data), "PATH": "/usr/bin:/bin"}
    cli = [sys.executable, "-m", "hub", "register", "pi-1", "--line", "L1", "--token-file", str(token_file)]
    done = subprocess.run(cli, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and token not in done.stdout
    again = subprocess.run(cli, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "device_exists" in again.stderr
    # when the hub is started without an admin key
    log = tmp_path / "hub.log"
    with run_hub(data, log=log, HUB_ADMIN_KEY="", HUB_LOG_LEVEL="info") as (base, _):
        # then it generated one in its data dir (mode 0600) and logged where, never the key
        key_file = data / "admin-key"
        key = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        # and the CLI's token writes, and the generated key administers
        beat = httpx.post(f"{base}/api/v1/ingest/heartbeat", json=heartbeat("pi-1"), headers=bearer(token))
        assert beat.status_code == 200
        listed = httpx.get(f"{base}/api/v1/devices", headers=bearer(key)).json()["devices"]
        assert [(d["device_id"], d["line"], d["version"]) for d in listed] == [("pi-1", "L1", "0.1.0")]
    output = log.read_text()
    assert str(key_file) in output and key not in output and token not in output
