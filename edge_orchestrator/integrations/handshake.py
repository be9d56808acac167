"""The PLC handshake, whatever the protocol: Ready → Trigger → Busy → ResultReady → ResultAck → Ready.

OPC UA and Modbus adapters only translate their variables to and from this state machine: they call
`trigger()` on a rising edge of Trigger (with the PartId the PLC wrote first), `acknowledge()` on a rising
edge of ResultAck and `select_recipe()` when RecipeIndex is written, and show every `Signals` they are given.
A result is held until it is acknowledged; a trigger that cannot start an inspection sets ErrorCode and is
never queued or dropped silently. docs/plc-handshake.md has the timing diagram.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from enum import IntEnum
from typing import Protocol

from edge_orchestrator.domain import Decision, Inspection, TriggerRequest
from edge_orchestrator.errors import NotReadyError, OrchestratorError, QueueFullError

log = logging.getLogger(__name__)


class ErrorCode(IntEnum):
    """What ErrorCode says; 0 until something is refused, cleared by the next accepted trigger."""

    NONE = 0
    NOT_READY = 1  # no active station, a recipe switch in progress, or the device is stopping
    BUSY = 2  # trigger while an inspection runs
    RESULT_NOT_ACKNOWLEDGED = 3  # trigger while a result waits for ResultAck
    QUEUE_FULL = 4  # the orchestrator refused the trigger (too many items in flight)
    UNKNOWN_RECIPE = 5  # RecipeIndex has no station in the recipes table
    RECIPE_FAILED = 6  # the station of that recipe could not be activated
    RECIPE_WHILE_BUSY = 7  # RecipeIndex written during an inspection or with a result held
    INVALID_PART_ID = 8  # PartId longer than 128 characters
    INTERNAL = 99


class DefectCode(IntEnum):
    """Reserved DefectCode values; codes of KO labels come from the `defect_codes` table (≥ 10)."""

    NONE = 0  # OK, or no result
    KO = 1  # KO with no label in the table
    NO_DECISION = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Signals:
    """Everything the device shows the PLC. Adapters write the values before the flags (see write order)."""

    ready: bool = False
    busy: bool = False
    result_ready: bool = False
    result_ok: bool = False
    result_ko: bool = False
    result_no_decision: bool = False
    defect_code: int = 0
    error_code: int = 0
    heartbeat: int = 0
    recipe_index: int = 0
    item_id: str = ""
    part_id: str = ""
    results: int = 0  # results produced since start (a PLC can see a new one even if it missed the flag)


class Line(Protocol):
    """What the handshake needs from the orchestrator."""

    @property
    def station_id(self) -> str | None: ...

    async def submit(self, trigger: TriggerRequest, source: str) -> Inspection: ...

    async def decided(self, item_id: str) -> Inspection: ...

    async def switch(self, station_id: str) -> None: ...


Show = Callable[[Signals], Awaitable[None]]


class Handshake:
    def __init__(
        self,
        source: str,
        line: Line,
        *,
        recipes: Mapping[int, str],
        defect_codes: Mapping[str, int],
        heartbeat_s: float = 1.0,
    ) -> None:
        self._source = source
        self._line = line
        self._recipes = dict(recipes)
        self._defect_codes = dict(defect_codes)
        self._heartbeat_s = heartbeat_s
        self._show: Show | None = None
        self._signals = Signals()
        self._switching = False
        self._stopping = False
        self._waiting: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # signals reach the adapter in the order they were decided

    @property
    def signals(self) -> Signals:
        return self._signals

    def watch(self, show: Show) -> None:
        """The adapter's writer: called with the full set of signals after every change."""
        self._show = show

    async def start(self) -> None:
        self._stopping = False
        await self._update(recipe_index=self._active_recipe())
        if self._heartbeat_s > 0:
            self._beat = asyncio.create_task(self._heartbeat(), name=f"{self._source}-heartbeat")

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._beat, self._waiting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._beat = self._waiting = None
        await self._update()

    async def refresh(self) -> None:
        """The active station changed elsewhere (REST, MQTT): Ready and RecipeIndex follow it."""
        await self._update(recipe_index=self._active_recipe())

    # --- what the PLC does -------------------------------------------------------------------------

    async def trigger(self, part_id: str | None) -> None:
        """A rising edge of Trigger. Busy is set before the first await, so a second edge is refused."""
        s = self._signals
        if s.busy:
            return await self._refuse(ErrorCode.BUSY, "a trigger arrived while an inspection runs")
        if s.result_ready:
            return await self._refuse(
                ErrorCode.RESULT_NOT_ACKNOWLEDGED, "a trigger arrived before the last result was acknowledged"
            )
        if not self._can_start():
            return await self._refuse(ErrorCode.NOT_READY, "a trigger arrived while the device is not ready")
        part = (part_id or "").strip() or None
        if part is not None and len(part) > 128:
            return await self._refuse(ErrorCode.INVALID_PART_ID, "PartId is longer than 128 characters")
        self._signals = dataclasses.replace(s, busy=True, ready=False, error_code=ErrorCode.NONE)
        await self._update()
        try:
            item = await self._line.submit(TriggerRequest(part_id=part), self._source)
        except QueueFullError:
            await self._update(busy=False)
            return await self._refuse(ErrorCode.QUEUE_FULL, "the orchestrator refused the trigger")
        except NotReadyError:
            await self._update(busy=False)
            return await self._refuse(ErrorCode.NOT_READY, "the orchestrator is not ready")
        except Exception:
            log.exception("%s: trigger failed", self._source)
            await self._update(busy=False)
            return await self._refuse(ErrorCode.INTERNAL, "the trigger failed")
        self._waiting = asyncio.create_task(self._hold_result(item), name=f"{self._source}-{item.item_id}")

    async def acknowledge(self) -> None:
        """A rising edge of ResultAck: the PLC has read the result; clear it and become ready."""
        if not self._signals.result_ready:
            return  # nothing held: an ack without a result is harmless
        await self._update(
            result_ready=False,
            result_ok=False,
            result_ko=False,
            result_no_decision=False,
            defect_code=DefectCode.NONE,
        )

    async def select_recipe(self, index: int) -> None:
        """RecipeIndex was written: activate its station between parts; refused otherwise."""
        current = self._active_recipe()
        if index == current:
            return
        s = self._signals
        station_id = self._recipes.get(index)
        if station_id is None:
            return await self._refuse(ErrorCode.UNKNOWN_RECIPE, f"recipe {index} is not in the recipes table")
        if s.busy or s.result_ready or self._switching:
            return await self._refuse(
                ErrorCode.RECIPE_WHILE_BUSY, f"recipe {index} requested between results"
            )
        self._switching = True
        await self._update()
        try:
            await self._line.switch(station_id)
        except OrchestratorError as exc:
            log.error("%s: recipe %d (station %s) failed: %s", self._source, index, station_id, exc.detail)
            self._switching = False
            return await self._refuse(ErrorCode.RECIPE_FAILED, f"recipe {index} could not be activated")
        except Exception:
            log.exception("%s: recipe %d (station %s) failed", self._source, index, station_id)
            self._switching = False
            return await self._refuse(ErrorCode.RECIPE_FAILED, f"recipe {index} could not be activated")
        self._switching = False
        await self._update(recipe_index=self._active_recipe(), error_code=0)

    # --- inside ------------------------------------------------------------------------------------

    async def _hold_result(self, submitted: Inspection) -> None:
        try:
            item = await self._line.decided(submitted.item_id)
        except Exception:  # never leave the PLC waiting on Busy: the part gets NO_DECISION (never OK)
            log.exception("%s: the result of %s could not be read", self._source, submitted.item_id)
            item = submitted.model_copy(update={"decision": Decision.NO_DECISION})
            self._signals = dataclasses.replace(self._signals, error_code=ErrorCode.INTERNAL)
        decision = item.decision or Decision.NO_DECISION
        await self._update(
            result_ok=decision == Decision.OK,
            result_ko=decision == Decision.KO,
            result_no_decision=decision == Decision.NO_DECISION,
            defect_code=self.defect_code(item),
            item_id=item.item_id,
            part_id=item.part_id or "",
            results=self._signals.results + 1,
            busy=False,
            result_ready=True,
        )

    def defect_code(self, item: Inspection) -> int:
        """0 OK, 2 NO_DECISION; a KO gets the code of its first label in the table, else 1."""
        if item.decision == Decision.OK:
            return DefectCode.NONE
        if item.decision != Decision.KO:
            return DefectCode.NO_DECISION
        labels = item.ko_labels()
        for label, code in self._defect_codes.items():  # the table's order is the priority
            if label in labels:
                return code
        return DefectCode.KO

    async def _refuse(self, code: ErrorCode, why: str) -> None:
        log.warning("%s: %s (ErrorCode %d)", self._source, why, code)
        await self._update(error_code=code, recipe_index=self._active_recipe())

    def _can_start(self) -> bool:
        s = self._signals
        return (
            not self._stopping
            and not self._switching
            and not s.busy
            and not s.result_ready
            and self._line.station_id is not None
        )

    def _active_recipe(self) -> int:
        station_id = self._line.station_id
        return next((index for index, sid in self._recipes.items() if sid == station_id), 0)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            await self._update(heartbeat=(self._signals.heartbeat + 1) % 2**32)

    async def _update(self, **changes: object) -> None:
        """Apply the changes; Ready is always derived from the rest, never set directly."""
        self._signals = dataclasses.replace(self._signals, **changes)  # type: ignore[arg-type]
        self._signals = dataclasses.replace(self._signals, ready=self._can_start())
        async with self._lock:
            if self._show is not None:
                await self._show(self._signals)
