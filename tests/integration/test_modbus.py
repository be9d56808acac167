"""The Modbus TCP server seen by a real pymodbus client over loopback: the register map, the handshake, security.

The first tests put the server in front of FakeLine (the test decides each item); the last one runs 100 parts
through the real orchestrator process and checks every one of them through the REST API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from edge_orchestrator.domain import CameraResult, Decision
from edge_orchestrator.errors import IntegrationError
from edge_orchestrator.integrations.handshake import DefectCode, ErrorCode, Handshake
from edge_orchestrator.integrations.modbus import ModbusSettings
from tests.conftest import AUTH, duck_station, free_port, install_station, run_orchestrator
from tests.fakes import FakeLine, detection

TIMEOUT_S = 5.0
RECIPES = {1: "duck-line", 2: "duck-line-b"}
T = TypeVar("T")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- a PLC, through a real Modbus client -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Seen:
    """Input registers 0..21 as one read returns them (or their mirror, holding registers 100..121)."""

    defect_code: int
    error_code: int
    heartbeat: int
    status: int
    results: int
    recipe: int
    result_part_id: str

    @classmethod
    def parse(cls, registers: list[int]) -> Seen:
        raw = b"".join(r.to_bytes(2, "big") for r in registers[6:22])
        defect_code, error_code, heartbeat, status, results, recipe = registers[:6]
        part_id = raw.rstrip(b"\0").decode("ascii")
        return cls(defect_code, error_code, heartbeat, status, results, recipe, part_id)

    def flag(self, bit: int) -> bool:
        return bool(self.status >> bit & 1)

    @property
    def ready(self) -> bool:
        return self.flag(0)

    @property
    def busy(self) -> bool:
        return self.flag(1)

    @property
    def result_ready(self) -> bool:
        return self.flag(2)

    @property
    def decision(self) -> Decision | None:
        """The decision the result flags show (None: no flag, or more than one)."""
        shown = [
            d for bit, d in ((3, Decision.OK), (4, Decision.KO), (5, Decision.NO_DECISION)) if self.flag(bit)
        ]
        return shown[0] if len(shown) == 1 else None


def pack(text: str) -> list[int]:
    raw = text.encode("ascii").ljust(32, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, 32, 2)]


class Plc:
    """What a PLC program does: write coils and registers, poll the device's flags and registers."""

    def __init__(self, client: AsyncModbusTcpClient, unit: int = 1) -> None:
        self.client = client
        self.unit = unit

    async def _ok(self, request: Awaitable[ModbusPDU]) -> ModbusPDU:
        response = await request
        assert not response.isError(), f"the device answered with an exception: {response}"
        return response

    async def inputs(self) -> Seen:
        """FC 4, input registers 0..21 in one request."""
        response = await self._ok(self.client.read_input_registers(0, count=22, device_id=self.unit))
        return Seen.parse(list(response.registers))

    async def mirror(self) -> Seen:
        """FC 3, holding registers 100..121 (for PLCs that read holding registers only)."""
        response = await self._ok(self.client.read_holding_registers(100, count=22, device_id=self.unit))
        return Seen.parse(list(response.registers))

    async def discrete_inputs(self) -> list[bool]:
        response = await self._ok(self.client.read_discrete_inputs(0, count=6, device_id=self.unit))
        return list(response.bits[:6])

    async def holding(self, address: int, count: int = 1) -> list[int]:
        response = await self._ok(
            self.client.read_holding_registers(address, count=count, device_id=self.unit)
        )
        return list(response.registers)

    async def coil(self, address: int, value: bool) -> None:
        await self._ok(self.client.write_coil(address, value, device_id=self.unit))

    async def registers(self, address: int, values: list[int]) -> None:
        await self._ok(self.client.write_registers(address, values, device_id=self.unit))

    async def part_id(self, part_id: str) -> None:
        await self.registers(1, pack(part_id))

    async def until(
        self,
        read: Callable[[], Awaitable[T]],
        check: Callable[[T], bool],
        what: str,
        timeout_s: float = TIMEOUT_S,
    ) -> T:
        """Poll like a PLC scan cycle until `check` holds; fail with the last value seen."""
        deadline = time.monotonic() + timeout_s
        while True:
            seen = await read()
            if check(seen):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout_s} s for {what}; last read {seen}")
            await asyncio.sleep(0.005)


def modbus_client(port: int) -> AsyncModbusTcpClient:
    return AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0, reconnect_delay=0)


@contextlib.asynccontextmanager
async def device(line: FakeLine, **settings: Any) -> AsyncIterator[Plc]:
    """The Modbus server on a loopback port in front of `line`, and a connected PLC."""
    port = free_port()
    config = ModbusSettings.model_validate({"host": "127.0.0.1", "port": port, **settings})
    handshake = Handshake(
        "modbus", line, recipes=RECIPES, defect_codes={"scratch": 10, "dent": 11}, heartbeat_s=0.05
    )
    server = config.build(handshake, Path())
    await server.start()
    client = modbus_client(port)
    try:
        assert await client.connect()
        yield Plc(client)
    finally:
        client.close()
        await server.stop()


def scratched() -> list[CameraResult]:
    return [CameraResult(camera_id="top", decision=Decision.KO, prediction=detection(("scratch", 0.9)))]


# --- the handshake, against FakeLine -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_full_handshake_through_coils() -> None:
    line = FakeLine()
    async with device(line) as plc:
        # given a ready device
        ready = await plc.until(plc.inputs, lambda s: s.ready, "Ready")
        assert (ready.busy, ready.result_ready, ready.error_code, ready.recipe) == (False, False, 0, 1)
        assert await plc.discrete_inputs() == [True, False, False, False, False, False]

        # when the PLC writes the part id and raises Trigger
        await plc.part_id("P-001")
        await plc.coil(0, True)

        # then the device is busy with exactly that part
        busy = await plc.until(plc.inputs, lambda s: s.busy, "Busy")
        assert not busy.ready
        assert [item.part_id for item in line.submitted] == ["P-001"]
        await plc.coil(0, False)

        # when the line decides KO with a scratch, then the result is shown, the flags after the values
        line.decide(line.submitted[0].item_id, Decision.KO, scratched())
        result = await plc.until(plc.inputs, lambda s: s.result_ready, "ResultReady")
        assert (result.decision, result.defect_code, result.result_part_id) == (Decision.KO, 10, "P-001")
        assert (result.busy, result.ready, result.results) == (False, False, 1)
        assert await plc.discrete_inputs() == [False, False, True, False, True, False]

        # when the PLC acknowledges, then the result is cleared and the device is ready again
        await plc.coil(1, True)
        cleared = await plc.until(plc.inputs, lambda s: s.ready, "Ready after ResultAck")
        assert (cleared.result_ready, cleared.decision, cleared.defect_code) == (False, None, DefectCode.NONE)
        assert cleared.results == 1
        await plc.coil(1, False)

        # and the next part goes through the same way (the coils were reset, so they rise again)
        await plc.part_id("P-002")
        await plc.coil(0, True)
        await plc.until(plc.inputs, lambda s: s.busy, "Busy for the second part")
        line.decide(line.submitted[1].item_id, Decision.OK)
        second = await plc.until(plc.inputs, lambda s: s.result_ready, "the second result")
        assert (second.decision, second.defect_code, second.result_part_id, second.results) == (
            Decision.OK,
            0,
            "P-002",
            2,
        )


@pytest.mark.anyio
async def test_full_handshake_through_the_control_word_and_holding_registers_only() -> None:
    line = FakeLine()
    async with device(line) as plc:
        # given a ready device, read through the holding-register mirror only (FC 3)
        await plc.until(plc.mirror, lambda s: s.ready, "Ready in the mirror")

        # when one FC 16 writes PartId (1..16) and the control word (17) with Trigger set
        await plc.registers(1, [*pack("REG-42"), 0b01])

        # then the part id was set before the trigger edge
        busy = await plc.until(plc.mirror, lambda s: s.busy, "Busy in the mirror")
        assert not busy.ready
        assert [item.part_id for item in line.submitted] == ["REG-42"]

        line.decide(line.submitted[0].item_id, Decision.NO_DECISION)
        result = await plc.until(plc.mirror, lambda s: s.result_ready, "ResultReady in the mirror")
        assert (result.decision, result.defect_code, result.result_part_id) == (
            Decision.NO_DECISION,
            DefectCode.NO_DECISION,
            "REG-42",
        )
        assert result == await plc.inputs()  # the mirror is the input registers

        # when the control word drops Trigger and raises ResultAck, then the device is ready again
        await plc.registers(17, [0b10])
        cleared = await plc.until(plc.mirror, lambda s: s.ready, "Ready after ResultAck")
        assert (cleared.result_ready, cleared.decision) == (False, None)

        # and an all-NUL PartId means no part id
        await plc.registers(1, [*[0] * 16, 0b01])
        await plc.until(plc.mirror, lambda s: s.busy, "Busy")
        assert line.submitted[1].part_id is None


@pytest.mark.anyio
async def test_trigger_while_busy_is_refused_and_starts_nothing() -> None:
    line = FakeLine()
    async with device(line) as plc:
        # given an inspection running
        await plc.until(plc.inputs, lambda s: s.ready, "Ready")
        await plc.part_id("P-1")
        await plc.coil(0, True)
        await plc.until(plc.inputs, lambda s: s.busy, "Busy")
        await plc.coil(0, False)

        # when Trigger rises again, through the coil and through the control word
        await plc.coil(0, True)
        refused = await plc.until(plc.inputs, lambda s: s.error_code != 0, "ErrorCode")
        await plc.registers(17, [0b01])
        await asyncio.sleep(0.1)

        # then both are refused with ErrorCode 2 and only the first part was submitted
        assert refused.error_code == ErrorCode.BUSY
        assert refused.busy
        assert len(line.submitted) == 1

        # and the next accepted trigger clears ErrorCode
        line.decide(line.submitted[0].item_id, Decision.OK)
        await plc.until(plc.inputs, lambda s: s.result_ready, "ResultReady")
        await plc.coil(1, True)
        await plc.until(plc.inputs, lambda s: s.ready, "Ready")
        await plc.coil(0, False)
        await plc.coil(0, True)
        accepted = await plc.until(plc.inputs, lambda s: s.busy, "Busy again")
        assert accepted.error_code == 0
        assert len(line.submitted) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("source", ["coil", "control word"])
async def test_rewriting_a_held_trigger_is_not_a_new_edge(source: str) -> None:
    line = FakeLine()

    async def scan(plc: Plc) -> None:
        """A PLC that writes its whole output image every scan cycle, Trigger set."""
        if source == "coil":
            await plc.registers(0, [1, *pack("CYC-1")])
            await plc.client.write_coils(0, [True, False], device_id=1)
        else:
            await plc.registers(0, [1, *pack("CYC-1"), 0b01])

    async with device(line) as plc:
        # given an inspection started by the first scan
        await plc.until(plc.inputs, lambda s: s.ready, "Ready")
        await scan(plc)
        await plc.until(plc.inputs, lambda s: s.busy, "Busy")

        # when the next scans write the same image, Trigger still set
        for _ in range(5):
            await scan(plc)
        await asyncio.sleep(0.1)

        # then there was one edge: one item and no refused trigger
        seen = await plc.inputs()
        assert (len(line.submitted), seen.error_code, seen.busy) == (1, 0, True)


@pytest.mark.anyio
async def test_trigger_before_the_ack_is_refused_and_the_result_is_held() -> None:
    line = FakeLine()
    async with device(line) as plc:
        # given a KO result waiting for ResultAck
        await plc.until(plc.inputs, lambda s: s.ready, "Ready")
        await plc.part_id("P-7")
        await plc.coil(0, True)
        await plc.until(plc.inputs, lambda s: s.busy, "Busy")
        await plc.coil(0, False)
        line.decide(line.submitted[0].item_id, Decision.KO)
        held = await plc.until(plc.inputs, lambda s: s.result_ready, "ResultReady")

        # when the PLC triggers the next part without acknowledging
        await plc.part_id("P-8")
        await plc.coil(0, True)

        # then it is refused with ErrorCode 3 and the result is still the one of P-7
        refused = await plc.until(plc.inputs, lambda s: s.error_code != 0, "ErrorCode")
        assert refused.error_code == ErrorCode.RESULT_NOT_ACKNOWLEDGED
        assert dataclasses.replace(refused, error_code=0, heartbeat=0) == dataclasses.replace(
            held, heartbeat=0
        )
        assert (refused.decision, refused.defect_code, refused.result_part_id) == (Decision.KO, 1, "P-7")
        assert len(line.submitted) == 1


@pytest.mark.anyio
async def test_recipe_index_switches_the_station_or_is_written_back() -> None:
    line = FakeLine()
    async with device(line) as plc:
        # given the device on recipe 1
        await plc.until(plc.inputs, lambda s: s.ready, "Ready")
        assert await plc.holding(0) == [1]

        # when the PLC asks for a recipe that is not in the table
        await plc.registers(0, [9])

        # then ErrorCode 5, no switch, and RecipeIndex is written back to the active recipe
        refused = await plc.until(plc.inputs, lambda s: s.error_code != 0, "ErrorCode")
        assert (refused.error_code, refused.recipe) == (ErrorCode.UNKNOWN_RECIPE, 1)
        assert await plc.until(lambda: plc.holding(0), lambda v: v == [1], "RecipeIndex written back") == [1]
        assert line.switches == []

        # when it asks for recipe 2 (with FC 6), then the line switches to that station
        await plc.client.write_register(0, 2, device_id=1)
        switched = await plc.until(plc.inputs, lambda s: s.recipe == 2, "active RecipeIndex 2")
        assert line.switches == ["duck-line-b"]
        assert (switched.error_code, switched.ready) == (0, True)
        assert await plc.holding(0) == [2]


@pytest.mark.anyio
async def test_heartbeat_counts_up() -> None:
    async with device(FakeLine()) as plc:
        # given the device running, when the PLC reads Heartbeat twice
        first = (await plc.inputs()).heartbeat
        await asyncio.sleep(0.3)
        second = (await plc.inputs()).heartbeat

        # then it has counted up (every 0.05 s here)
        assert second >= first + 2


@pytest.mark.anyio
async def test_writes_outside_the_map_and_other_unit_ids_get_exception_responses() -> None:
    line = FakeLine()
    async with device(line) as plc:
        await plc.until(plc.inputs, lambda s: s.ready, "Ready")

        # when the PLC writes the read-only mirror, a coil past ResultAck, or the gap between the tables
        mirror = await plc.client.write_register(103, 0b01, device_id=1)
        coil = await plc.client.write_coils(0, [True, False, True], device_id=1)
        gap = await plc.client.write_register(50, 1, device_id=1)
        # and addresses another unit id
        other = await plc.client.read_input_registers(0, count=1, device_id=7)

        # then each gets an exception response and nothing happens
        assert (mirror.exception_code, coil.exception_code, gap.exception_code) == (2, 2, 2)
        assert other.exception_code == 0x0B
        await asyncio.sleep(0.1)
        assert line.submitted == []
        assert (await plc.inputs()).ready


@pytest.mark.anyio
async def test_unit_id_0_answers_every_unit_id() -> None:
    async with device(FakeLine(), unit_id=0) as plc:
        plc.unit = 7
        assert (await plc.until(plc.inputs, lambda s: s.ready, "Ready at unit 7")).recipe == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("allowed", "answered"), [(["127.0.0.1/32"], True), (["10.99.0.0/16", "fd00::/8"], False)]
)
async def test_only_allowed_clients_are_answered(allowed: list[str], answered: bool) -> None:
    line = FakeLine()
    port = free_port()
    handshake = Handshake("modbus", line, recipes=RECIPES, defect_codes={})
    server = ModbusSettings.model_validate(
        {"host": "127.0.0.1", "port": port, "allowed_clients": allowed}
    ).build(handshake, Path())
    await server.start()
    client = modbus_client(port)
    try:
        # given a server that allows `allowed`, when a client on 127.0.0.1 connects and tries to trigger
        await client.connect()
        await asyncio.sleep(0.1)
        try:
            response = await client.write_coil(0, True, device_id=1)
            went_through = not response.isError()
        except ModbusException:
            went_through = False
        await asyncio.sleep(0.1)

        # then only an allowed client is answered; the other's connection is closed before it can write
        assert went_through is answered
        assert client.connected is answered
        assert len(line.submitted) == (1 if answered else 0)
    finally:
        client.close()
        await server.stop()


@pytest.mark.anyio
async def test_a_port_in_use_is_a_clear_integration_error() -> None:
    port = free_port()
    first = ModbusSettings(host="127.0.0.1", port=port).build(
        Handshake("modbus", FakeLine(), recipes={}, defect_codes={}), Path()
    )
    await first.start()
    try:
        second = ModbusSettings(host="127.0.0.1", port=port).build(
            Handshake("modbus", FakeLine(), recipes={}, defect_codes={}), Path()
        )
        with pytest.raises(IntegrationError, match=rf"cannot listen on 127\.0\.0\.1:{port} \(.*in use"):
            await second.start()
    finally:
        await first.stop()


# --- 100 parts through the real orchestrator ---------------------------------------------------------------


@dataclasses.dataclass
class Run:
    decisions: dict[str, Decision] = dataclasses.field(default_factory=dict)
    refused_busy: int = 0
    refused_not_acknowledged: int = 0


async def run_parts(port: int, parts: list[str], probe_every: int) -> Run:
    """The PLC program: for each part write PartId, raise Trigger, wait for the result, read it, ResultAck.

    Parts 1..50 use the coils, the others the control word. Every `probe_every` parts it also triggers once
    while Busy and once before the ack, and checks both are refused without touching the held result.
    """
    run = Run()
    client = modbus_client(port)
    assert await client.connect()
    plc = Plc(client)
    try:
        for n, part in enumerate(parts, start=1):
            by_coils = n <= len(parts) // 2

            async def trigger(value: bool, by_coils: bool = by_coils) -> None:
                await (plc.coil(0, value) if by_coils else plc.registers(17, [int(value)]))

            async def ack(value: bool, by_coils: bool = by_coils) -> None:
                await (plc.coil(1, value) if by_coils else plc.registers(17, [0b10 if value else 0]))

            await plc.until(plc.inputs, lambda s: s.ready and not s.result_ready, f"Ready before {part}")
            if by_coils:
                await plc.part_id(part)
                await trigger(True)
            else:
                await plc.registers(1, [*pack(part), 0b01])
            await plc.until(plc.inputs, lambda s: s.busy or s.result_ready, f"Busy for {part}")
            await trigger(False)
            probe = n % probe_every == 2  # not the first part: its capture is paced by the one before
            if probe:  # a second edge while the part is inspected
                await trigger(True)
                await trigger(False)
                refused = await plc.until(plc.inputs, lambda s: s.error_code != 0, "ErrorCode (busy)")
                assert refused.error_code == ErrorCode.BUSY, refused
                run.refused_busy += 1
            result = await plc.until(plc.inputs, lambda s: s.result_ready, f"the result of {part}")
            assert result.result_part_id == part
            assert result.results == n, "exactly one result per part"
            assert result.decision is not None, result
            if probe:  # the next part's trigger before the ack
                await trigger(True)
                await trigger(False)
                refused = await plc.until(
                    plc.inputs, lambda s: s.error_code == ErrorCode.RESULT_NOT_ACKNOWLEDGED, "ErrorCode (ack)"
                )
                assert dataclasses.replace(refused, error_code=0, heartbeat=0) == dataclasses.replace(
                    result, error_code=0, heartbeat=0
                )
                run.refused_not_acknowledged += 1
            run.decisions[part] = result.decision
            await ack(True)
            await plc.until(plc.inputs, lambda s: s.ready and not s.result_ready, f"Ready after {part}")
            await ack(False)

        # then a recipe switch through RecipeIndex
        await plc.registers(0, [2])
        await plc.until(plc.inputs, lambda s: s.recipe == 2 and s.ready, "recipe 2 active", timeout_s=20)
        return run
    finally:
        client.close()


@pytest.mark.slow
def test_100_parts_through_the_real_orchestrator(model_server: str, tmp_path: Path) -> None:
    # given the orchestrator on the duck line (cameras paced at 10 fps, so Busy lasts long enough to probe),
    # a second station for recipe 2, and the Modbus server on a loopback port
    stations = tmp_path / "stations"
    install_station(stations, duck_station("duck-line", fps=10))
    install_station(stations, duck_station("duck-line-b", fps=10))
    port = free_port()
    integrations = tmp_path / "integrations.yaml"
    integrations.write_text(
        yaml.safe_dump(
            {
                "recipes": RECIPES,
                "heartbeat_s": 0.2,
                "modbus": {"host": "127.0.0.1", "port": port, "allowed_clients": ["127.0.0.1/32"]},
            }
        )
    )
    parts = [f"P{n:04d}" for n in range(1, 101)]
    with run_orchestrator(
        tmp_path / "data",
        stations,
        model_server,
        default_station="duck-line",
        EDGE_ORCHESTRATOR_INTEGRATIONS_FILE=str(integrations),
    ) as (base, _):
        # when the PLC runs 100 parts, probing refusals every 25 parts, then switches to recipe 2
        run = asyncio.run(run_parts(port, parts, probe_every=25))

        # then the refusals happened, and each part id has exactly one item, with the decision the PLC read
        assert (run.refused_busy, run.refused_not_acknowledged) == (4, 4)
        with httpx.Client(base_url=base, headers=AUTH, timeout=10) as api:
            for part in parts:
                page = api.get("/api/v1/inspections", params={"part_id": part}).json()
                assert len(page["items"]) == 1, (part, page)
                item = page["items"][0]
                assert (item["decision"], item["source"], item["station_id"]) == (
                    run.decisions[part],
                    "modbus",
                    "duck-line",
                )
            everything = api.get("/api/v1/inspections", params={"limit": 500}).json()
            assert len(everything["items"]) == 100  # the refused triggers started nothing
            active = api.get("/api/v1/stations/active").json()
            assert active["station_id"] == "duck-line-b"
