"""MQTT against a real mosquitto on loopback: results, retained status and last will, triggers and recipes,
and a broker (and an orchestrator) restarted mid-run with nothing lost and nothing out of order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
import yaml

from tests.conftest import AUTH, duck_station, free_port, install_station, mosquitto, run_orchestrator

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
PREFIX = "edge/dev-1"


class Listener:
    """What an MES subscribed to the device's topics receives; a persistent session that survives restarts."""

    def __init__(
        self, port: int, client_id: str = "mes", before: list[tuple[str, dict[str, Any], bool]] | None = None
    ) -> None:
        self.port = port
        self.client_id = client_id
        self.messages: list[tuple[str, dict[str, Any], bool]] = before if before is not None else []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier=self.client_id, clean_session=False, timeout=5
                ) as client:
                    await client.subscribe(f"{PREFIX}/#", qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        payload = (
                            bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
                        )
                        self.messages.append((str(message.topic), json.loads(payload), bool(message.retain)))
                        self._arrived.set()
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.2)

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [payload for t, payload, _ in self.messages if t == f"{PREFIX}/{topic}"]

    async def until(self, check: Callable[[], bool], within: float = 20.0) -> None:
        """Wait (at most `within` seconds) until check() holds, re-checking as messages arrive."""
        async with asyncio.timeout(within):
            while not check():
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_for(
        self, topic: str, predicate: Callable[[dict[str, Any]], bool] = lambda p: True, within: float = 20.0
    ) -> dict[str, Any]:
        await self.until(lambda: any(predicate(p) for p in self.on(topic)), within)
        return next(p for p in self.on(topic) if predicate(p))

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self.connected.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.fixture
def line(tmp_path: Path) -> Iterator[dict[str, Any]]:
    stations = tmp_path / "stations"
    install_station(stations, duck_station("duck-line"))
    install_station(stations, duck_station("duck-line-b"))
    port = free_port()
    integrations = tmp_path / "integrations.yaml"
    integrations.write_text(
        yaml.safe_dump(
            {
                "recipes": {1: "duck-line", 2: "duck-line-b"},
                "mqtt": {"host": "127.0.0.1", "port": port, "keepalive_s": 5, "reconnect_max_s": 0.5},
            }
        )
    )
    yield {"tmp": tmp_path, "stations": stations, "port": port, "integrations": integrations}


@contextlib.contextmanager
def orchestrator(line: dict[str, Any], model_server: str) -> Iterator[tuple[str, Any]]:
    with run_orchestrator(
        line["tmp"] / "data",
        line["stations"],
        model_server,
        default_station="duck-line",
        EDGE_ORCHESTRATOR_DEVICE_ID="dev-1",
        EDGE_ORCHESTRATOR_INTEGRATIONS_FILE=str(line["integrations"]),
    ) as running:
        yield running


async def trigger(base: str, part_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{base}/api/v1/inspections?wait=20", json={"part_id": part_id}, headers=AUTH
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


async def get(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        body: dict[str, Any] = (await client.get(url, headers=AUTH)).json()
        return body


@contextlib.asynccontextmanager
async def publisher(port: int) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client("127.0.0.1", port, identifier="plc-test", timeout=5) as client:
        yield client


async def test_results_status_triggers_and_recipes(line: dict[str, Any], model_server: str) -> None:
    with mosquitto(line["port"], line["tmp"] / "broker"):
        async with Listener(line["port"]) as mes:
            with orchestrator(line, model_server) as (base, proc):
                # Given the device is up: its retained status says online, with the active station
                status = await mes.wait_for("status", lambda p: p["state"] == "online")
                assert status["device_id"] == "dev-1" and status["station_id"] == "duck-line"
                system = await get(f"{base}/api/v1/system")
                assert {
                    "name": "mqtt",
                    "up": True,
                    "state": "connected",
                    "detail": None,
                    "results": None,
                } in (system["integrations"])

                # When a decision is made through REST, it is published with the item's content
                item = await trigger(base, "R-1")
                result = await mes.wait_for("results", lambda p: p["item_id"] == item["item_id"])
                assert result["decision"] == item["decision"] and result["part_id"] == "R-1"
                assert result["device_id"] == "dev-1" and result["station_id"] == "duck-line"
                assert [c["camera_id"] for c in result["cameras"]] == [
                    c["camera_id"] for c in item["cameras"]
                ]
                assert result["timings_ms"]["total"] > 0

                async with publisher(line["port"]) as plc:
                    # When the line triggers over MQTT, the reply names the item and its result follows
                    await plc.publish(
                        f"{PREFIX}/trigger", json.dumps({"part_id": "M-1", "request_id": "a"}), qos=1
                    )
                    reply = await mes.wait_for("replies", lambda p: p.get("request_id") == "a")
                    assert reply["ok"] is True and reply["replayed"] is False
                    mqtt_result = await mes.wait_for("results", lambda p: p["item_id"] == reply["item_id"])
                    assert mqtt_result["part_id"] == "M-1" and mqtt_result["source"] == "mqtt"

                    # A repeated trigger (QoS 1 redelivery, a retry) returns the same item, never a second one
                    await plc.publish(
                        f"{PREFIX}/trigger", json.dumps({"part_id": "M-1", "request_id": "b"}), qos=1
                    )
                    again = await mes.wait_for("replies", lambda p: p.get("request_id") == "b")
                    assert (
                        again["ok"] is True
                        and again["replayed"] is True
                        and again["item_id"] == reply["item_id"]
                    )

                    # A bad payload is answered with a code, never a silent drop
                    await plc.publish(f"{PREFIX}/trigger", b'{"part_id": 5, "colour": "red"}', qos=1)
                    bad = await mes.wait_for("replies", lambda p: p.get("code") == "invalid_trigger")
                    assert bad["ok"] is False and "colour" in bad["detail"]

                    # When the line selects recipe 2, its station becomes active and the status says so
                    await plc.publish(f"{PREFIX}/recipe", json.dumps({"recipe": 2, "request_id": "c"}), qos=1)
                    switched = await mes.wait_for("replies", lambda p: p.get("request_id") == "c")
                    assert switched == {
                        "topic": f"{PREFIX}/recipe",
                        "request_id": "c",
                        "ok": True,
                        "station_id": "duck-line-b",
                    }
                    await mes.wait_for("status", lambda p: p["station_id"] == "duck-line-b")
                    active = await get(f"{base}/api/v1/stations/active")
                    assert active["station"]["id"] == "duck-line-b"

                    await plc.publish(f"{PREFIX}/recipe", json.dumps({"recipe": 9, "request_id": "d"}), qos=1)
                    unknown = await mes.wait_for("replies", lambda p: p.get("request_id") == "d")
                    assert unknown["ok"] is False and unknown["code"] == "unknown_recipe"

                # When the orchestrator stops cleanly it says offline itself (retained)
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
                offline = await mes.wait_for("status", lambda p: p["state"] == "offline")
                assert offline["device_id"] == "dev-1"

            # And the last will says offline when the device dies without a word
            with orchestrator(line, model_server) as (base, proc):
                count = len([p for p in mes.on("status") if p["state"] == "offline"])
                await mes.wait_for(
                    "status", lambda p: p["state"] == "online" and p["station_id"] == "duck-line-b"
                )
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                # keepalive 5 s: the broker notices within 7.5 s
                await mes.until(lambda: len([p for p in mes.on("status") if p["state"] == "offline"]) > count)


async def test_broker_and_device_restarts_lose_nothing_and_keep_order(
    line: dict[str, Any], model_server: str
) -> None:
    broker_dir = line["tmp"] / "broker"
    decided: list[str] = []
    seen: list[tuple[str, dict[str, Any], bool]] = []  # what the MES received, across its reconnections
    with mosquitto(line["port"], broker_dir) as broker:
        async with Listener(line["port"], before=seen) as mes:
            with orchestrator(line, model_server) as (base, proc):
                # Given results flowing while the broker is up
                for n in range(5):
                    decided.append((await trigger(base, f"A-{n}"))["item_id"])
                await mes.wait_for("results", lambda p: p["item_id"] == decided[-1])
                # When the broker stops, the line keeps inspecting: results wait in the outbox, on disk
                broker.terminate()
                broker.wait(timeout=10)
                for n in range(10):
                    decided.append((await trigger(base, f"B-{n}"))["item_id"])
                system = await get(f"{base}/api/v1/system")
                assert system["outbox"][0]["channel"] == "mqtt" and system["outbox"][0]["pending"] >= 10
                [link] = system["integrations"]
                assert (link["name"], link["up"], link["state"]) == ("mqtt", False, "disconnected")
                async with httpx.AsyncClient(timeout=10) as client:
                    metrics = (await client.get(f"{base}/metrics")).text
                assert 'edge_integration_up{link="mqtt"} 0.0' in metrics
                # And when it comes back, the same device reconnects and delivers them
                with mosquitto(line["port"], broker_dir) as again:
                    await mes.until(lambda: set(decided) <= {p["item_id"] for p in mes.on("results")}, 30)
                    # Then the broker stops again, and this time the device dies too (kill -9) with results queued
                    again.terminate()
                    again.wait(timeout=10)
                for n in range(5):
                    decided.append((await trigger(base, f"C-{n}"))["item_id"])
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    with mosquitto(line["port"], broker_dir):
        async with Listener(line["port"], before=seen) as mes:
            with orchestrator(line, model_server) as (base, _):
                # When both are back, everything is delivered, then new results follow, in decision order
                for n in range(5):
                    decided.append((await trigger(base, f"D-{n}"))["item_id"])
                await mes.until(lambda: set(decided) <= {p["item_id"] for p in mes.on("results")}, 30)
                received = [p["item_id"] for p in mes.on("results")]
                first_seen = list(dict.fromkeys(received))
                # Then nothing is lost or out of order (duplicates are allowed: at-least-once, dedupe by item id)
                assert [i for i in first_seen if i in decided] == decided
                system = await get(f"{base}/api/v1/system")
                assert all(channel["pending"] == 0 for channel in system["outbox"])
