"""The same handshake over Modbus TCP (pymodbus), for PLCs without OPC UA: coils, inputs and registers.

The register map is docs/plc-modbus.md. pymodbus (3.16) keeps the registers itself and calls one `action`
coroutine on every access, before it reads or writes them: client writes are seen there, once each and in
request order, and reads are answered from the last `Signals` shown, copied in one step. pymodbus is imported
only when a Modbus server is started (it pulls aiohttp, about 0.3 s of import time).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork
from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_orchestrator.errors import IntegrationError
from edge_orchestrator.integrations.handshake import Handshake, Signals

if TYPE_CHECKING:
    from pymodbus.server import ModbusTcpServer

log = logging.getLogger(__name__)

# --- the register map (0-based addresses; docs/plc-modbus.md) -------------------------------------------

COIL_TRIGGER, COIL_RESULT_ACK = 0, 1
COILS = 2
DISCRETE_INPUTS = 6  # Ready, Busy, ResultReady, ResultOK, ResultKO, ResultNoDecision (= status word bits)

HR_RECIPE_INDEX = 0
HR_PART_ID = 1  # 1..16
HR_CONTROL = 17  # bit 0 Trigger, bit 1 ResultAck
HOLDING = 18
HR_MIRROR = 100  # 100..121: a copy of the input registers, for PLCs that can only read holding registers

IR_DEFECT_CODE, IR_ERROR_CODE, IR_HEARTBEAT, IR_STATUS, IR_RESULT_COUNT, IR_RECIPE_INDEX = range(6)
IR_RESULT_PART_ID = 6  # 6..21
INPUTS = 22

PART_ID_REGISTERS = 16  # 32 ASCII characters, 2 per register
CONTROL_TRIGGER, CONTROL_RESULT_ACK = 0x1, 0x2

READ_COILS, READ_DISCRETE_INPUTS, READ_HOLDING, READ_INPUTS = 1, 2, 3, 4
WRITE_COIL, WRITE_REGISTER, WRITE_COILS, WRITE_REGISTERS, MASK_WRITE, READ_WRITE = 5, 6, 15, 16, 22, 23
HOLDING_CODES = frozenset({READ_HOLDING, WRITE_REGISTER, WRITE_REGISTERS, MASK_WRITE, READ_WRITE})

MAX_WAITING = 64  # PLC requests not yet handled by the handshake; more is a client gone wild


class ModbusSettings(BaseModel):
    """The Modbus TCP server a PLC runs the handshake against (docs/plc-modbus.md has the register map)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["modbus"] = Field(default="modbus", description="Always `modbus`.")
    host: str = Field(
        default="0.0.0.0",
        min_length=1,
        description=(
            "Address to listen on: 0.0.0.0 listens on every IPv4 interface; prefer the device's address on the"
            " line network so the server is not reachable from the office network."
        ),
    )
    port: int = Field(
        default=5020,
        ge=1,
        le=65535,
        description="TCP port. The Modbus standard port 502 needs root (or CAP_NET_BIND_SERVICE).",
    )
    unit_id: int = Field(
        default=1,
        ge=0,
        le=255,
        description=(
            "Unit (slave) id the PLC must address. Requests for any other id are answered with exception 0x0B"
            " (gateway target failed to respond); 0 answers every id."
        ),
    )
    allowed_clients: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description=(
            "Addresses or networks allowed to connect (10.20.0.15, or 10.20.0.0/24: a network with its host bits"
            " zero); a connection from anywhere else is closed at once. Modbus has no authentication: empty lets anyone who reaches the"
            " port trigger inspections and switch recipes, so production should list the PLC's address."
        ),
    )

    def build(self, handshake: Handshake, base_dir: Path) -> ModbusServer:
        return ModbusServer(self, handshake, base_dir)


# --- packing -------------------------------------------------------------------------------------------


def pack_ascii(text: str, registers: int = PART_ID_REGISTERS) -> list[int]:
    """Two characters per register, high byte first, NUL-padded; non-ASCII becomes `?`, the rest is cut."""
    raw = text.encode("ascii", "replace")[: 2 * registers].ljust(2 * registers, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def unpack_ascii(registers: list[int]) -> str:
    """The inverse of pack_ascii: up to the first NUL; bytes that are not ASCII become U+FFFD."""
    raw = b"".join((value & 0xFFFF).to_bytes(2, "big") for value in registers)
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def status_word(signals: Signals) -> int:
    """The flags as bits (0 Ready ... 5 ResultNoDecision): input register 3, and the discrete inputs 0..5."""
    flags = (
        signals.ready,
        signals.busy,
        signals.result_ready,
        signals.result_ok,
        signals.result_ko,
        signals.result_no_decision,
    )
    return sum(1 << bit for bit, flag in enumerate(flags) if flag)


def input_registers(signals: Signals) -> list[int]:
    """Input registers 0..21 (and their holding-register mirror 100..121) for these signals."""
    return [
        signals.defect_code & 0xFFFF,
        signals.error_code & 0xFFFF,
        signals.heartbeat % 65536,
        status_word(signals),
        signals.results % 65536,
        signals.recipe_index & 0xFFFF,
        *pack_ascii(signals.part_id),
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class _View:
    """What the PLC reads, replaced as a whole so one read request never mixes two results."""

    status: int
    inputs: list[int]


@dataclasses.dataclass(frozen=True, slots=True)
class _Request:
    """One thing the PLC asked, in the order it asked."""

    kind: Literal["trigger", "acknowledge", "recipe"]
    part_id: str | None = None
    recipe: int = 0


# --- the server ----------------------------------------------------------------------------------------


class ModbusServer:
    def __init__(self, settings: ModbusSettings, handshake: Handshake, base_dir: Path) -> None:
        self.name = "modbus"
        self._settings = settings
        self._handshake = handshake
        self._view = _View(0, input_registers(Signals()))
        # What the PLC last wrote, as pymodbus stored it (only the PLC writes coils and registers 1..17).
        self._trigger_coil = False
        self._ack_coil = False
        self._control = 0
        self._part_id = [0] * PART_ID_REGISTERS
        # RecipeIndex is the one register both sides write: the PLC asks, the device answers with the active
        # recipe once no request of the PLC is waiting (pymodbus only hands registers over during an access).
        self._recipe_requests = 0
        self._recipe_shown = 0
        self._recipe_back: int | None = None
        self._requests: asyncio.Queue[_Request] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._server: ModbusTcpServer | None = None

    async def start(self) -> None:
        settings = self._settings
        self._handshake.watch(self._show)
        server = _tcp_server(settings, self._devices())
        try:
            await server.serve_forever(background=True)
        except RuntimeError:  # pymodbus logs the OSError and only says it could not listen
            reason = await _why_not_listening(settings.host, settings.port)
            raise IntegrationError(
                f"modbus: cannot listen on {settings.host}:{settings.port} ({reason}); choose another port"
                " (ports below 1024 need root) or the address of one of this device's interfaces"
            ) from None
        self._server = server
        self._worker = asyncio.create_task(self._handle_requests(), name="modbus-requests")
        await self._handshake.start()
        log.info(
            "modbus: listening on %s:%d, unit id %s, clients %s",
            settings.host,
            settings.port,
            settings.unit_id or "any",
            ", ".join(map(str, settings.allowed_clients)) or "from anywhere",
        )

    async def stop(self) -> None:
        # The PLC's requests stop reaching the handshake first, so none starts an inspection while it stops.
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        await self._handshake.stop()  # shows Ready = 0 while the PLC may still be connected
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated
            self._server = None

    # --- device → PLC ----------------------------------------------------------------------------------

    async def _show(self, signals: Signals) -> None:
        # No await here: the next read sees all of these signals or none of them.
        self._view = _View(status_word(signals), input_registers(signals))
        if signals.recipe_index != self._recipe_shown and not self._recipe_requests:
            self._recipe_back = signals.recipe_index  # switched elsewhere (REST, MQTT): RecipeIndex follows
        self._recipe_shown = signals.recipe_index

    # --- PLC → device ----------------------------------------------------------------------------------

    def _devices(self) -> list[SimDevice]:
        async def other_unit(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            registers: list[int],
            values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            return ExcCodes.GATEWAY_NO_RESPONSE

        unit_id = self._settings.unit_id
        device = SimDevice(unit_id, simdata=_register_map(), action=self._access)
        if unit_id == 0:  # pymodbus: the device with id 0 answers every id that has no device of its own
            return [device]
        return [device, SimDevice(0, simdata=_register_map(), action=other_unit)]

    async def _access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before each read or write of the unit's registers; it never awaits, so each
        client request is handled as one step. `registers` is the live block (bits packed 16 per register)."""
        if function_code in HOLDING_CODES and self._recipe_back is not None:
            registers[HR_RECIPE_INDEX - start_address] = self._recipe_back
            self._recipe_back = None
        if values is None:  # a read: copy the last signals shown into the block being read
            view = self._view
            if function_code == READ_DISCRETE_INPUTS:
                registers[0 - start_address] = view.status
            elif function_code == READ_INPUTS:
                registers[0 - start_address : INPUTS - start_address] = view.inputs
            elif function_code in HOLDING_CODES:
                registers[HR_MIRROR - start_address : HR_MIRROR + INPUTS - start_address] = view.inputs
            return None
        if self._requests.qsize() > MAX_WAITING:
            return ExcCodes.DEVICE_BUSY  # the write is refused as a whole, nothing of it is stored
        if function_code in (WRITE_COIL, WRITE_COILS):
            if address + len(values) > COILS:
                return ExcCodes.ILLEGAL_ADDRESS  # pymodbus stores coils by 16: 2..15 exist but mean nothing
            for offset, value in enumerate(values):
                self._write_coil(address + offset, bool(value))
        else:  # holding registers 0..17; pymodbus refuses the read-only mirror and the gap itself
            for offset, value in enumerate(values):
                self._write_register(address + offset, int(value))
        return None

    def _write_coil(self, address: int, value: bool) -> None:
        if address == COIL_TRIGGER:
            if value and not self._trigger_coil:
                self._ask(_Request("trigger", part_id=self._current_part_id()))
            self._trigger_coil = value
        else:
            if value and not self._ack_coil:
                self._ask(_Request("acknowledge"))
            self._ack_coil = value

    def _write_register(self, address: int, value: int) -> None:
        if address == HR_RECIPE_INDEX:
            self._recipe_requests += 1
            self._ask(_Request("recipe", recipe=value))
        elif address < HR_CONTROL:
            self._part_id[address - HR_PART_ID] = value
        else:
            rising = value & ~self._control
            if rising & CONTROL_TRIGGER:  # PartId registers written in the same request are already set
                self._ask(_Request("trigger", part_id=self._current_part_id()))
            if rising & CONTROL_RESULT_ACK:
                self._ask(_Request("acknowledge"))
            self._control = value

    def _current_part_id(self) -> str | None:
        return unpack_ascii(self._part_id) or None

    def _ask(self, request: _Request) -> None:
        self._requests.put_nowait(request)

    async def _handle_requests(self) -> None:
        """One request at a time, in order: an inspection never holds up pymodbus answering the PLC."""
        handshake = self._handshake
        while True:
            request = await self._requests.get()
            try:
                if request.kind == "trigger":
                    await handshake.trigger(request.part_id)
                elif request.kind == "acknowledge":
                    await handshake.acknowledge()
                else:
                    await handshake.select_recipe(request.recipe)
            except Exception:
                log.exception("modbus: handling %s failed", request.kind)
            finally:
                if request.kind == "recipe":
                    self._recipe_requests -= 1
                    if not self._recipe_requests:  # refused or not, RecipeIndex shows the active recipe
                        self._recipe_back = handshake.signals.recipe_index


def _register_map() -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
    """Four separate tables (coils, discrete inputs, holding, input registers), addressed from 0."""
    return (
        [SimData(0, count=COILS, values=False, datatype=DataType.BITS)],
        [SimData(0, count=DISCRETE_INPUTS, values=False, datatype=DataType.BITS)],
        [
            SimData(0, count=HOLDING, values=0, datatype=DataType.REGISTERS),
            SimData(HR_MIRROR, count=INPUTS, values=0, datatype=DataType.REGISTERS, readonly=True),
        ],
        [SimData(0, count=INPUTS, values=0, datatype=DataType.REGISTERS)],
    )


def _tcp_server(settings: ModbusSettings, devices: list[SimDevice]) -> ModbusTcpServer:
    """pymodbus's TCP server, closing connections from outside allowed_clients as soon as they are made."""
    from pymodbus.server import ModbusTcpServer  # noqa: PLC0415 (pulls aiohttp: only when configured)
    from pymodbus.server.requesthandler import ServerRequestHandler  # noqa: PLC0415

    networks = list(settings.allowed_clients)

    class GuardedHandler(ServerRequestHandler):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            if networks and not _allowed(peer, networks):
                log.warning("modbus: connection from %s closed (not in allowed_clients)", peer)
                self.close()

    class GuardedServer(ModbusTcpServer):
        def callback_new_connection(self) -> ServerRequestHandler:
            # pymodbus leaves the handler's constructor unannotated
            return GuardedHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)  # type: ignore[no-untyped-call]

    return GuardedServer(devices, address=(settings.host, settings.port))


def _allowed(peer: object, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    if not isinstance(peer, tuple) or not peer:
        return False  # not an IP connection: nothing to check it against
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d
    return any(address in network for network in networks)


async def _why_not_listening(host: str, port: int) -> str:
    """pymodbus swallows the bind error: bind the same way once more to find out why."""
    try:
        probe = await asyncio.get_running_loop().create_server(
            asyncio.Protocol, host, port, reuse_address=True
        )
    except OSError as exc:
        return exc.strerror or str(exc)
    probe.close()
    await probe.wait_closed()
    return "the address could not be bound"
