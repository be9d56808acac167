"""Retried triggers never inspect twice: Idempotency-Key, or else the part id, returns the first item."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import AUTH, duck_station, install_station, run_orchestrator

URL = "/api/v1/inspections"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, model_server: str) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("idempotency")
    install_station(tmp / "stations", duck_station("duck-line"))
    with run_orchestrator(tmp / "data", tmp / "stations", model_server, default_station="duck-line") as (
        url,
        _,
    ):
        yield url


def post(
    base: str, body: dict[str, object] | None = None, key: str | None = None, wait: bool = True
) -> httpx.Response:
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    return httpx.post(f"{base}{URL}{'?wait=20' if wait else ''}", json=body, headers=headers, timeout=30)


def test_a_repeated_key_returns_the_first_item(base: str) -> None:
    first = post(base, {"part_id": "K-1"}, key="mes-req-001")
    again = post(base, {"part_id": "K-1"}, key="mes-req-001", wait=False)
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    # Then the same decided item, marked as a replay, with nothing pending (200, not 202)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["item_id"] == first.json()["item_id"]
    assert again.headers["location"] == f"{URL}/{first.json()['item_id']}"
    listed = httpx.get(f"{base}{URL}", params={"part_id": "K-1"}, headers=AUTH).json()["items"]
    assert len(listed) == 1 and listed[0]["idempotency_key"] == "mes-req-001"


def test_without_a_key_the_part_id_is_the_key(base: str) -> None:
    first = post(base, {"part_id": "K-2", "lot": "L1"})
    again = post(base, {"part_id": "K-2", "lot": "L1"})
    assert again.json()["item_id"] == first.json()["item_id"]
    # A different key for the same part is a new inspection (a deliberate re-inspection)
    other = post(base, {"part_id": "K-2", "lot": "L1"}, key="reinspect-K-2")
    assert other.json()["item_id"] != first.json()["item_id"]


def test_no_part_id_and_no_key_always_inspects(base: str) -> None:
    assert post(base).json()["item_id"] != post(base).json()["item_id"]


def test_the_same_key_for_a_different_trigger_is_a_conflict(base: str) -> None:
    post(base, {"part_id": "K-3"}, key="mes-req-003")
    response = post(base, {"part_id": "K-4"}, key="mes-req-003")
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_conflict" and "mes-req-003" in response.json()["detail"]
    post(base, {"part_id": "K-7", "lot": "L1"})
    assert post(base, {"part_id": "K-7", "lot": "L2"}).status_code == 409  # same part id, other lot


@pytest.mark.parametrize("key", [b"", b"x" * 129, b"with space", "é".encode()])
def test_a_malformed_key_is_refused(base: str, key: bytes) -> None:
    headers = [(name.encode(), value.encode()) for name, value in AUTH.items()] + [(b"Idempotency-Key", key)]
    response = httpx.post(f"{base}{URL}", headers=headers, timeout=10)
    assert response.status_code == 422 and response.json()["code"] == "validation_error"


def test_concurrent_retries_make_one_item(base: str) -> None:
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(URL, json={"part_id": "K-5"}, headers={"Idempotency-Key": "burst-1"})
                    for _ in range(8)
                )
            )

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} <= {200, 202}
    assert len({r.json()["item_id"] for r in responses}) == 1
    assert sum(1 for r in responses if "idempotent-replayed" not in r.headers) == 1
    assert len(httpx.get(f"{base}{URL}", params={"part_id": "K-5"}, headers=AUTH).json()["items"]) == 1


def test_the_key_survives_a_restart(tmp_path: Path, model_server: str) -> None:
    install_station(tmp_path / "stations", duck_station("duck-line"))
    with run_orchestrator(
        tmp_path / "data", tmp_path / "stations", model_server, default_station="duck-line"
    ) as (
        url,
        _,
    ):
        first = post(url, {"part_id": "K-6"}, key="before-restart")
    with run_orchestrator(
        tmp_path / "data", tmp_path / "stations", model_server, default_station="duck-line"
    ) as (
        url,
        _,
    ):
        again = post(url, {"part_id": "K-6"}, key="before-restart")
    assert again.json()["item_id"] == first.json()["item_id"]
    assert again.headers["idempotent-replayed"] == "true"
