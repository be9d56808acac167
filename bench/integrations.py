"""Benchmark: what the PLC and MES integrations add to an inspection, as the line's own clients see it.

`python -m bench.integrations [--out DIR] [--quick]` runs the real model server and orchestrator on loopback
(the duck-line station, bundled models) with an integrations file enabling OPC UA, Modbus TCP and MQTT
(Debian's mosquitto on a free port; without it the MQTT phases are skipped with a note), and measures:
- REST baseline: sequential `POST /api/v1/inspections?wait=10` → 200 decided (p50, p99);
- the OPC UA handshake as a PLC runs it (user login, unsecured endpoint): PartId + Trigger in one Write, wait
  for ResultReady, read the result, ResultAck, wait for Ready, clear Trigger and ResultAck; the client waits
  either through a subscription (5 ms publishing interval) or by reading every 2 ms, both are measured;
- the Modbus TCP handshake: one FC 16 write of PartId + control word, status word polled every 2 ms, ack, clear;
- MQTT: a trigger published on <prefix>/trigger until its result arrives on <prefix>/results;
- the outbox drain: broker stopped, M parts decided, broker started, until a subscriber has all M results
  (rate, order, none missing).
The broker runs with Debian's defaults (Nagle on); --broker-nodelay sets mosquitto's set_tcp_nodelay.
The four paths run in alternating blocks over the same minutes (the machine drifts), N parts each (300, 100
with --quick), then the drain (1 000, 200 with --quick). Each handshake is compared with REST: ratio of the
trigger → result p50s and the overhead in ms. It writes `integrations.json` and `integrations.md` and prints
the table with the targets; only a setup failure exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.client
import json
import logging
import operator
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiomqtt
import yaml
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif, Subscription
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU

from bench.orchestrator import (
    MODELS_DIR,
    STATION,
    Stack,
    client_cpu_s,
    cpu_s,
    ensure_free,
    log_summary,
    machine_busy_s,
    start_orchestrator,
    stop,
    trigger_waited,
)
from bench.serving import REPO, checks_table, machine, percentile, start_server
from edge_orchestrator.integrations.modbus import (
    CONTROL_RESULT_ACK,
    CONTROL_TRIGGER,
    HR_CONTROL,
    HR_PART_ID,
    INPUTS,
    IR_RESULT_PART_ID,
    IR_STATUS,
    pack_ascii,
    unpack_ascii,
)

MOSQUITTO = Path("/usr/sbin/mosquitto")  # deployment/install-debian-packages.sh mosquitto
DEVICE_ID = "bench-01"
PREFIX = f"bench/{DEVICE_ID}"
NAMESPACE = "urn:edge-orchestrator:line"
OPCUA_USER = "plc"
OPCUA_PASSWORD_ENV = "BENCH_OPCUA_PLC_PASSWORD"  # the orchestrator reads the PLC's password from it
OPCUA_PUBLISHING_MS = 5.0
POLL_S = 0.002  # a 2 ms PLC scan: how often the polling clients read
MQTT_RECONNECT_MAX_S = 1.0  # the default 30 s backoff would dominate the drain after a 10-30 s outage
WAIT_S = 10.0  # one part's handshake, at most (the station's own worst case is a few seconds)
STATUS_READY, STATUS_RESULT_READY, STATUS_OK, STATUS_KO = 0x1, 0x4, 0x8, 0x10
T = TypeVar("T")


# --- processes ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Ports:
    orchestrator: int
    model: int
    opcua: int
    modbus: int
    mqtt: int | None  # None: no broker here, MQTT not configured


class Broker:
    """Debian's mosquitto on loopback, persistent, so a subscriber's session and its queue survive a restart."""

    def __init__(self, port: int, data_dir: Path, max_queued: int, nodelay: bool) -> None:
        self.port = port
        self._config = data_dir / "mosquitto.conf"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._config.write_text(
            # `user root`: as root, mosquitto would switch to `mosquitto`, which cannot write its persistence here
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\nuser root\n"
            f"persistence_location {data_dir}/\nautosave_interval 60\n"
            f"max_queued_messages {max_queued}\nlog_type error\n"
            # Debian's default leaves Nagle on: small messages can wait for a delayed ACK (about 40 ms)
            + ("set_tcp_nodelay true\n" if nodelay else "")
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self._config)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"mosquitto did not start on {self.port}: {err.strip()[-500:]}")
            time.sleep(0.01)
        self.proc = proc

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its sessions and queued messages on the way out."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None


def integrations_file(ports: Ports) -> dict[str, Any]:
    config: dict[str, Any] = {
        "heartbeat_s": 1.0,
        "opcua": {
            "endpoint": f"opc.tcp://127.0.0.1:{ports.opcua}/edge/",
            "allow_unsecured": True,
            "users": [{"username": OPCUA_USER, "password": {"env": OPCUA_PASSWORD_ENV}}],
        },
        "modbus": {"host": "127.0.0.1", "port": ports.modbus, "allowed_clients": ["127.0.0.1"]},
    }
    if ports.mqtt is not None:
        config["mqtt"] = {
            "host": "127.0.0.1",
            "port": ports.mqtt,
            "topic_prefix": PREFIX,
            "reconnect_max_s": MQTT_RECONNECT_MAX_S,
        }
    return config


@dataclass(frozen=True)
class Setup:
    stack: Stack
    password: str  # the PLC user's OPC UA password (the orchestrator has it in its environment)
    broker: Broker | None


@contextlib.contextmanager
def integrated_stack(
    ports: Ports, drain: int, nodelay: bool, tmp_root: Path | None, keep: bool, report: dict[str, Any]
) -> Iterator[Setup]:
    """The broker, the model server and the orchestrator with the integrations, on a fresh data directory;
    all stopped on the way out, whatever happened."""
    for port in (ports.model, ports.orchestrator, ports.opcua, ports.modbus):
        ensure_free(port)
    root = Path(tempfile.mkdtemp(prefix="bench-integrations-", dir=tmp_root))
    log_file = root / "orchestrator.log"
    integrations = root / "integrations.yaml"
    integrations.write_text(yaml.safe_dump(integrations_file(ports), sort_keys=False))
    key, password = secrets.token_urlsafe(24), secrets.token_urlsafe(16)
    broker = None
    if ports.mqtt is not None:  # up first: the device connects at start (its backoff would delay phase 4)
        broker = Broker(ports.mqtt, root / "broker", max_queued=2 * drain + 1000, nodelay=nodelay)
        broker.start()
    try:
        server = start_server(MODELS_DIR, ports.model)
        try:
            extra_env = {
                "EDGE_ORCHESTRATOR_INTEGRATIONS_FILE": str(integrations),
                "EDGE_ORCHESTRATOR_DEVICE_ID": DEVICE_ID,
                OPCUA_PASSWORD_ENV: password,
            }
            orchestrator = start_orchestrator(
                root / "data", ports.orchestrator, ports.model, key, log_file, extra_env
            )
            try:
                stack = Stack(server, orchestrator, ports.model, ports.orchestrator, key, root / "data")
                yield Setup(stack, password, broker)
            finally:
                stop(orchestrator)
        finally:
            stop(server)
    finally:
        if broker is not None:
            broker.stop()
        report["log"] = log_summary(log_file)
        if keep:
            report["data_dir"] = str(root)
        else:
            shutil.rmtree(root, ignore_errors=True)


# --- the line's clients: one part each, timed ------------------------------------------------------------


class CycleError(Exception):
    """The part did not get its own result (refused, wrong part id, no single result bit)."""


@dataclass(frozen=True)
class Sample:
    result_s: float  # trigger sent → the client sees the result (ResultReady, the 200, the MQTT message)
    cycle_s: float  # the whole handshake, until the client is ready for the next part
    decision: str


async def poll(read: Callable[[], Awaitable[T]], check: Callable[[T], bool]) -> tuple[float, T]:
    """Read every POLL_S (back to back when a read takes longer) until check() holds: (time seen, value)."""
    deadline = time.perf_counter() + WAIT_S
    due = time.perf_counter()
    while True:
        value = await read()
        seen = time.perf_counter()
        if check(value):
            return seen, value
        if seen > deadline:
            raise CycleError(f"still {value!r} after {WAIT_S:g} s")
        due = max(due + POLL_S, seen)  # behind schedule (a slow read): poll again at once
        await asyncio.sleep(max(0.0, due - seen))


class LineClient(Protocol):
    """One way the line asks for an inspection and learns its result."""

    name: str
    waits: str  # how the client learns of the result, for the report

    async def begin(self) -> None: ...  # before each block

    async def cycle(self, part: str) -> Sample: ...

    async def end(self) -> None: ...  # after each block

    async def recover(self) -> None: ...  # after a failed part: back to Ready, best effort


class RestClient:
    name, waits = "rest", "POST ?wait=10 (one keep-alive connection)"

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._conn: http.client.HTTPConnection | None = None

    async def begin(self) -> None:
        self._conn = self._stack.connection()

    async def cycle(self, part: str) -> Sample:
        assert self._conn is not None
        elapsed, status, data = await asyncio.to_thread(trigger_waited, self._conn, self._stack.key, part)
        if status != 200:
            raise CycleError(f"status {status}: {data[:200]!r}")
        item = json.loads(data)
        if item["part_id"] != part:
            raise CycleError(f"answered for {item['part_id']!r}")
        return Sample(elapsed, elapsed, item["decision"])

    async def end(self) -> None:
        if self._conn is not None:
            self._conn.close()

    async def recover(self) -> None:
        await self.end()
        await self.begin()


class Watched:
    """The values a subscription reported last, and a wake-up for whoever waits for one."""

    def __init__(self, names: dict[ua.NodeId, str]) -> None:
        self.names = names
        self.values: dict[str, Any] = {}
        self.changed = asyncio.Event()

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        self.values[self.names[node.nodeid]] = val
        self.changed.set()

    async def until(self, check: Callable[[dict[str, Any]], bool]) -> float:
        async with asyncio.timeout(WAIT_S):
            while not check(self.values):
                self.changed.clear()
                await self.changed.wait()
        return time.perf_counter()


OPCUA_TYPES = {
    "PartId": ua.VariantType.String,
    "Trigger": ua.VariantType.Boolean,
    "ResultAck": ua.VariantType.Boolean,
}
OPCUA_READ = ("Ready", "ResultReady", "ResultOK", "ResultKO", "ResultNoDecision", "ResultPartId")


class OpcUaPlc:
    """A PLC logged in as a user on the unsecured endpoint; waits by subscription or by reading every 2 ms."""

    def __init__(self, url: str, password: str, subscribe: bool) -> None:
        self.name = "opcua_subscription" if subscribe else "opcua_polling"
        self.waits = (
            f"subscription to ResultReady and Ready, {OPCUA_PUBLISHING_MS:g} ms publishing interval"
            if subscribe
            else f"Read of ResultReady / Ready every {POLL_S * 1000:g} ms"
        )
        self._client = Client(url, timeout=5)
        self._client.application_uri = "urn:bench:plc"
        self._client.set_user(OPCUA_USER)
        self._client.set_password(password)
        self._subscribe = subscribe
        self._nodes: dict[str, Node] = {}
        self._watched: Watched | None = None
        self._subscription: Subscription | None = None

    async def open(self, exits: contextlib.AsyncExitStack) -> None:
        await exits.enter_async_context(self._client)
        ns = await self._client.get_namespace_index(NAMESPACE)
        station = await self._client.nodes.objects.get_child(f"{ns}:Station")
        for name in (*OPCUA_TYPES, *OPCUA_READ):
            self._nodes[name] = await station.get_child(f"{ns}:{name}")

    async def begin(self) -> None:
        """The subscription lives only during its blocks: its 5 ms publishing loop runs in the orchestrator."""
        if not self._subscribe:
            return
        watched = Watched({self._nodes[n].nodeid: n for n in ("Ready", "ResultReady")})
        self._subscription = await self._client.create_subscription(OPCUA_PUBLISHING_MS, watched)
        await self._subscription.subscribe_data_change(
            [self._nodes["Ready"], self._nodes["ResultReady"]], sampling_interval=ua.Double(0.0)
        )
        self._watched = watched
        await watched.until(lambda v: v.get("Ready") is True)

    async def end(self) -> None:
        if self._subscription is not None:
            await self._subscription.delete()
        self._subscription = self._watched = None

    async def _write(self, *values: tuple[str, object]) -> None:
        """One Write request, the values in this order."""
        await self._client.write_values(
            [self._nodes[name] for name, _ in values],
            [ua.DataValue(ua.Variant(value, OPCUA_TYPES[name])) for name, value in values],
        )

    async def _until(self, name: str, other: str) -> float:
        """When `name` is True and `other` False, as this client learns it."""
        if self._watched is not None:
            return await self._watched.until(lambda v: v.get(name) is True and v.get(other) is False)
        node = self._nodes[name]
        seen, _ = await poll(node.read_value, lambda v: v is True)
        return seen

    async def cycle(self, part: str) -> Sample:
        t0 = time.perf_counter()
        await self._write(("PartId", part), ("Trigger", True))
        ready = await self._until("ResultReady", "Ready")
        names = ("ResultOK", "ResultKO", "ResultNoDecision", "ResultPartId")
        ok, ko, no_decision, part_id = await self._client.read_values([self._nodes[n] for n in names])
        await self._write(("ResultAck", True))
        await self._until("Ready", "ResultReady")
        await self._write(("Trigger", False), ("ResultAck", False))
        done = time.perf_counter()
        return Sample(ready - t0, done - t0, decision_of(part, part_id, ok, ko, no_decision))

    async def recover(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(WAIT_S):
                await self._write(("Trigger", False), ("ResultAck", False), ("ResultAck", True))
                await poll(self._nodes["Ready"].read_value, lambda v: v is True)
                await self._write(("ResultAck", False))


def decision_of(part: str, part_id: str, ok: bool, ko: bool, no_decision: bool) -> str:
    if part_id != part:
        raise CycleError(f"the result is for {part_id!r}")
    if [ok, ko, no_decision].count(True) != 1:
        raise CycleError(f"result bits OK {ok}, KO {ko}, NO_DECISION {no_decision}")
    return "OK" if ok else "KO" if ko else "NO_DECISION"


class ModbusPlc:
    """A PLC writing registers only: PartId + control word in one FC 16, the status word read every 2 ms."""

    name, waits = "modbus", f"FC 4 read of the status word every {POLL_S * 1000:g} ms"

    def __init__(self, port: int) -> None:
        self._client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)

    async def open(self, exits: contextlib.AsyncExitStack) -> None:
        if not await self._client.connect():
            raise RuntimeError("the Modbus server did not accept the connection")
        exits.callback(self._client.close)

    async def begin(self) -> None:
        pass

    async def end(self) -> None:
        pass

    @staticmethod
    def _ok(response: ModbusPDU) -> list[int]:
        if response.isError():
            raise CycleError(f"exception response {response}")
        return list(response.registers)

    async def _status(self) -> int:
        return self._ok(await self._client.read_input_registers(IR_STATUS, count=1, device_id=1))[0]

    async def _control(self, value: int) -> None:
        self._ok(await self._client.write_register(HR_CONTROL, value, device_id=1))

    async def cycle(self, part: str) -> Sample:
        t0 = time.perf_counter()
        # registers 1..17: PartId, then the control word with Trigger (FC 16, one request)
        write = await self._client.write_registers(
            HR_PART_ID, [*pack_ascii(part), CONTROL_TRIGGER], device_id=1
        )
        self._ok(write)
        ready, _ = await poll(self._status, lambda s: bool(s & STATUS_RESULT_READY))
        inputs = self._ok(await self._client.read_input_registers(0, count=INPUTS, device_id=1))
        status, part_id = inputs[IR_STATUS], unpack_ascii(inputs[IR_RESULT_PART_ID:])
        await self._control(CONTROL_TRIGGER | CONTROL_RESULT_ACK)
        await poll(self._status, lambda s: bool(s & STATUS_READY) and not s & STATUS_RESULT_READY)
        await self._control(0)
        done = time.perf_counter()
        flags = (bool(status & STATUS_OK), bool(status & STATUS_KO), bool(status & 0x20))
        return Sample(ready - t0, done - t0, decision_of(part, part_id, *flags))

    async def recover(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(WAIT_S):
                await self._control(0)
                await self._control(CONTROL_RESULT_ACK)
                await poll(self._status, lambda s: bool(s & STATUS_READY))
                await self._control(0)


class Mes:
    """A subscriber on the broker with a persistent session (its queue survives the broker's restart):
    results by part id with their arrival times, refusals by request id, the device's status."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.arrivals: dict[str, list[float]] = {}  # part id → perf_counter of each copy (at least once)
        self.decisions: dict[str, str] = {}
        self.order: list[str] = []  # part ids as they arrived
        self.refused: dict[str, str] = {}
        self.online = asyncio.Event()
        self.connected = asyncio.Event()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bench-mes")
        async with asyncio.timeout(20):
            await self.connected.wait()
            await self.online.wait()  # the device is connected and subscribed to its triggers

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier="bench-mes", clean_session=False, timeout=5
                ) as client:
                    for topic in ("results", "replies", "status"):
                        await client.subscribe(f"{PREFIX}/{topic}", qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        self._on(str(message.topic), message.payload)
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.02)  # the broker is down: try again soon, it is timed when it returns

    def _on(self, topic: str, payload: Any) -> None:
        now = time.perf_counter()
        body = json.loads(payload) if isinstance(payload, bytes | bytearray | str) else {}
        if topic.endswith("/results"):
            part = body.get("part_id") or body["item_id"]
            if part not in self.arrivals:
                self.order.append(part)
                self.decisions[part] = body["decision"]
            self.arrivals.setdefault(part, []).append(now)
        elif topic.endswith("/replies") and not body.get("ok"):
            self.refused[str(body.get("request_id"))] = f"{body.get('code')}: {body.get('detail')}"
        elif topic.endswith("/status") and body.get("state") == "online":
            self.online.set()
        self._arrived.set()

    async def until(self, check: Callable[[], bool], within: float) -> None:
        async with asyncio.timeout(within):
            while not check():
                self._arrived.clear()
                await self._arrived.wait()


class MqttController:
    """A line controller publishing triggers; the result is timed when the MES subscriber receives it."""

    name, waits = "mqtt", "result message on <prefix>/results (QoS 1 both ways)"

    def __init__(self, port: int, mes: Mes) -> None:
        self._mes = mes
        self._client = aiomqtt.Client("127.0.0.1", port, identifier="bench-plc", timeout=5)

    async def open(self, exits: contextlib.AsyncExitStack) -> None:
        """Connected, and the device answers on the topics (it subscribed to triggers before recipes)."""
        await exits.enter_async_context(self._client)
        mes = self._mes
        async with asyncio.timeout(20):
            for attempt in range(200):
                probe = f"probe-{attempt}"  # an unknown recipe: refused on replies, nothing inspected
                await self._client.publish(
                    f"{PREFIX}/recipe", json.dumps({"recipe": 32000, "request_id": probe}), qos=1
                )
                with contextlib.suppress(TimeoutError):
                    await mes.until(functools.partial(operator.contains, mes.refused, probe), 0.2)
                    return

    async def begin(self) -> None:
        pass

    async def end(self) -> None:
        pass

    async def cycle(self, part: str) -> Sample:
        mes = self._mes
        t0 = time.perf_counter()
        payload = json.dumps({"part_id": part, "request_id": part})
        await self._client.publish(f"{PREFIX}/trigger", payload, qos=1)
        await mes.until(lambda: part in mes.arrivals or part in mes.refused, WAIT_S)
        if part in mes.refused:
            raise CycleError(f"refused: {mes.refused[part]}")
        elapsed = mes.arrivals[part][0] - t0
        return Sample(elapsed, elapsed, mes.decisions[part])

    async def recover(self) -> None:
        pass


# --- the measurements ---------------------------------------------------------------------------------


@dataclass
class Measured:
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: Counter[str] = field(default_factory=Counter)


async def run_block(path: LineClient, parts: list[str], stack: Stack, out: Measured) -> None:
    """Parts one after the other; a failed part is recorded and the PLC brought back to Ready."""
    await path.begin()
    pids = {"orchestrator": stack.orchestrator.pid, "model_server": stack.server.pid}
    cpu = {name: cpu_s(pid) for name, pid in pids.items()}
    client, machine, start = client_cpu_s(), machine_busy_s(), time.perf_counter()
    for part in parts:
        try:
            async with asyncio.timeout(WAIT_S + 5):
                out.samples.append(await path.cycle(part))
        except Exception as exc:  # asyncua, pymodbus and aiomqtt each raise their own: any is a failed part
            out.errors.append(f"{part}: {type(exc).__name__}: {exc}"[:300])
            await path.recover()
    out.wall_s += time.perf_counter() - start
    used = {name: cpu_s(pid) - cpu[name] for name, pid in pids.items()}
    used["client"] = client_cpu_s() - client
    used["other"] = machine_busy_s() - machine - sum(used.values())  # mosquitto, and anything else running
    out.cpu_s.update(used)
    await path.end()


def figures(values_s: list[float]) -> dict[str, float | None]:
    if not values_s:
        return {"p50": None, "p99": None, "max": None}
    ms = [v * 1000 for v in values_s]
    return {
        "p50": round(percentile(ms, 50), 2),
        "p99": round(percentile(ms, 99), 2),
        "max": round(max(ms), 2),
    }


def summary(path: LineClient, measured: Measured) -> dict[str, Any]:
    n = len(measured.samples)
    done = n + len(measured.errors)
    return {
        "waits": path.waits,
        "parts": n,
        "failed": len(measured.errors),
        "errors": measured.errors[:5],
        "decisions": dict(Counter(s.decision for s in measured.samples)),
        "result_ms": figures([s.result_s for s in measured.samples]),
        "cycle_ms": figures([s.cycle_s for s in measured.samples]),
        "parts_per_s": round(done / measured.wall_s, 1) if measured.wall_s else None,
        "cpu_ms_per_part": {k: round(1000 * v / done, 2) for k, v in measured.cpu_s.items()} if done else {},
    }


async def bench_paths(
    stack: Stack, ports: Ports, password: str, mes: Mes | None, count: int, block: int
) -> dict[str, dict[str, Any]]:
    """Every path in turn, a block at a time, so they share the machine's drift; 10 warm-up parts each."""
    url = f"opc.tcp://127.0.0.1:{ports.opcua}/edge/"
    opcua_sub, opcua_poll = OpcUaPlc(url, password, True), OpcUaPlc(url, password, False)
    modbus = ModbusPlc(ports.modbus)
    paths: list[LineClient] = [RestClient(stack), opcua_sub, opcua_poll, modbus]
    connected: list[OpcUaPlc | ModbusPlc | MqttController] = [opcua_sub, opcua_poll, modbus]
    if mes is not None and ports.mqtt is not None:
        mqtt = MqttController(ports.mqtt, mes)
        paths.append(mqtt)
        connected.append(mqtt)
    async with contextlib.AsyncExitStack() as exits:
        for client in connected:
            await client.open(exits)
        measured = {path.name: Measured() for path in paths}
        for path in paths:
            await run_block(path, [f"{path.name}-warm-{i}" for i in range(10)], stack, Measured())
        for index in range(-(-count // block)):
            size = min(block, count - index * block)
            for path in paths:
                await run_block(
                    path, [f"{path.name}-{index}-{i}" for i in range(size)], stack, measured[path.name]
                )
            print(
                f"block {index + 1}: "
                + ", ".join(
                    f"{p.name} {figures([s.result_s for s in measured[p.name].samples])['p50']}"
                    for p in paths
                )
                + " ms (result p50 so far)",
                flush=True,
            )
    return {path.name: summary(path, measured[path.name]) for path in paths}


async def outbox_pending(stack: Stack) -> int:
    system = await asyncio.to_thread(stack.get, "/api/v1/system")
    return sum(c["pending"] for c in system["outbox"] if c["channel"] == "mqtt")


async def until_pending(stack: Stack, want: int, within: float) -> int:
    deadline = time.monotonic() + within
    while True:
        pending = await outbox_pending(stack)
        if pending == want or time.monotonic() > deadline:
            return pending
        await asyncio.sleep(0.1)


def trigger_all(stack: Stack, parts: list[str]) -> Counter[str]:
    """Sequential REST triggers with ?wait=: decision order is trigger order, the reference for the MQTT order."""
    outcomes: Counter[str] = Counter()
    conn = stack.connection()
    try:
        for part in parts:
            _, status, data = trigger_waited(conn, stack.key, part)
            outcomes[json.loads(data)["decision"] if status == 200 else f"status {status}"] += 1
    finally:
        conn.close()
    return outcomes


async def bench_drain(stack: Stack, broker: Broker, mes: Mes, count: int) -> dict[str, Any]:
    """Broker down, `count` parts decided (their results wait in the outbox), broker up: until all arrived."""
    left = await until_pending(stack, 0, 30)
    if left:
        raise RuntimeError(f"the outbox still holds {left} messages before the drain")
    await asyncio.to_thread(broker.stop)
    parts = [f"drain-{i:05d}" for i in range(count)]
    start = time.perf_counter()
    outcomes = await asyncio.to_thread(trigger_all, stack, parts)
    triggered_s = time.perf_counter() - start
    pending = await until_pending(stack, count, 30)
    broker_start = time.perf_counter()
    await asyncio.to_thread(broker.start)
    up = time.perf_counter()
    wanted = set(parts)
    timed_out = False
    try:
        await mes.until(lambda: wanted <= mes.arrivals.keys(), 120)
    except TimeoutError:
        timed_out = True
    arrived = [mes.arrivals[p][0] for p in parts if p in mes.arrivals]
    first_seen = [p for p in mes.order if p in wanted]
    missing = len(wanted - mes.arrivals.keys())
    last = max(arrived, default=broker_start)
    first = min(arrived, default=broker_start)
    total_s = last - broker_start
    drain_s = last - first
    return {
        "parts": count,
        "decisions": dict(outcomes),
        "trigger_s": round(triggered_s, 2),
        "pending_before_broker_start": pending,
        "broker_start_s": round(up - broker_start, 3),
        "first_result_after_s": round(first - broker_start, 3),  # broker start + the device's reconnection
        "all_results_after_s": round(total_s, 3),
        "first_to_last_s": round(drain_s, 3),
        "per_s_from_broker_start": round(len(arrived) / total_s, 1) if total_s > 0 else None,
        "per_s_first_to_last": round((len(arrived) - 1) / drain_s, 1) if drain_s > 0 else None,
        "received": len(arrived),
        "missing": missing,
        "duplicates": sum(len(mes.arrivals[p]) - 1 for p in parts if p in mes.arrivals),
        "in_order": first_seen == [p for p in parts if p in mes.arrivals],
        "timed_out": timed_out,
        "pending_after": await outbox_pending(stack),
    }


async def measure(setup: Setup, ports: Ports, count: int, block: int, drain: int) -> dict[str, Any]:
    stack, password, broker = setup.stack, setup.password, setup.broker
    mes = Mes(broker.port) if broker is not None else None
    try:
        if mes is not None:
            await mes.start()
        results: dict[str, Any] = {"paths": await bench_paths(stack, ports, password, mes, count, block)}
        if mes is not None and broker is not None:
            results["drain"] = await bench_drain(stack, broker, mes, drain)
            print(f"drain: {json.dumps(results['drain'])}", flush=True)
        return results
    finally:
        if mes is not None:
            await mes.stop()


# --- report ------------------------------------------------------------------------------------------


def compare(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Each path against REST: trigger → result p50 ratio, and the overheads in ms at p50 and p99."""
    rest = paths["rest"]["result_ms"]
    out: dict[str, dict[str, float | None]] = {}
    for name, path in paths.items():
        mine = path["result_ms"]
        if name == "rest" or mine["p50"] is None or rest["p50"] is None:
            continue
        out[name] = {
            "p50_ratio": round(mine["p50"] / rest["p50"], 2),
            "p50_overhead_ms": round(mine["p50"] - rest["p50"], 2),
            "p99_overhead_ms": round(mine["p99"] - rest["p99"], 2),
        }
    return out


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    paths = results["paths"]
    rows: list[tuple[str, Any, Any, bool]] = []
    for name in ("opcua_subscription", "opcua_polling", "modbus"):
        p99 = paths[name]["cycle_ms"]["p99"]
        rows.append((f"{name} handshake cycle p99 (ms)", p99, 250, p99 is not None and p99 < 250))
    if "mqtt" in paths:
        p99 = paths["mqtt"]["result_ms"]["p99"]
        rows.append(("MQTT trigger → result p99 (ms)", p99, 100, p99 is not None and p99 < 100))
    failed = {name: p["failed"] for name, p in paths.items() if p["failed"]}
    rows.append(("parts without their own result (all paths)", sum(failed.values()), 0, not failed))
    if "drain" in results:
        d = results["drain"]
        rate = d["per_s_from_broker_start"]
        rows.append(
            ("outbox drain from broker start (msg/s, min)", rate, 200, rate is not None and rate >= 200)
        )
        lost = f"{d['missing']} missing, {'in' if d['in_order'] else 'OUT OF'} order"
        rows.append(
            ("drained results lost / out of order", lost, "0, in order", d["missing"] == 0 and d["in_order"])
        )
    return [{"name": n, "measured": v, "limit": lim, "ok": bool(ok)} for n, v, lim, ok in rows]


def notes(results: dict[str, Any], broker_note: str | None) -> list[str]:
    out = [broker_note] if broker_note else []
    log = results.get("log", {})
    if log.get("errors") or log.get("tracebacks"):
        out.append(f"the orchestrator logged {log['errors']} errors: {log['first'][:3]}")
    return out


def markdown(results: dict[str, Any]) -> str:
    paths, ratios = results["paths"], results["ratios"]
    lines = [
        f"Demo station `{STATION}` on {results['machine']['cpus']} CPUs; real orchestrator and model server on "
        f"loopback with OPC UA, Modbus TCP{' and MQTT' if 'mqtt' in paths else ''} enabled; parts one after "
        "the other, paths in alternating blocks."
        + (
            f" Broker: mosquitto, TCP_NODELAY {'on' if results['settings']['broker_tcp_nodelay'] else 'off (Debian default)'}."
            if "mqtt" in paths
            else ""
        ),
        "",
        "| path | client waits by | trigger → result p50 / p99 ms | cycle p50 / p99 ms | parts/s | p50 vs REST | +ms p50 / p99 | orchestrator CPU ms/part | failed |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    for name, p in paths.items():
        r = ratios.get(name, {})
        vs = f"{r['p50_ratio']}x" if r else "1x"
        plus = f"{r['p50_overhead_ms']} / {r['p99_overhead_ms']}" if r else "-"
        lines.append(
            f"| {name} | {p['waits']} | {p['result_ms']['p50']} / {p['result_ms']['p99']} | "
            f"{p['cycle_ms']['p50']} / {p['cycle_ms']['p99']} | {p['parts_per_s']} | {vs} | {plus} | "
            f"{p['cpu_ms_per_part'].get('orchestrator')} | {p['failed']} |"
        )
    if "drain" in results:
        d = results["drain"]
        lines += [
            "",
            f"Outbox drain: {d['parts']} results queued while the broker was down (pending "
            f"{d['pending_before_broker_start']}); broker start → first result {d['first_result_after_s']} s "
            f"(the device reconnects, backoff capped at {MQTT_RECONNECT_MAX_S:g} s), → all "
            f"{d['all_results_after_s']} s: {d['per_s_from_broker_start']} msg/s from broker start, "
            f"{d['per_s_first_to_last']} msg/s first to last. Received {d['received']}, missing {d['missing']}, "
            f"duplicates {d['duplicates']}, {'in decision order' if d['in_order'] else 'OUT OF ORDER'}.",
        ]
    lines += [f"\nNote: {note}" for note in results["notes"]]
    return "\n".join(lines + checks_table(results["checks"])) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 parts per path, 200 drained")
    parser.add_argument("--parts", type=int, help="parts per path; default 300")
    parser.add_argument("--drain", type=int, help="results queued for the outbox drain; default 1 000")
    parser.add_argument("--block", type=int, default=50, help="parts per block (paths alternate by block)")
    parser.add_argument(
        "--broker-nodelay", action="store_true", help="mosquitto with set_tcp_nodelay (Debian's default: off)"
    )
    parser.add_argument("--port", type=int, default=8592, help="orchestrator port")
    parser.add_argument("--model-port", type=int, default=8593, help="model server port")
    parser.add_argument("--tmp", type=Path, help="where the data directory goes")
    parser.add_argument("--keep-data", action="store_true", help="keep the data directory and logs")
    args = parser.parse_args()
    count = args.parts or (100 if args.quick else 300)
    drain = args.drain or (200 if args.quick else 1000)
    started = time.monotonic()
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # per-session notices (plain-text password, ...)

    broker_note = None
    if not MOSQUITTO.exists():
        broker_note = (
            f"{MOSQUITTO} is not installed (deployment/install-debian-packages.sh mosquitto): "
            "the MQTT path and the outbox drain were skipped"
        )
        print(f"note: {broker_note}", flush=True)
    ports = Ports(
        args.port, args.model_port, free_port(), free_port(), free_port() if broker_note is None else None
    )
    results: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "quick": args.quick,
            "parts_per_path": count,
            "block": args.block,
            "drain_parts": drain if ports.mqtt is not None else None,
            "opcua_publishing_interval_ms": OPCUA_PUBLISHING_MS,
            "poll_interval_ms": POLL_S * 1000,
            "mqtt_reconnect_max_s": MQTT_RECONNECT_MAX_S,
            "broker_tcp_nodelay": args.broker_nodelay,
            "heartbeat_s": 1.0,
        },
    }
    report: dict[str, Any] = {}
    with integrated_stack(ports, drain, args.broker_nodelay, args.tmp, args.keep_data, report) as setup:
        results |= asyncio.run(measure(setup, ports, count, args.block, drain))
    results |= report
    results["ratios"] = compare(results["paths"])
    results["checks"] = checks(results)
    results["notes"] = notes(results, broker_note)
    results["run_s"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "integrations.json").write_text(json.dumps(results, indent=2, default=str))
    table = markdown(results)
    (args.out / "integrations.md").write_text(table)
    print(table)
    print(f"run time {results['run_s']} s")


if __name__ == "__main__":
    main()
