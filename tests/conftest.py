"""Shared test fixtures: copies of the real .tflite fixture models, images, and running servers."""

from __future__ import annotations

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
def serve(models_dir: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The real server process (`python -m edge_model_serving`) on a loopback port."""
    port = free_port()
    proc_env = {
        **os.environ,
        "EDGE_SERVING_WATCH_INTERVAL_S": "0",
        "EDGE_SERVING_LOG_LEVEL": "warning",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_model_serving", "--models-dir", str(models_dir), "--port", str(port)],
        cwd=REPO,
        env=proc_env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the model server process did not become ready")
            time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    """One real server process on the (read-only) fixture models for a test module; yields its base URL."""
    with serve(FIXTURE_MODELS) as (base, _):
        yield base
