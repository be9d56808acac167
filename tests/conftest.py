"""Shared test fixtures: copies of the real .tflite fixture models, images, and running servers."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from edge_model_serving.api import create_app
from edge_model_serving.settings import ServingSettings

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_MODELS = FIXTURES / "models"
REPO = Path(__file__).parent.parent


def encode(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def solid(bgr: tuple[int, int, int], width: int = 32, height: int = 32) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[...] = bgr
    return image


RED, GREEN, BLUE = (0, 0, 255), (0, 255, 0), (255, 0, 0)
PNG_HEADERS = {"content-type": "image/png"}


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A private copy of the fixture models: tests may add, break or remove versions."""
    target = tmp_path / "models"
    shutil.copytree(FIXTURE_MODELS, target)
    return target


def wait_ready(client: TestClient | httpx.Client, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("the model server did not become ready")


ClientFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(models_dir: Path) -> Iterator[ClientFactory]:
    """Start the real app in-process (lifespan included) with settings overrides; waits until ready."""
    clients: list[TestClient] = []

    def factory(**overrides: Any) -> TestClient:
        fields: dict[str, Any] = {
            "models_dir": models_dir,
            "watch_interval_s": 0,
            "num_threads": 1,
            **overrides,
        }
        settings = ServingSettings(**fields)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        wait_ready(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def service(
    args: list[str], ready_url: str, env: dict[str, str], timeout: float = 60.0, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A real service process (`python -m <args>`) started from the repo; yields once ready_url answers 200.

    Its output goes to `log` when given (for tests of what it logs). Stopped with SIGTERM (graceful), then
    SIGKILL if it does not stop in time.
    """
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("wb")) if log is not None else None
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
        )
        yield from _until_stopped(proc, ready_url, timeout)


def _until_stopped(
    proc: subprocess.Popen[bytes], ready_url: str, timeout: float
) -> Iterator[subprocess.Popen[bytes]]:
    try:
        wait_http(ready_url, proc, timeout)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextmanager
def serve(models_dir: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The real model server process (`python -m edge_model_serving`) on a loopback port."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = {"EDGE_SERVING_WATCH_INTERVAL_S": "0", "EDGE_SERVING_LOG_LEVEL": "warning", **env}
    args = ["edge_model_serving", "--models-dir", str(models_dir), "--port", str(port)]
    with service(args, f"{base}/health/ready", settings) as proc:
        yield base, proc


@pytest.fixture(scope="session")
def model_server() -> Iterator[str]:
    """One real model server on the bundled duck models, shared by every test that only reads it."""
    with serve(REPO / "models") as (base, _):
        yield base


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    """One real server process on the (read-only) fixture models for a test module; yields its base URL."""
    with serve(FIXTURE_MODELS) as (base, _):
        yield base


DEMO_FRAMES = REPO / "demo" / "duck-line"


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0, status: int = 200) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == status:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer {status} (process exit code {proc.poll()})")
        time.sleep(0.05)


@contextmanager
def run_orchestrator(
    data_dir: Path, stations_dir: Path, model_url: str, *, default_station: str | None = None, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The real orchestrator process (`python -m edge_orchestrator`) on a loopback port; waits until live."""
    port = free_port()
    settings = {
        "EDGE_API_KEY": ORCHESTRATOR_KEY,
        "EDGE_ORCHESTRATOR_DATA_DIR": str(data_dir),
        "EDGE_ORCHESTRATOR_STATIONS_DIR": str(stations_dir),
        "EDGE_ORCHESTRATOR_MODEL_SERVER_URL": model_url,
        "EDGE_ORCHESTRATOR_LOG_LEVEL": "warning",
        "EDGE_ORCHESTRATOR_RETENTION_INTERVAL_S": "0",
        **({"EDGE_ORCHESTRATOR_DEFAULT_STATION": default_station} if default_station else {}),
        **env,
    }
    base = f"http://127.0.0.1:{port}"
    with service(["edge_orchestrator", "--port", str(port)], f"{base}/health/live", settings) as proc:
        yield base, proc


ORCHESTRATOR_KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ORCHESTRATOR_KEY}"}


def duck_station(station_id: str = "duck-line", *, fps: float | None = None, **extra: Any) -> dict[str, Any]:
    """The demo station with absolute replay paths (so it can be installed anywhere)."""
    station: dict[str, Any] = yaml.safe_load(
        (REPO / "deployment" / "stations" / "duck-line.yaml").read_text()
    )
    station["id"] = station_id
    for camera in station["cameras"]:
        camera["source"]["path"] = str(DEMO_FRAMES / camera["id"])
        if fps is not None:
            camera["source"]["fps"] = fps
    station.update(extra)
    return station


def install_station(stations_dir: Path, station: dict[str, Any]) -> Path:
    stations_dir.mkdir(parents=True, exist_ok=True)
    path = stations_dir / f"{station['id']}.yaml"
    path.write_text(yaml.safe_dump(station, sort_keys=False))
    return path


MOSQUITTO = Path("/usr/sbin/mosquitto")


@contextmanager
def mosquitto(port: int, data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real Debian mosquitto on 127.0.0.1:port, persistent in data_dir (so it can be restarted mid-test)."""
    if not MOSQUITTO.exists():
        pytest.fail(
            "mosquitto is not installed: run `make test` (it installs it) or apt-get install mosquitto"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "mosquitto.conf"
    # `user root`: started as root, mosquitto would switch to the `mosquitto` user, which cannot write its
    # persistence file here, and persistent sessions would silently not survive a restart.
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\nuser root\n"
        f"persistence_location {data_dir}/\nautosave_interval 1\nlog_type error\n"
    )
    proc = subprocess.Popen([str(MOSQUITTO), "-c", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"mosquitto did not start on {port}: {err}")
        time.sleep(0.05)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
