"""Benchmark: the orchestrator end to end on the demo station, against the model server alone doing the same work.

`python -m bench.orchestrator [--out DIR] [--quick]` runs the real model server and orchestrator on loopback
(the duck-line station: two replay cameras, two models) and measures:
- latency: sequential `POST /api/v1/inspections?wait=10` answered 200 with the decided item (p50, p99),
  against the model server alone doing the same work: the item's two predictions sent concurrently,
  as the orchestrator does, with the same client (p50, p99);
- sustained rate: triggers without wait at a constant offered rate (wrk on a fixed schedule), stepping up
  until a rate is not sustained; each step then checks every accepted item was decided, none refused;
- memory: the orchestrator's resident memory every 1 000 of 10 000 inspections (2 000 with --quick).
Each phase starts its own processes and stops them. It writes `orchestrator.json` and `orchestrator.md`
and prints the table with the targets; only a setup failure exits non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import re
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from bench.serving import REPO, Block, block, checks_table, machine, percentile, rss_mb, start_server

DEMO = REPO / "demo" / "duck-line"
MODELS_DIR = REPO / "models"
STATIONS_DIR = REPO / "deployment" / "stations"
STATION = "duck-line"
CAMERA_MODELS = {
    "top": "duck-detector",
    "side": "duck-classifier",
}  # as in deployment/stations/duck-line.yaml
WRK_TRIGGER = Path(__file__).resolve().parent / "wrk_trigger.lua"
TRIGGERS = "/api/v1/inspections"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


# --- processes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    """The model server and the orchestrator of one phase, and how to talk to them."""

    server: subprocess.Popen[bytes]
    orchestrator: subprocess.Popen[bytes]
    model_port: int
    port: int
    key: str
    data_dir: Path

    def get(self, path: str, **params: str) -> Any:
        response = httpx.get(
            f"http://127.0.0.1:{self.port}{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30,
        )
        response.raise_for_status()
        return response.json()

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=30).text
        return parse_metrics(text)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def model_connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.model_port, timeout=30)


def ensure_free(port: int) -> None:
    """A server already on the port would answer our readiness polls and be measured instead of ours."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT leftovers are fine
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise RuntimeError(f"port {port} is in use: pick another with --port/--model-port") from exc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)  # the orchestrator lets inspections in flight finish (shutdown_grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def start_orchestrator(
    data_dir: Path,
    port: int,
    model_port: int,
    key: str,
    log_file: Path,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("EDGE_")
    }  # no stray settings of the caller
    env |= {
        "EDGE_ORCHESTRATOR_DATA_DIR": str(data_dir),
        "EDGE_ORCHESTRATOR_STATIONS_DIR": str(STATIONS_DIR),
        "EDGE_ORCHESTRATOR_DEFAULT_STATION": STATION,
        "EDGE_API_KEY": key,
        "EDGE_ORCHESTRATOR_MODEL_SERVER_URL": f"http://127.0.0.1:{model_port}",
        "EDGE_ORCHESTRATOR_LOG_LEVEL": "warning",
        "EDGE_ORCHESTRATOR_MAX_IN_FLIGHT": "64",
        **(extra_env or {}),
    }
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_orchestrator", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop(proc)
    tail = log_file.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"the orchestrator did not become ready:\n{tail}")


@contextlib.contextmanager
def running_stack(
    phase: str, model_port: int, port: int, tmp_root: Path | None, keep: bool, report: dict[str, Any]
) -> Iterator[Stack]:
    """Both processes on a fresh data directory; stopped on the way out, whatever happened."""
    for p in (model_port, port):
        ensure_free(p)
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-orchestrator-{phase}-", dir=tmp_root))
    log_file = data_dir / "orchestrator.log"
    key = secrets.token_urlsafe(24)
    server = start_server(MODELS_DIR, model_port)
    try:
        orchestrator = start_orchestrator(data_dir / "data", port, model_port, key, log_file)
        try:
            yield Stack(server, orchestrator, model_port, port, key, data_dir / "data")
        finally:
            stop(orchestrator)
    finally:
        stop(server)
        report["log"] = log_summary(log_file)
        if keep:
            report["data_dir"] = str(data_dir)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def log_summary(log_file: Path) -> dict[str, Any]:
    """Warnings and errors the orchestrator logged (it runs at level warning), without timestamps."""
    if not log_file.exists():
        return {"warnings": 0, "errors": 0, "first": []}
    lines = log_file.read_text(errors="replace").splitlines()
    levels = Counter(level for line in lines for level in re.findall(r" (WARNING|ERROR|CRITICAL) ", line)[:1])
    first: list[str] = []
    for line in lines:
        message = re.sub(r"^\S+ \S+ ", "", line)[:300]
        if message not in first and (re.search(r" (WARNING|ERROR|CRITICAL) ", line) or "Traceback" in line):
            first.append(message)
        if len(first) == 10:
            break
    return {
        "warnings": levels["WARNING"],
        "errors": levels["ERROR"] + levels["CRITICAL"],
        "tracebacks": sum("Traceback" in line for line in lines),
        "first": first,
    }


# --- readings ----------------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format: sample name with its labels → value."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def metric_sum(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def metric_delta(before: dict[str, float], after: dict[str, float], name: str) -> dict[str, float]:
    """Per label set, what a counter gained between two scrapes (non-zero only)."""
    out = {}
    for key, value in after.items():
        if key == name or key.startswith(name + "{"):
            gained = value - before.get(key, 0.0)
            if gained:
                out[key.removeprefix(name)] = gained
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine used so far (every core), to spot other load during a run."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICK


def client_cpu_s() -> float:
    """CPU seconds of this process and of its children that ended (wrk is the only one during a step)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def utcnow() -> datetime:
    return datetime.now(UTC)


def wait_drained(stack: Stack, timeout_s: float = 60.0) -> float:
    """Seconds until no inspection is in flight (the queue depth gauge is 0)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if stack.metrics().get("edge_queue_depth", 0.0) == 0:
            break
        time.sleep(0.1)
    return round(time.monotonic() - start, 2)


def window_stats(stack: Stack, since: datetime, until: datetime) -> dict[str, Any]:
    """The orchestrator's own count of the items accepted in the window, decided or not."""
    stats = stack.get("/api/v1/stats", since=since.isoformat(), until=until.isoformat())
    decided = sum(stats["counts"].values())
    return {
        "accepted": stats["total"],
        "decided": decided,
        "undecided": stats["total"] - decided,
        "counts": stats["counts"],
        "interrupted": stats["interrupted"],
        "decision_latency_ms": {k: v if v is None else round(v, 2) for k, v in stats["latency_ms"].items()},
    }


# --- latency: orchestrator vs model server -----------------------------------------------------------


def demo_pairs() -> list[tuple[bytes, bytes]]:
    """(top, side) images of the same duck: what the replay cameras send for one item."""
    top = sorted((DEMO / "top").glob("*.jpg"))
    side = sorted((DEMO / "side").glob("*.jpg"))
    return [(t.read_bytes(), s.read_bytes()) for t, s in zip(top, side, strict=True)]


def trigger_waited(conn: http.client.HTTPConnection, key: str, part_id: str) -> tuple[float, int, bytes]:
    body = json.dumps({"part_id": part_id}).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    t0 = time.perf_counter()
    conn.request("POST", f"{TRIGGERS}?wait=10", body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    return time.perf_counter() - t0, response.status, data


def predict_pair(conns: list[http.client.HTTPConnection], pair: tuple[bytes, bytes]) -> tuple[float, float]:
    """Both predictions in flight at once on their own connections; done when both answers are read.

    Returns the time and the slower answer's own `timings_ms.total` (the server's work, without HTTP)."""
    headers = {"Content-Type": "image/jpeg"}
    t0 = time.perf_counter()
    for conn, model, image in zip(conns, CAMERA_MODELS.values(), pair, strict=True):
        conn.request("POST", f"/v1/models/{model}:predict", body=image, headers=headers)
    answers = []
    for conn in conns:
        response = conn.getresponse()
        answers.append(response.read())
        if response.status != 200:
            raise RuntimeError(f"the model server answered {response.status}")
    elapsed = time.perf_counter() - t0
    return elapsed, max(float(json.loads(a)["timings_ms"]["total"]) for a in answers)


@dataclass
class Triggered:
    latencies: list[float]
    statuses: Counter[int]
    decisions: Counter[str]
    camera_errors: Counter[str]
    no_decision_reasons: Counter[str]
    stages: dict[str, list[float]]  # the item's own timings_ms, and the client time after the decision


def bench_triggers(stack: Stack, count: int, label: str, out: Triggered) -> float:
    """`count` sequential triggers with ?wait=; returns the wall time."""
    conn = stack.connection()
    trigger_waited(conn, stack.key, f"{label}-warm")  # a fresh keep-alive connection per block
    start = time.perf_counter()
    for index in range(count):
        elapsed, status, data = trigger_waited(conn, stack.key, f"{label}-{index}")
        out.statuses[status] += 1
        if status != 200:
            continue
        out.latencies.append(elapsed)
        item = json.loads(data)
        out.decisions[item["decision"]] += 1
        for camera in item["cameras"]:
            if camera["error_code"]:
                out.camera_errors[f"{camera['camera_id']}:{camera['error_code']}"] += 1
        if item["decision"] == "NO_DECISION":
            out.no_decision_reasons[" | ".join(item["reasons"][1:])[:160]] += 1
        for stage, ms in item["timings_ms"].items():
            out.stages.setdefault(stage, []).append(ms)
        served = [c["prediction"]["timings_ms"]["total"] for c in item["cameras"] if c["prediction"]]
        if served:
            out.stages.setdefault("model_server_work", []).append(max(served))
        out.stages.setdefault("client_minus_total", []).append(elapsed * 1000 - item["timings_ms"]["total"])
    wall = time.perf_counter() - start
    conn.close()
    return wall


def bench_pairs(
    stack: Stack, pairs: list[tuple[bytes, bytes]], count: int, offset: int, server_ms: list[float]
) -> list[float]:
    conns = [stack.model_connection() for _ in CAMERA_MODELS]
    predict_pair(conns, pairs[0])  # fresh keep-alive connections per block
    latencies = []
    for index in range(count):
        elapsed, work_ms = predict_pair(conns, pairs[(offset + index) % len(pairs)])
        latencies.append(elapsed)
        server_ms.append(work_ms)
    for conn in conns:
        conn.close()
    return latencies


def summary_ms(latencies_s: list[float], wall_s: float) -> dict[str, float]:
    b: Block = block(latencies_s, wall_s)
    return {
        "p50_ms": round(b["p50_ms"], 2),
        "p99_ms": round(b["p99_ms"], 2),
        "max_ms": round(max(latencies_s) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies_s) * 1000, 2),
        "requests": int(b["requests"]),
    }


def bench_latency(stack: Stack, count: int, block_size: int) -> dict[str, Any]:
    """Alternating blocks of each path, pooled: both are measured over the same minutes (the machine drifts)."""
    pairs = demo_pairs()
    warm = Triggered([], Counter(), Counter(), Counter(), Counter(), {})
    bench_triggers(stack, 30, "warm", warm)
    bench_pairs(stack, pairs, 30, 0, [])
    cpu_start = cpu_s(stack.orchestrator.pid) + cpu_s(stack.server.pid)
    machine_start, wall_start = machine_busy_s(), time.monotonic()
    orch = Triggered([], Counter(), Counter(), Counter(), Counter(), {})
    direct: list[float] = []
    direct_work_ms: list[float] = []
    walls = {"orchestrator": 0.0, "model_server": 0.0}
    blocks: dict[str, list[float]] = {"orchestrator_p99_ms": [], "model_server_p99_ms": []}
    for index in range(math.ceil(count / block_size)):
        before = len(orch.latencies)
        walls["orchestrator"] += bench_triggers(stack, block_size, f"lat{index}", orch)
        blocks["orchestrator_p99_ms"].append(round(percentile(orch.latencies[before:], 99) * 1000, 2))
        start = time.perf_counter()
        latencies = bench_pairs(stack, pairs, block_size, index * block_size, direct_work_ms)
        walls["model_server"] += time.perf_counter() - start
        direct += latencies
        blocks["model_server_p99_ms"].append(round(percentile(latencies, 99) * 1000, 2))
    stages = stack.metrics()
    stage_mean_ms = {
        stage: round(1000 * stages[f'edge_stage_seconds_sum{{stage="{stage}"}}'] / count_, 2)
        for stage in ("capture", "predict", "rules", "total", "store", "publish")
        if (count_ := stages.get(f'edge_stage_seconds_count{{stage="{stage}"}}', 0.0))
    }
    o = summary_ms(orch.latencies, walls["orchestrator"])
    ours = cpu_s(stack.orchestrator.pid) + cpu_s(stack.server.pid) - cpu_start
    other_pct = round(100 * (machine_busy_s() - machine_start - ours) / (time.monotonic() - wall_start), 1)
    m = summary_ms(direct, walls["model_server"])
    limit = 1.5 * m["p99_ms"] + 15
    return {
        "orchestrator": {
            **o,
            "statuses": dict(orch.statuses),
            "decisions": dict(orch.decisions),
            "camera_errors": dict(orch.camera_errors),
            "no_decision_reasons": dict(orch.no_decision_reasons.most_common(5)),
            "stage_mean_ms": stage_mean_ms,  # the orchestrator's own histograms (warm-up included)
            "item_timings_ms": {
                stage: {"p50": round(percentile(v, 50), 2), "p99": round(percentile(v, 99), 2)}
                for stage, v in orch.stages.items()
            },
        },
        "model_server_pair": {
            **m,
            "model_server_work_ms": {
                "p50": round(percentile(direct_work_ms, 50), 2),
                "p99": round(percentile(direct_work_ms, 99), 2),
            },
        },
        "blocks": blocks,
        "p99_ratio": round(o["p99_ms"] / m["p99_ms"], 3),
        "p50_difference_ms": round(o["p50_ms"] - m["p50_ms"], 2),
        "p99_limit_ms": round(limit, 2),
        "p99_ok": o["p99_ms"] <= limit,
        "other_cpu_percent": other_pct,  # the rest of the machine, bench client included (one client thread)
    }


# --- sustained rate and memory: triggers on a fixed schedule --------------------------------------------


class Load(Protocol):
    """Triggers being sent on a schedule: `count` of them at `rate` per second."""

    def running(self) -> bool: ...

    def summary(self) -> dict[str, Any]: ...


class WrkLoad:
    """wrk and wrk_trigger.lua: C sends the requests, so the load generator barely takes CPU from the servers."""

    def __init__(self, stack: Stack, rate: float, count: int, prefix: str, connections: int) -> None:
        seconds = math.ceil(count / rate) + 1  # idle at the end under uvicorn's 5 s keep-alive
        command = [
            "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency",
            "-s", str(WRK_TRIGGER), f"http://127.0.0.1:{stack.port}{TRIGGERS}", "--", str(rate), str(count), prefix,
        ]  # fmt: skip
        env = {**os.environ, "BENCH_API_KEY": stack.key}
        self._proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def running(self) -> bool:
        return self._proc.poll() is None

    def summary(self) -> dict[str, Any]:
        stdout, stderr = self._proc.communicate()
        if self._proc.returncode != 0 or not stdout.strip():
            raise RuntimeError(f"wrk failed ({self._proc.returncode}): {stderr.strip()[-500:]}")
        summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        return {
            "sent": summary["requests"],
            "accepted_202": summary["accepted"],
            "refused_429": summary["refused"],
            "other_status": summary["other_status"],
            "socket_errors": {k: v for k, v in summary["errors"].items() if k != "status" and v},
            "trigger_p50_ms": summary["p50_us"] / 1000,
            "trigger_p99_ms": summary["p99_us"] / 1000,
            "trigger_max_ms": summary["max_us"] / 1000,
            "late_slots": summary["late_slots"],
            "late_max_ms": summary["late_max_ms"],
        }


class ThreadLoad:
    """The same schedule without wrk: threads with keep-alive connections, each claiming the next slot.

    The stdlib client is the leanest Python one, but it still takes a few % of a core from the servers."""

    def __init__(self, stack: Stack, rate: float, count: int, prefix: str, connections: int) -> None:
        self._stack, self._rate, self._count, self._prefix = stack, rate, count, prefix
        self._lock = threading.Lock()
        self._next = 0
        self._start = time.monotonic() + 0.1
        self._latencies: list[float] = []
        self._statuses: Counter[int] = Counter()
        self._errors: Counter[str] = Counter()
        self._late: list[float] = []
        self._threads = [
            threading.Thread(target=self._client, daemon=True) for _ in range(min(connections, 8))
        ]
        for thread in self._threads:
            thread.start()

    def _client(self) -> None:
        headers = {"Authorization": f"Bearer {self._stack.key}", "Content-Type": "application/json"}
        conn = self._stack.connection()
        while True:
            with self._lock:
                index, self._next = self._next, self._next + 1
            if index >= self._count:
                break
            wait = self._start + index / self._rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -0.005:
                self._late.append(-wait * 1000)
            body = json.dumps({"part_id": f"{self._prefix}-{index}"}).encode()
            t0 = time.perf_counter()
            try:
                conn.request("POST", TRIGGERS, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                with self._lock:
                    self._errors[type(exc).__name__] += 1
                continue
            with self._lock:
                self._latencies.append(time.perf_counter() - t0)
                self._statuses[response.status] += 1
        conn.close()

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def summary(self) -> dict[str, Any]:
        for thread in self._threads:
            thread.join()
        ms = [v * 1000 for v in self._latencies] or [0.0]
        accepted, refused = self._statuses[202], self._statuses[429]
        return {
            "sent": len(self._latencies),
            "accepted_202": accepted,
            "refused_429": refused,
            "other_status": sum(self._statuses.values()) - accepted - refused,
            "socket_errors": dict(self._errors),
            "trigger_p50_ms": round(percentile(ms, 50), 3),
            "trigger_p99_ms": round(percentile(ms, 99), 3),
            "trigger_max_ms": round(max(ms), 3),
            "late_slots": len(self._late),
            "late_max_ms": round(max(self._late, default=0.0), 1),
        }


@dataclass(frozen=True)
class LoadKind:
    use_wrk: bool
    connections: int

    def start(self, stack: Stack, rate: float, count: int, prefix: str) -> Load:
        kind = WrkLoad if self.use_wrk else ThreadLoad
        return kind(stack, rate, count, prefix, self.connections)


@dataclass
class Window:
    """Readings around one loaded interval: counters, CPU, and the window of accepted items."""

    stack: Stack
    since: datetime
    metrics: dict[str, float]
    cpu: dict[str, float]
    wall: float
    client_cpu: float
    machine: float

    @classmethod
    def open(cls, stack: Stack) -> Window:
        return cls(
            stack,
            utcnow(),
            stack.metrics(),
            {"orchestrator": cpu_s(stack.orchestrator.pid), "model_server": cpu_s(stack.server.pid)},
            time.monotonic(),
            client_cpu_s(),
            machine_busy_s(),
        )

    def cpu_percent(self, loaded_s: float) -> dict[str, float]:
        """Percent of one core over the loaded interval: each server, the client (wrk or the client threads,
        and this process's polling), and `other`: the rest of the machine (near 0 in a clean run)."""
        used = {
            "orchestrator": cpu_s(self.stack.orchestrator.pid) - self.cpu["orchestrator"],
            "model_server": cpu_s(self.stack.server.pid) - self.cpu["model_server"],
            "client": client_cpu_s() - self.client_cpu,
        }
        used["other"] = machine_busy_s() - self.machine - sum(used.values())
        return {k: round(100 * v / loaded_s, 1) for k, v in used.items()}

    def close(self) -> dict[str, Any]:
        """Wait for the queue to drain, then what the orchestrator says happened to the window's items."""
        drain_s = wait_drained(self.stack)
        until = utcnow() + timedelta(milliseconds=1)
        after = self.stack.metrics()
        return {
            "drain_s": drain_s,
            "items": window_stats(self.stack, self.since - timedelta(milliseconds=1), until),
            "refused": metric_delta(self.metrics, after, "edge_triggers_refused_total"),
            "camera_errors": metric_delta(self.metrics, after, "edge_camera_errors_total"),
            "still_in_flight": after.get("edge_queue_depth", 0.0),
        }


def sustained(rate: float, step: dict[str, Any]) -> tuple[bool, list[str]]:
    """A rate is sustained when nothing is refused or lost, nothing fails, and decisions keep up."""
    why = []
    wrk, items = step["wrk"], step["items"]
    if wrk["refused_429"] or step["refused"]:
        why.append(f"{wrk['refused_429']} triggers refused (429)")
    if wrk["other_status"] or wrk["socket_errors"]:
        why.append(f"{wrk['other_status']} other statuses, socket errors {wrk['socket_errors']}")
    if items["undecided"] or step["still_in_flight"]:
        why.append(f"{items['undecided']} accepted items undecided after {step['drain_s']} s")
    if step["camera_errors"]:
        why.append(f"camera/model errors {step['camera_errors']}")
    if step["achieved_per_s"] < 0.95 * rate:
        why.append(f"only {step['achieved_per_s']}/s accepted")
    p99 = items["decision_latency_ms"]["p99"]
    if p99 is None or p99 > 1000:
        why.append(f"decision latency p99 {p99} ms > 1000 ms (falling behind)")
    return not why, why


def bench_rate(stack: Stack, rate: float, seconds: float, load_kind: LoadKind) -> dict[str, Any]:
    count = round(rate * seconds)
    window = Window.open(stack)
    load = load_kind.start(stack, rate, count, f"rate{rate:g}")
    depth = 0.0
    while load.running():  # one cheap scrape a second: how far behind the orchestrator gets
        time.sleep(1)
        depth = max(depth, stack.metrics().get("edge_queue_depth", 0.0))
    summary = load.summary()
    loaded_s = count / rate
    cpu = window.cpu_percent(time.monotonic() - window.wall)
    step = {
        "offered_per_s": rate,
        "seconds": loaded_s,
        "wrk": summary,
        "cpu_percent": cpu,
        "max_queue_depth_seen": depth,
        **window.close(),
    }
    step["achieved_per_s"] = round(step["items"]["accepted"] / loaded_s, 2)
    step["sustained"], step["why_not"] = sustained(rate, step)
    return step


def bench_rates(stack: Stack, rates: list[float], seconds: float, load_kind: LoadKind) -> dict[str, Any]:
    """Step up until a rate is not sustained, then try once halfway between the last good and that one."""
    steps: list[dict[str, Any]] = []
    best = 0.0
    queue = list(rates)
    while queue:
        rate = queue.pop(0)
        step = bench_rate(stack, rate, seconds, load_kind)
        steps.append(step)
        print(
            f"rate {rate:g}/s: accepted {step['items']['accepted']}, decided {step['items']['decided']}, "
            f"decision p99 {step['items']['decision_latency_ms']['p99']} ms, cpu {step['cpu_percent']}, "
            f"{'sustained' if step['sustained'] else 'NOT sustained: ' + '; '.join(step['why_not'])}",
            flush=True,
        )
        if step["sustained"]:
            best = max(best, rate)
        elif rate in rates and best and rate - best >= 10:
            queue = [5.0 * round((best + rate) / 10)]  # one refinement step, to the nearest 5/s
        else:
            queue = []
        time.sleep(2)
    return {"steps": steps, "max_sustained_per_s": best}


def rss_sample(stack: Stack, items: int, start: float) -> dict[str, float]:
    return {
        "items": items,
        "t_s": round(time.monotonic() - start, 1),
        "orchestrator_rss_mb": rss_mb(stack.orchestrator.pid)["rss_mb"],
        "model_server_rss_mb": rss_mb(stack.server.pid)["rss_mb"],
    }


def decided_total(samples: dict[str, float]) -> int:
    return int(metric_sum(samples, "edge_inspections_total"))


def bench_memory(stack: Stack, rate: float, count: int, load_kind: LoadKind) -> dict[str, Any]:
    """RSS every 1 000 decided items while wrk sends `count` triggers at `rate`."""
    warm = Triggered([], Counter(), Counter(), Counter(), Counter(), {})
    bench_triggers(stack, 30, "memwarm", warm)
    start = time.monotonic()
    window = Window.open(stack)
    base = decided_total(window.metrics)
    samples = [rss_sample(stack, 0, start)]
    load = load_kind.start(stack, rate, count, "mem")
    mark = 1000
    depth = 0.0
    while load.running():
        time.sleep(0.5)
        scrape = stack.metrics()
        decided = decided_total(scrape) - base
        depth = max(depth, scrape.get("edge_queue_depth", 0.0))
        if decided >= mark:
            samples.append(rss_sample(stack, decided, start))
            print(f"memory: {samples[-1]}", flush=True)
            mark = (decided // 1000 + 1) * 1000
    summary = load.summary()
    cpu = window.cpu_percent(time.monotonic() - window.wall)
    result = {
        "offered_per_s": rate,
        "wrk": summary,
        "cpu_percent": cpu,
        "max_queue_depth_seen": depth,
        **window.close(),
    }
    final = rss_sample(stack, decided_total(stack.metrics()) - base, start)
    if final["items"] > samples[-1]["items"]:
        samples.append(final)
    result["achieved_per_s"] = round(result["items"]["accepted"] / (count / rate), 2)
    result["sustained"], result["why_not"] = sustained(rate, result)
    result["samples"] = samples
    result["peak_rss_mb"] = rss_mb(stack.orchestrator.pid)["peak_rss_mb"]
    after_first = [s for s in samples if s["items"] >= 1000]
    if len(after_first) >= 2:
        first, last = after_first[0], after_first[-1]
        result["rss_at_1k_mb"] = first["orchestrator_rss_mb"]
        result["rss_end_mb"] = last["orchestrator_rss_mb"]
        result["growth_pct"] = round(
            100 * (last["orchestrator_rss_mb"] / first["orchestrator_rss_mb"] - 1), 2
        )
        slope = np.polyfit(
            [s["items"] / 1000 for s in after_first], [s["orchestrator_rss_mb"] for s in after_first], 1
        )[0]
        result["slope_mb_per_1k_items"] = round(float(slope), 3)
    return result


# --- report ------------------------------------------------------------------------------------------


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    lat, rates, mem = results["latency"], results["rate"], results["memory"]
    rows = [
        (
            "orchestrator p99 (ms) <= 1.5 x model-server pair p99 + 15 ms",
            lat["orchestrator"]["p99_ms"],
            lat["p99_limit_ms"],
            lat["p99_ok"],
        ),
        (
            "max sustained rate (inspections/s, min)",
            rates["max_sustained_per_s"],
            20.0,
            rates["max_sustained_per_s"] >= 20,
        ),
        (
            "orchestrator RSS growth after the first 1 000 items (%)",
            mem.get("growth_pct"),
            10.0,
            mem.get("growth_pct") is not None and mem["growth_pct"] <= 10,
        ),
    ]
    return [{"name": n, "measured": v, "limit": lim, "ok": bool(ok)} for n, v, lim, ok in rows]


def disturbances(results: dict[str, Any]) -> list[str]:
    """Other processes busy during a measurement (2 cores: one busy neighbour halves the headroom)."""
    notes = []
    other = results["latency"]["other_cpu_percent"]  # the bench's own client thread included
    if other > 30:
        notes.append(f"latency: the rest of the machine used {other} % of a core; figures disturbed")
    for step in [*results["rate"]["steps"], results["memory"]]:
        if step["cpu_percent"]["other"] > 25:
            notes.append(
                f"{step['offered_per_s']:g}/s: other processes used {step['cpu_percent']['other']} % of a core; "
                "figures disturbed"
            )
    return notes


def markdown(results: dict[str, Any]) -> str:
    lat = results["latency"]
    o, m = lat["orchestrator"], lat["model_server_pair"]
    lines = [
        f"Demo station `{STATION}` on {results['machine']['cpus']} CPUs; client: {results['client']}.",
        "",
        "| path | p50 ms | p99 ms | max ms | n |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| orchestrator trigger?wait → decided item | {o['p50_ms']} | {o['p99_ms']} | {o['max_ms']} | {o['requests']} |",
        f"| model server, the item's two predictions at once | {m['p50_ms']} | {m['p99_ms']} | {m['max_ms']} | {m['requests']} |",
        "",
        f"Overhead: p99 ratio {lat['p99_ratio']}, p50 difference {lat['p50_difference_ms']} ms. "
        f"Decisions {o['decisions']}; camera errors {o['camera_errors'] or 'none'}.",
        "",
        "| offered /s | accepted /s | refused | undecided | decision p50 / p99 ms | trigger p99 ms | CPU % orch / server / client / other | sustained |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
    ]  # fmt: skip
    for step in results["rate"]["steps"]:
        items, cpu, lat_ms = step["items"], step["cpu_percent"], step["items"]["decision_latency_ms"]
        lines.append(
            f"| {step['offered_per_s']:g} | {step['achieved_per_s']} | {step['wrk']['refused_429']} | "
            f"{items['undecided']} | {lat_ms['p50']} / {lat_ms['p99']} | {step['wrk']['trigger_p99_ms']} | "
            f"{cpu['orchestrator']} / {cpu['model_server']} / {cpu['client']} / {cpu['other']} | "
            f"{'yes' if step['sustained'] else 'NO: ' + '; '.join(step['why_not'])} |"
        )
    mem = results["memory"]
    lines += [
        "",
        f"Memory: {mem['items']['accepted']} inspections at {mem['offered_per_s']:g}/s "
        f"({'sustained' if mem['sustained'] else 'NOT sustained: ' + '; '.join(mem['why_not'])}); "
        f"slope {mem.get('slope_mb_per_1k_items')} MB per 1 000 items after the first 1 000.",
        "",
        "| items | t s | orchestrator RSS MB | model server RSS MB |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for s in mem["samples"]:
        lines.append(
            f"| {s['items']} | {s['t_s']} | {s['orchestrator_rss_mb']} | {s['model_server_rss_mb']} |"
        )
    lines += [f"\nNote: {note}" for note in results["notes"]]
    return "\n".join(lines + checks_table(results["checks"])) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: fewer samples, shorter steps, 2 000 items"
    )
    parser.add_argument(
        "--latency-count", type=int, help="triggers (and model-server pairs) to time; default 500"
    )
    parser.add_argument(
        "--rates", default="20,25,30,40,50,60,80,100,120,150", help="offered rates to step through (/s)"
    )
    parser.add_argument("--step-seconds", type=float, help="duration of each rate step; default 20")
    parser.add_argument("--memory-rate", type=float, default=25.0, help="offered rate of the memory run (/s)")
    parser.add_argument("--memory-count", type=int, help="inspections of the memory run; default 10 000")
    parser.add_argument(
        "--connections", type=int, default=16, help="connections sharing the trigger schedule"
    )
    parser.add_argument(
        "--python-client", action="store_true", help="send the scheduled triggers without wrk"
    )
    parser.add_argument("--port", type=int, default=8590, help="orchestrator port")
    parser.add_argument("--model-port", type=int, default=8591, help="model server port")
    parser.add_argument("--tmp", type=Path, help="where the data directories go (images: up to 1 GB)")
    parser.add_argument("--keep-data", action="store_true", help="keep data directories and logs")
    args = parser.parse_args()
    latency_count = args.latency_count or (200 if args.quick else 500)
    step_seconds = args.step_seconds or (10.0 if args.quick else 20.0)
    memory_count = args.memory_count or (2000 if args.quick else 10_000)
    rates = [float(r) for r in args.rates.split(",")]
    load_kind = LoadKind(
        use_wrk=shutil.which("wrk") is not None and not args.python_client, connections=args.connections
    )

    results: dict[str, Any] = {
        "machine": machine(),
        "client": "http.client, one keep-alive connection per path (latency); "
        + ("wrk" if load_kind.use_wrk else "http.client threads")
        + " on a fixed schedule (rate, memory)",
        "settings": {
            "quick": args.quick,
            "latency_count": latency_count,
            "step_seconds": step_seconds,
            "memory_rate": args.memory_rate,
            "memory_count": memory_count,
            "max_in_flight": 64,
        },
    }
    phases: dict[str, dict[str, Any]] = {"latency": {}, "rate": {}, "memory": {}}
    ports = (args.model_port, args.port, args.tmp, args.keep_data)
    with running_stack("latency", *ports, phases["latency"]) as stack:
        phases["latency"].update(bench_latency(stack, latency_count, min(100, latency_count)))
    print(f"latency: {json.dumps({k: phases['latency'][k] for k in ('p99_ratio', 'p50_difference_ms')})}")
    with running_stack("rate", *ports, phases["rate"]) as stack:
        phases["rate"].update(bench_rates(stack, rates, step_seconds, load_kind))
    with running_stack("memory", *ports, phases["memory"]) as stack:
        phases["memory"].update(bench_memory(stack, args.memory_rate, memory_count, load_kind))
    results |= phases
    results["checks"] = checks(results)
    results["notes"] = disturbances(results)
    for note in results["notes"]:
        print(f"note: {note}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "orchestrator.json").write_text(json.dumps(results, indent=2, default=str))
    table = markdown(results)
    (args.out / "orchestrator.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
