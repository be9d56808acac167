"""The model client against misbehaving HTTP peers on loopback: slow, failing, and nonsensical answers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edge_orchestrator.errors import ModelError, ModelTimeoutError, ModelUnavailableError
from edge_orchestrator.model_client import ModelClient
from tests.conftest import free_port


class _Peer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if "slow" in self.path:
            time.sleep(1.5)
        status, body = 200, b"{}"
        if "missing" in self.path:
            status, body = (
                404,
                json.dumps({"detail": "no model named 'missing'", "code": "model_not_found"}).encode(),
            )
        elif "garbage" in self.path:
            body = b"<html>proxy error</html>"
        elif "good" in self.path:
            body = json.dumps(
                {
                    "model_name": "good",
                    "model_version": 3,
                    "task": "classification",
                    "image": {"width": 1, "height": 1},
                    "prediction": {
                        "task": "classification",
                        "label": "ok",
                        "score": 0.9,
                        "scores": {"ok": 0.9, "ko": 0.1},
                    },
                    "timings_ms": {"total": 1.0},
                }
            ).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def peer() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Peer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def predict(base: str, name: str, timeout_s: float = 1.0) -> object:
    async def go() -> object:
        client = ModelClient(base, connect_timeout_s=0.5, max_connections=2)
        try:
            return await client.predict(name, None, b"\xff\xd8\xff", timeout_s)
        finally:
            await client.close()

    return asyncio.run(go())


def test_a_good_answer_is_parsed(peer: str) -> None:
    prediction = predict(peer, "good")
    assert getattr(prediction, "label", None) == "ok" and getattr(prediction, "model_version", None) == "3"


def test_a_slow_model_times_out_within_its_deadline(peer: str) -> None:
    start = time.monotonic()
    with pytest.raises(ModelTimeoutError, match=r"within 0\.3 s"):
        predict(peer, "slow", timeout_s=0.3)
    assert time.monotonic() - start < 1.2


def test_errors_carry_the_server_sentence_and_code(peer: str) -> None:
    with pytest.raises(ModelError, match="404: no model named 'missing' \\(model_not_found\\)"):
        predict(peer, "missing")
    with pytest.raises(ModelError, match="not a prediction"):
        predict(peer, "garbage")
    with pytest.raises(ModelUnavailableError, match="unreachable"):
        predict(f"http://127.0.0.1:{free_port()}", "good")
