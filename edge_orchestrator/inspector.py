"""Accepting and running inspections: the bounded, durable queue, the active station, waits and triggers.

An accepted item is in the database before the trigger is answered; it is then captured at once (the part
is in front of the cameras now, not when a worker gets round to it), decided, stored, and published.
Items found undecided at start-up are marked interrupted: never re-captured, since the part has moved on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import JsonValue

from edge_orchestrator.domain import Decision, Inspection, ItemState, TriggerRequest, new_item_id, utcnow
from edge_orchestrator.errors import IdempotencyConflictError, ModelError, NotReadyError, QueueFullError
from edge_orchestrator.events import EventBus
from edge_orchestrator.metrics import OrchestratorMetrics
from edge_orchestrator.model_client import ModelDescription, Predictor
from edge_orchestrator.outbox import Outbox
from edge_orchestrator.pipeline import ActiveStation, Inspected, inspect
from edge_orchestrator.station import Station, check_models
from edge_orchestrator.storage import Store

log = logging.getLogger(__name__)


def _same_trigger(item: Inspection, trigger: TriggerRequest, key: str) -> Inspection:
    first = (item.part_id, item.lot, item.recipe, item.metadata)
    if first != (trigger.part_id, trigger.lot, trigger.recipe, trigger.metadata):
        raise IdempotencyConflictError(
            f"the idempotency key {key[:64]!r} was used by item {item.item_id} for a different trigger"
            " (part id, lot, recipe or metadata differ); use a new key for a new part"
        )
    return item


def _summary(item: Inspection) -> dict[str, JsonValue]:
    return {
        "item_id": item.item_id,
        "station_id": item.station_id,
        "part_id": item.part_id,
        "state": item.state.value,
        "decision": item.decision.value if item.decision else None,
    }


class Inspector:
    def __init__(
        self,
        store: Store,
        models: Predictor,
        events: EventBus,
        metrics: OrchestratorMetrics,
        *,
        base_dir: Path,
        data_dir: Path,
        max_in_flight: int,
        describe: Callable[[str], Awaitable[ModelDescription | None]],
        outbox: Outbox | None = None,
        idempotency_window_s: float = 86400.0,
    ) -> None:
        self._describe = describe
        self._outbox = outbox
        self._idempotency_window_s = idempotency_window_s
        self._keys: dict[str, asyncio.Future[Inspection]] = {}
        self._store = store
        self._models = models
        self._events = events
        self._metrics = metrics
        self._base_dir = base_dir
        self._data_dir = data_dir
        self._max_in_flight = max_in_flight
        self._active: ActiveStation | None = None
        self._switch_lock = asyncio.Lock()
        self._in_flight: dict[str, asyncio.Task[None] | None] = {}
        self._accepted_at: dict[str, datetime] = {}  # of the items in flight
        self._waiters: dict[str, list[asyncio.Future[Inspection]]] = {}
        self._accepting = True
        self._periodic: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    # --- station -------------------------------------------------------------------------------

    @property
    def station(self) -> Station | None:
        return self._active.station if self._active else None

    @property
    def active(self) -> ActiveStation | None:
        return self._active

    async def activate(self, station: Station) -> None:
        """Open the new station's cameras, then swap atomically; the old one closes once its items finish."""
        try:
            await check_models(station, self._describe)
        except ModelError as exc:  # the model server may start after us: readiness reports it meanwhile
            log.warning("station %s not checked against the models: %s", station.id, exc.detail)
        async with self._switch_lock:
            new = await ActiveStation.open(station, self._base_dir, self._data_dir)
            old, self._active = self._active, new
            self._restart_periodic(station)
            if old is not None:
                task = asyncio.create_task(old.close(grace_s=None), name=f"retire-{old.station.id}")
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
        self._events.publish("station.activated", {"station_id": station.id, "revision": station.revision})
        log.info("station %s (revision %s) is active", station.id, station.revision)

    # --- triggers ------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._in_flight)

    def settled_until(self) -> datetime:
        """Every item decided before this instant is stored: now, or the oldest item in flight's acceptance
        (an item is decided after it is accepted). The hub's heartbeat counts stop here, so none is missed."""
        return min([utcnow(), *self._accepted_at.values()])

    async def submit_once(self, trigger: TriggerRequest, source: str, key: str) -> tuple[Inspection, bool]:
        """Like submit(), but a repeat of `key` within the idempotency window returns the first item instead
        of inspecting again: (item, True). A repeat with a different trigger is a conflict, not a replay."""
        pending = self._keys.get(key)
        if pending is not None:  # the same key is being accepted right now: share its outcome
            return _same_trigger(await asyncio.shield(pending), trigger, key), True
        future: asyncio.Future[Inspection] = asyncio.get_running_loop().create_future()
        self._keys[key] = future
        try:
            since = utcnow() - timedelta(seconds=self._idempotency_window_s)
            existing = await self._store.find_idempotent(key, since)
            if existing is not None:
                future.set_result(existing)
                return _same_trigger(existing, trigger, key), True
            item = await self.submit(trigger, source, idempotency_key=key)
            future.set_result(item)
            return item, False
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else NotReadyError("cancelled"))
                future.exception()  # retrieved here: sharing requests re-raise it, none is required
            raise
        finally:
            self._keys.pop(key, None)

    async def submit(
        self, trigger: TriggerRequest, source: str, *, idempotency_key: str | None = None
    ) -> Inspection:
        """Accept one item durably and start it; refuse (never queue without bound) when full."""
        active = self._active
        if not self._accepting or active is None:
            self._metrics.refused.labels("not_ready").inc()
            raise NotReadyError("no station is active" if active is None else "the orchestrator is stopping")
        if len(self._in_flight) >= self._max_in_flight:
            self._metrics.refused.labels("queue_full").inc()
            raise QueueFullError(
                f"{len(self._in_flight)} inspections are already in flight (the limit is {self._max_in_flight}); "
                "the trigger was refused, retry when the line slows down"
            )
        not_before = utcnow()  # a frame from before this instant shows the previous part
        station = active.station
        item = Inspection(
            item_id=new_item_id(),
            station_id=station.id,
            station_revision=station.revision,
            state=ItemState.ACCEPTED,
            source=source,
            part_id=trigger.part_id,
            lot=trigger.lot,
            recipe=trigger.recipe,
            metadata=trigger.metadata,
            idempotency_key=idempotency_key,
            accepted_at=not_before,
        )
        self._in_flight[item.item_id] = None  # hold the slot across the await below
        self._accepted_at[item.item_id] = not_before
        self._metrics.queue_depth.set(len(self._in_flight))
        active.acquire()  # released when the item is done
        try:
            await self._store.accept(item)
        except BaseException:
            active.release()
            self._in_flight.pop(item.item_id, None)
            self._accepted_at.pop(item.item_id, None)
            self._metrics.queue_depth.set(len(self._in_flight))
            raise
        self._events.publish("item.accepted", _summary(item))
        self._in_flight[item.item_id] = asyncio.create_task(
            self._run(item, active), name=f"item-{item.item_id}"
        )
        return item

    async def wait(self, item_id: str, timeout_s: float) -> Inspection | None:
        """The decided item if it is decided within timeout_s, else None."""
        if item_id not in self._in_flight:
            item = await self._store.get(item_id)
            return item if item.decision is not None else None
        future: asyncio.Future[Inspection] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(item_id, []).append(future)
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(item_id, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(item_id, None)

    async def _run(self, item: Inspection, active: ActiveStation) -> None:
        try:
            self._events.publish("item.running", {**_summary(item), "state": ItemState.RUNNING.value})
            try:
                inspected = await inspect(item, active, self._models, item.accepted_at)
            except Exception as exc:  # fail safe: a bug decides NO_DECISION, it never loses the item
                log.exception("inspection %s failed", item.item_id)
                inspected = Inspected(
                    item.model_copy(
                        update={
                            "state": ItemState.DONE,
                            "decision": Decision.NO_DECISION,
                            "reasons": [f"internal error during the inspection ({type(exc).__name__})"],
                            "decided_at": utcnow(),
                        }
                    ),
                    {},
                )
            await self._finish(inspected, active)
        finally:
            active.release()
            self._in_flight.pop(item.item_id, None)
            self._accepted_at.pop(item.item_id, None)
            self._metrics.queue_depth.set(len(self._in_flight))

    async def _finish(self, inspected: Inspected, active: ActiveStation) -> None:
        item = inspected.item
        start = time.perf_counter()
        outbox = self._outbox
        try:
            item = await self._store.complete(
                item, inspected.images, active.station.storage, outbox.entries if outbox else None
            )
            if outbox is not None:
                outbox.notify()
        except Exception:
            # The row stays `accepted`: the next start marks it interrupted. Waiters still learn the decision.
            log.exception("storing inspection %s failed", item.item_id)
        store_s = time.perf_counter() - start
        metrics = self._metrics
        metrics.stage_seconds.labels("store").observe(store_s)
        for stage in ("capture", "predict", "rules", "total"):
            if stage in item.timings_ms:
                metrics.stage_seconds.labels(stage).observe(item.timings_ms[stage] / 1000)
        metrics.inspections.labels(item.decision.value if item.decision else "NONE").inc()
        for camera in item.cameras:
            if camera.error_code:
                metrics.camera_errors.labels(camera.camera_id, camera.error_code).inc()

        for future in self._waiters.pop(item.item_id, []):
            if not future.done():
                future.set_result(item)
        start = time.perf_counter()
        self._events.publish(
            "item.decided",
            {**_summary(item), "reasons": list(item.reasons), "store_ms": round(store_s * 1000, 3)},
        )
        for sink in active.sinks:
            try:
                await sink.publish(item)
            except Exception:
                log.exception("sink %s failed for item %s", sink.name, item.item_id)
        metrics.stage_seconds.labels("publish").observe(time.perf_counter() - start)

    # --- periodic trigger ----------------------------------------------------------------------

    def _restart_periodic(self, station: Station) -> None:
        if self._periodic is not None:
            self._periodic.cancel()
            self._periodic = None
        periodic = station.triggers.periodic
        if periodic is not None and periodic.enabled:
            self._periodic = asyncio.create_task(
                self._tick(periodic.interval_ms / 1000), name="periodic-trigger"
            )

    async def _tick(self, interval_s: float) -> None:
        """Fixed-rate (no drift): a slow inspection never delays the next trigger; missed ticks are refused."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += interval_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if loop.time() - next_at > interval_s:  # far behind (suspended machine): skip, do not burst
                next_at = loop.time()
            try:
                await self.submit(TriggerRequest(), "periodic")
            except (QueueFullError, NotReadyError) as exc:
                log.warning("periodic trigger refused: %s", exc.detail)
            except Exception:
                log.exception("periodic trigger failed")

    # --- start and stop ------------------------------------------------------------------------

    async def recover(self) -> list[Inspection]:
        """Mark the items a previous run accepted but never decided as interrupted (NO_DECISION)."""
        outbox = self._outbox
        recovered = await self._store.recover_interrupted(outbox.entries if outbox else None)
        for item in recovered:
            self._metrics.interrupted.inc()
            self._events.publish("item.interrupted", _summary(item))
        if recovered:
            log.warning("%d accepted item(s) were interrupted by the previous stop", len(recovered))
        return recovered

    async def close(self, grace_s: float) -> None:
        """Stop accepting, let items in flight finish for grace_s, then close the station."""
        self._accepting = False
        if self._periodic is not None:
            self._periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._periodic
        tasks = [t for t in self._in_flight.values() if t is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:  # their rows stay `accepted`: interrupted at the next start
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._active is not None:
            await self._active.close(grace_s=0)
        for task in list(self._retiring):
            await task
