"""Webhooks against a real HTTP receiver on loopback: signatures, retries with backoff, order, parking."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from edge_orchestrator.integrations.webhooks import sign, verify
from tests.conftest import AUTH, duck_station, free_port, install_station, run_orchestrator

pytestmark = pytest.mark.slow
SECRET = "whsec-test-0123456789"


class Receiver:
    """An MES endpoint: records every request; `answer(body) -> status` decides what it replies."""

    def __init__(self, port: int, answer: Callable[[dict[str, Any], int], int]) -> None:
        self.port = port
        self.answer = answer
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.answer(json.loads(body), len(receiver.requests))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def delivered(self) -> list[str]:
        """Item ids acknowledged (2xx), in the order they arrived, without repeats."""
        ids = [json.loads(body)["item_id"] for _, body, status in self.requests if 200 <= status < 300]
        return list(dict.fromkeys(ids))


@contextlib.contextmanager
def line(tmp_path: Path, model_server: str, port: int, **webhook: Any) -> Iterator[str]:
    stations = tmp_path / "stations"
    install_station(stations, duck_station("duck-line"))
    integrations = tmp_path / "integrations.yaml"
    hook = {
        "name": "mes",
        "url": f"http://127.0.0.1:{port}/hooks/inspections",
        "secret": {"env": "MES_WEBHOOK_SECRET"},
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.5,
        **webhook,
    }
    integrations.write_text(yaml.safe_dump({"webhooks": [hook]}))
    with run_orchestrator(
        tmp_path / "data",
        stations,
        model_server,
        default_station="duck-line",
        MES_WEBHOOK_SECRET=SECRET,
        EDGE_ORCHESTRATOR_INTEGRATIONS_FILE=str(integrations),
    ) as (base, _):
        yield base


def trigger(base: str, part_id: str) -> str:
    response = httpx.post(
        f"{base}/api/v1/inspections?wait=20", json={"part_id": part_id}, headers=AUTH, timeout=30
    )
    assert response.status_code == 200, response.text
    return str(response.json()["item_id"])


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_signed_in_order_and_retried_until_the_receiver_is_back(tmp_path: Path, model_server: str) -> None:
    port = free_port()
    with line(tmp_path, model_server, port) as base:
        # Given the receiver is down: the line keeps inspecting, results wait in the outbox
        decided = [trigger(base, f"W-{n}") for n in range(4)]
        # When it comes back answering 503 to its first three requests, then 200
        with Receiver(port, lambda body, n: 503 if n < 3 else 200) as receiver:
            decided += [trigger(base, f"W-{n}") for n in range(4, 8)]
            wait_until(lambda: set(decided) <= set(receiver.delivered()))
        # Then every decision arrived once acknowledged, in decision order, after the retries
        assert receiver.delivered() == decided
        assert [status for _, _, status in receiver.requests[:3]] == [503, 503, 503]
        # And every request is signed over its exact body, with the item id to deduplicate on
        for headers, body, _ in receiver.requests:
            assert verify(SECRET, headers["x-edge-signature"], body)
            assert not verify("another-secret", headers["x-edge-signature"], body)
            assert not verify(SECRET, headers["x-edge-signature"], body.replace(b'"W-', b'"X-'))
            assert headers["x-edge-delivery"] == json.loads(body)["item_id"]
            assert headers["x-edge-event"] == "inspection.decided"
            assert headers["content-type"] == "application/json"
        first = json.loads(receiver.requests[-1][1])
        assert first["event"] == "inspection.decided" and first["decision"] in ("OK", "KO", "NO_DECISION")


def test_a_rejected_message_is_parked_and_the_queue_moves_on(tmp_path: Path, model_server: str) -> None:
    port = free_port()
    # Given a receiver that refuses one part for good (400) and takes the others
    with (
        Receiver(port, lambda body, n: 400 if body["part_id"] == "BAD" else 200) as receiver,
        line(tmp_path, model_server, port, max_attempts=3) as base,
    ):
        decided = [trigger(base, part) for part in ("P-1", "BAD", "P-2")]
        wait_until(lambda: decided[2] in receiver.delivered())
        # Then the refused one was tried max_attempts times, parked (kept, reported), and the next delivered
        assert receiver.delivered() == [decided[0], decided[2]]
        assert sum(1 for _, body, _ in receiver.requests if json.loads(body)["part_id"] == "BAD") == 3
        outbox = httpx.get(f"{base}/api/v1/system", headers=AUTH).json()["outbox"]
        assert outbox == [
            {"channel": "webhook:mes", "pending": 0, "parked": 1, "oldest_pending_at": None, "dropped": 0}
        ]
        metrics = httpx.get(f"{base}/metrics").text
        assert 'edge_outbox_parked{channel="webhook:mes"} 1.0' in metrics
        [link] = httpx.get(f"{base}/api/v1/system", headers=AUTH).json()["integrations"]
        assert (link["name"], link["up"], link["state"]) == ("webhook:mes", True, "delivering")


def test_signature_checks() -> None:
    body = b'{"item_id": "x"}'
    now = 1_700_000_000
    header = sign(SECRET, now, body)
    assert verify(SECRET, header, body, now=now + 10)
    assert not verify(SECRET, header, body, now=now + 3600)  # too old: a replayed request
    assert not verify(SECRET, "t=1,v1=zz", body, now=now)
    assert not verify(SECRET, "garbage", body, now=now)
