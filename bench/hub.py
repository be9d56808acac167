"""Benchmark: what one hub instance sustains from a simulated fleet (heartbeats, results, images per second).

`python -m bench.hub [--out DIR] [--quick] [--postgres]` starts the real hub (`python -m hub`, SQLite in a
temporary folder; with --postgres also a temporary PostgreSQL 15 server from Debian's packages, as a second
run), registers D simulated devices through the admin API and drives it from this process with C concurrent
devices sending back to back (asyncio + httpx, one keep-alive connection per device), phase after phase:
- heartbeats: POST /api/v1/ingest/heartbeat (a full Heartbeat: station, two models, disk, outbox);
- results one by one: POST /api/v1/ingest/results with one result (a device in steady state, one duck a
  second, sends each result as it is decided): a two-camera item with detections, like the duck line's;
- results in batches of 100: a device draining its outbox after an outage;
- images: PUT /api/v1/ingest/images/{item}/{camera} with a real duck frame (~40 kB).
For each: requests and items per second, latency p50/p99, and the hub's CPU seconds per 1 000 items (the
figure that does not depend on what else the machine does; the client shares the two cores). Then the fleet
one instance carries at the product's rates (a heartbeat every 30 s, one result a second per device, images
for KO/NO_DECISION (~30 % on the demo line) and 5 % of OK). Writes hub.json and hub.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.orchestrator import DEMO, client_cpu_s, cpu_s, machine_busy_s
from bench.serving import REPO, machine, percentile
from tests.postgres import create_database, running_postgres

HEARTBEAT_S = 30.0  # the device default
IMAGE_SHARE = 0.30 + 0.70 * 0.05  # demo line: ~30 % KO/NO_DECISION (all images) + 5 % of the OK ones


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- processes ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL server on loopback, durable (fsync on) as a real fleet's would be."""
    with running_postgres(durable=True) as port:
        yield create_database(port, "hub")


@contextlib.contextmanager
def running_hub(work: Path, admin_key: str, database_url: str | None) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {
        "HUB_DATA_DIR": str(work / "hub"),
        "HUB_ADMIN_KEY": admin_key,
        "HUB_LOG_LEVEL": "warning",
        "PATH": "/usr/bin:/bin",
    }
    if database_url:
        env["HUB_DATABASE_URL"] = database_url
    log = (work / "hub.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the hub exited ({proc.returncode}): see {work / 'hub.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the hub did not become ready in 60 s")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
        log.close()


# --- what the devices send ---------------------------------------------------------------------------


def heartbeat(device_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "device_id": device_id,
        "sent_at": now.isoformat(),
        "interval_s": HEARTBEAT_S,
        "version": "0.1.0",
        "station_id": "duck-line",
        "station_revision": "3f2a9c",
        "models": [
            {"name": "duck-detector", "version": "1", "cameras": ["top"]},
            {"name": "duck-classifier", "version": "1", "cameras": ["side"]},
        ],
        "health": {"ready": True, "problems": []},
        "disk": {
            "fs_free_bytes": 20_000_000_000,
            "fs_total_bytes": 32_000_000_000,
            "image_bytes": 900_000_000,
        },
        "since": (now - timedelta(seconds=HEARTBEAT_S)).isoformat(),
        "counts": {"ok": 21, "ko": 8, "no_decision": 1},
        "outbox": [{"channel": "hub", "pending": 0, "parked": 0, "dropped": 0}],
    }


def _camera(camera_id: str, decision: str, model: str, now: str) -> dict[str, Any]:
    return {
        "camera_id": camera_id,
        "decision": decision,
        "reasons": [f"{model}: 1 defect above 0.50" if decision == "KO" else f"{model}: nothing above 0.50"],
        "model_name": model,
        "model_version": "1",
        "prediction": {
            "model_name": model,
            "model_version": "1",
            "task": "detection",
            "detections": [{"label": "paint_smear", "score": 0.87, "box": [0.31, 0.42, 0.48, 0.55]}]
            if decision == "KO"
            else [],
            "timings_ms": {"decode": 1.2, "invoke": 9.8, "postprocess": 0.4},
        },
        "rules": [{"rule": "max_defects", "decision": decision, "reason": "0 allowed"}],
        "image": {"width": 640, "height": 480, "bytes": 41_000, "stored": True},
        "captured_at": now,
        "timings_ms": {"capture": 3.1, "predict": 12.4},
    }


class Items:
    """Result bodies with fresh item ids (every one a new item for the hub)."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.seq = 0

    def result(self) -> dict[str, Any]:
        self.seq += 1
        now = datetime.now(UTC).isoformat()
        decision = "KO" if self.seq % 3 == 0 else "OK"
        item = {
            "item_id": str(uuid.uuid4()),
            "station_id": "duck-line",
            "station_revision": "3f2a9c",
            "state": "done",
            "source": "plc",
            "part_id": f"D-{self.seq:08d}",
            "accepted_at": now,
            "decided_at": now,
            "decision": decision,
            "reasons": ["top: 1 defect" if decision == "KO" else "every camera OK"],
            "cameras": [
                _camera("top", decision, "duck-detector", now),
                _camera("side", "OK", "duck-classifier", now),
            ],
            "timings_ms": {"total": 38.0},
        }
        return {"event": "inspection.decided", "device_id": self.device_id, "seq": self.seq, "item": item}


# --- the load ----------------------------------------------------------------------------------------


@dataclass
class Device:
    device_id: str
    token: str
    items: Items


Send = Callable[[httpx.AsyncClient, Device], Awaitable[tuple[int, int]]]  # -> (status, items)


async def phase(url: str, hub_pid: int, devices: list[Device], seconds: float, send: Send) -> dict[str, Any]:
    """Every device sends back to back for `seconds`; any non-2xx answer is counted and reported."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    items = 0
    stop_at = time.monotonic() + seconds

    async def device_loop(device: Device) -> None:
        nonlocal items
        headers = {"Authorization": f"Bearer {device.token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                status, n = await send(client, device)
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    items += n

    hub_cpu, client_cpu, busy, started = cpu_s(hub_pid), client_cpu_s(), machine_busy_s(), time.monotonic()
    async with asyncio.TaskGroup() as group:
        for device in devices:
            group.create_task(device_loop(device))
    wall = time.monotonic() - started
    hub_cpu, client_cpu = cpu_s(hub_pid) - hub_cpu, client_cpu_s() - client_cpu
    latencies.sort()
    return {
        "requests": len(latencies),
        "items": items,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 1),
        "items_per_s": round(items / wall, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "hub_cpu_s": round(hub_cpu, 2),
        "hub_cpu_ms_per_1000_items": round(hub_cpu / max(items, 1) * 1_000_000, 1),
        "hub_cores_busy": round(hub_cpu / wall, 2),
        "client_cpu_s": round(client_cpu, 2),
        "machine_cores_busy": round((machine_busy_s() - busy) / wall, 2),
    }


async def send_heartbeat(client: httpx.AsyncClient, device: Device) -> tuple[int, int]:
    response = await client.post("/api/v1/ingest/heartbeat", json=heartbeat(device.device_id))
    return response.status_code, 1


def send_results(batch: int) -> Send:
    async def send(client: httpx.AsyncClient, device: Device) -> tuple[int, int]:
        body = {"results": [device.items.result() for _ in range(batch)]}
        response = await client.post("/api/v1/ingest/results", json=body)
        return response.status_code, batch

    return send


def send_image(jpeg: bytes) -> Send:
    async def send(client: httpx.AsyncClient, device: Device) -> tuple[int, int]:
        path = f"/api/v1/ingest/images/{uuid.uuid4()}/top"
        response = await client.put(path, content=jpeg, headers={"Content-Type": "image/jpeg"})
        return response.status_code, 1

    return send


async def register(url: str, admin_key: str, count: int) -> list[Device]:
    devices = []
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}) as client:
        for n in range(count):
            device_id = f"bench-{n:03d}"
            response = await client.post(
                "/api/v1/devices", json={"device_id": device_id, "line": f"line-{n % 4}", "site": "bench"}
            )
            response.raise_for_status()
            devices.append(Device(device_id, response.json()["token"], Items(device_id)))
    return devices


async def bench_backend(url: str, hub_pid: int, admin_key: str, args: argparse.Namespace) -> dict[str, Any]:
    devices = await register(url, admin_key, args.devices)
    jpeg = next(iter(sorted((DEMO / "top").glob("*.jpg")))).read_bytes()
    phases: dict[str, Any] = {}
    plan: list[tuple[str, Send]] = [
        ("heartbeats", send_heartbeat),
        ("results_single", send_results(1)),
        ("results_batch_100", send_results(100)),
        ("images", send_image(jpeg)),
    ]
    for name, send in plan:
        await phase(url, hub_pid, devices, 1.0, send)  # warm-up: connections, caches, first pages
        phases[name] = await phase(url, hub_pid, devices, args.seconds, send)
        print(f"  {name}: {json.dumps({k: phases[name][k] for k in ('items_per_s', 'p50_ms', 'p99_ms')})}")
    phases["image_bytes"] = len(jpeg)
    phases["fleet"] = fleet_capacity(phases)
    return phases


def fleet_capacity(phases: dict[str, Any]) -> dict[str, Any]:
    """Devices one instance carries at the product's rates, from the hub CPU each item costs (one core)."""
    per_device_cpu_ms = (
        phases["heartbeats"]["hub_cpu_ms_per_1000_items"] / 1000 / HEARTBEAT_S
        + phases["results_single"]["hub_cpu_ms_per_1000_items"] / 1000 * 1.0
        + phases["images"]["hub_cpu_ms_per_1000_items"] / 1000 * 2 * IMAGE_SHARE  # two cameras
    )  # hub CPU ms per second of one device
    return {
        "hub_cpu_ms_per_device_second": round(per_device_cpu_ms, 3),
        "devices_per_hub_core": int(1000 / per_device_cpu_ms) if per_device_cpu_ms else None,
        "assumptions": f"1 result/s per device, a heartbeat every {HEARTBEAT_S:.0f} s, images for "
        f"{IMAGE_SHARE:.0%} of items x 2 cameras",
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Hub ingest: one instance, simulated devices",
        "",
        f"Machine: {results['machine']}. Client: {results['client']}.",
        "",
        "| backend | phase | items/s | requests/s | p50 ms | p99 ms | hub CPU ms / 1000 items | hub cores | non-2xx |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for backend, phases in results["backends"].items():
        for name in ("heartbeats", "results_single", "results_batch_100", "images"):
            p = phases[name]
            bad = sum(v for k, v in p["statuses"].items() if not k.startswith("2"))
            lines.append(
                f"| {backend} | {name} | {p['items_per_s']} | {p['requests_per_s']} | {p['p50_ms']} | "
                f"{p['p99_ms']} | {p['hub_cpu_ms_per_1000_items']} | {p['hub_cores_busy']} | {bad} |"
            )
    lines += ["", "Fleet one hub core carries (from the hub's CPU per item, not from wall-clock rates):", ""]
    for backend, phases in results["backends"].items():
        fleet = phases["fleet"]
        lines.append(f"- {backend}: {fleet['devices_per_hub_core']} devices ({fleet['assumptions']}).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s per phase")
    parser.add_argument("--seconds", type=float, help="duration of each phase; default 15")
    parser.add_argument("--devices", type=int, default=8, help="simulated devices sending concurrently")
    parser.add_argument("--postgres", action="store_true", help="also run against a temporary PostgreSQL")
    args = parser.parse_args()
    args.seconds = args.seconds or (3.0 if args.quick else 15.0)
    admin_key = secrets.token_urlsafe(24)
    results: dict[str, Any] = {
        "machine": machine(),
        "client": f"{args.devices} devices in this process (asyncio + httpx, one connection each), back to back",
        "settings": {"seconds": args.seconds, "devices": args.devices},
        "backends": {},
    }
    backends = ["sqlite", "postgresql"] if args.postgres else ["sqlite"]
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix=f"bench-hub-{backend}-") as tmp:
            work = Path(tmp)
            with contextlib.ExitStack() as stack:
                database_url = stack.enter_context(postgres()) if backend == "postgresql" else None
                url, pid = stack.enter_context(running_hub(work, admin_key, database_url))
                print(f"{backend}:")
                results["backends"][backend] = asyncio.run(bench_backend(url, pid, admin_key, args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hub.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (args.out / "hub.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
