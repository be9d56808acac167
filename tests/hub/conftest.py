"""Hub fixtures: the app in-process (`hub_app`, `make_hub`), a real `python -m hub` process (`run_hub`), a real
PostgreSQL 15 (`postgres`, `pg_url`), and builders for what devices send (`heartbeat`, `decided`, `verdict`)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edge_orchestrator.domain import (
    CameraResult,
    Decision,
    Detection,
    Inspection,
    ItemState,
    Prediction,
    Verdict,
)
from hub.api.app import create_app
from hub.settings import HubSettings
from tests.conftest import free_port, service
from tests.postgres import create_database, running_postgres

ADMIN_KEY = "hub-admin-key-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# Smallest valid headers: the hub checks magic bytes only (it never decodes images).
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) + b"\xff\xd9"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


HubFactory = Callable[..., TestClient]


@pytest.fixture
def make_hub(tmp_path: Path) -> Iterator[HubFactory]:
    """The real app in-process (lifespan included) on a tmp data dir; keyword arguments override settings."""
    clients: list[TestClient] = []

    def factory(**overrides: Any) -> TestClient:
        fields: dict[str, Any] = {"data_dir": tmp_path / "hub", "admin_key": ADMIN_KEY, **overrides}
        client = TestClient(create_app(HubSettings(**fields)), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def hub_app(make_hub: HubFactory) -> TestClient:
    """A hub on SQLite in a tmp folder; the admin key is ADMIN_KEY (headers: ADMIN)."""
    return make_hub()


def register(client: TestClient | Any, device_id: str, **fields: Any) -> str:
    """Register a device through the API (admin key) and return its token."""
    answer = client.post("/api/v1/devices", json={"device_id": device_id, **fields}, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["token"]
    return token


@contextmanager
def run_hub(
    data_dir: Path, *, port: int | None = None, log: Path | None = None, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real hub process (`python -m hub`) on a loopback port (a given one, to restart on the same address);
    waits until ready. The admin key is ADMIN_KEY unless HUB_ADMIN_KEY is passed (pass "" for a generated one)."""
    port = port or free_port()
    settings = {
        "HUB_DATA_DIR": str(data_dir),
        "HUB_ADMIN_KEY": ADMIN_KEY,
        "HUB_LOG_LEVEL": "warning",
        **env,
    }
    base = f"http://127.0.0.1:{port}"
    with service(["hub", "--port", str(port)], f"{base}/health/ready", settings, log=log) as proc:
        yield base, proc


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def heartbeat(device_id: str, **fields: Any) -> dict[str, Any]:
    """A Heartbeat as a device sends it (JSON)."""
    now = datetime.now(UTC)
    beat: dict[str, Any] = {
        "device_id": device_id,
        "sent_at": iso(now),
        "interval_s": 30.0,
        "version": "0.1.0",
        "station_id": "duck-line",
        "station_revision": "abc123",
        "models": [{"name": "duck-classifier", "version": "1", "cameras": ["top", "side"]}],
        "health": {"ready": True, "problems": []},
        "disk": {"fs_free_bytes": 10_000_000_000, "fs_total_bytes": 32_000_000_000, "image_bytes": 1_000_000},
        "since": iso(now - timedelta(seconds=30)),
        "counts": {"ok": 28, "ko": 2, "no_decision": 0},
        "outbox": [{"channel": "hub", "pending": 3, "parked": 0}],
    }
    beat.update(fields)
    return beat


def inspection(
    decision: Decision = Decision.OK,
    *,
    item_id: str | None = None,
    labels: tuple[str, ...] = ("beak_missing",),
    verdict: Decision | None = None,
    station_id: str = "duck-line",
) -> Inspection:
    """A decided duck: two cameras; a KO camera (top) saw `labels` with boxes."""
    now = datetime.now(UTC)
    detections = [Detection(label=label, score=0.9, box=(0.2, 0.2, 0.5, 0.5)) for label in labels]
    top = CameraResult(
        camera_id="top",
        decision=decision,
        prediction=Prediction(
            model_name="duck-detector",
            model_version="1",
            task="detection",
            detections=detections if decision == Decision.KO else [],
        ),
    )
    side = CameraResult(camera_id="side", decision=Decision.OK)
    return Inspection(
        item_id=item_id or str(uuid.uuid4()),
        station_id=station_id,
        station_revision="abc123",
        state=ItemState.DONE,
        source="api",
        part_id="duck-0001",
        accepted_at=now - timedelta(milliseconds=300),
        decided_at=now,
        decision=decision,
        cameras=[top, side],
        verdict=None
        if verdict is None
        else Verdict(decision=verdict, operator="ana", at=now, overrides=verdict != decision),
    )


def decided(device_id: str, seq: int, item: Inspection, images: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "event": "inspection.decided",
        "device_id": device_id,
        "seq": seq,
        "item": item.model_dump(mode="json"),
        "images": list(images),
    }


def verdict(device_id: str, seq: int, item: Inspection) -> dict[str, Any]:
    return {**decided(device_id, seq, item), "event": "inspection.verdict"}


# --- PostgreSQL ---------------------------------------------------------------------------------------------


@dataclass
class Postgres:
    """A real PostgreSQL server on 127.0.0.1 (trust auth, user postgres), started for the test session."""

    port: int

    def create_database(self, prefix: str) -> str:
        return create_database(self.port, f"{prefix}_{uuid.uuid4().hex[:8]}".lower())


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """PostgreSQL 15 from Debian, in a temporary folder; a missing server is a failure, never a skip."""
    try:
        with running_postgres(durable=False) as port:
            yield Postgres(port)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend (PostgreSQL: a new database on the session's server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    postgres: Postgres = request.getfixturevalue("postgres")
    return postgres.create_database(f"hub_{request.module.__name__.rsplit('.', 1)[-1]}")


@pytest.fixture(scope="module")
def pg_url(postgres: Postgres, request: pytest.FixtureRequest) -> str:
    """A fresh database of the session's PostgreSQL for this test module (SQLAlchemy URL)."""
    return postgres.create_database(f"hub_{request.module.__name__.rsplit('.', 1)[-1]}")


def wait_until(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not become true in time")
        time.sleep(interval)
