"""Roll-outs started from the hub: one ansible-playbook at a time through ansible-runner, followed event by event
into rollout_events and rollout_hosts, where the API, its SSE stream and the dashboard read them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import threading
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import ansible_runner  # type: ignore[import-untyped]

from hub.db import Database
from hub.errors import NotFoundError
from hub.rollouts import store
from hub.rollouts.inventory import MARKER, ansible_env, list_hosts, terminate
from hub.rollouts.models import (
    FINAL,
    FINISHED_EVENT,
    HostRow,
    HostStatus,
    InventoryError,
    ModelSpec,
    NoInventoryError,
    Playbook,
    Rollout,
    RolloutEvent,
    RolloutNotRunningError,
    RolloutRequest,
    RolloutRunningError,
    RolloutStatus,
    UnknownTargetError,
    clip,
)
from hub.rollouts.store import Write
from hub.rollouts.tracking import Finished, HostState, Run, event_detail, track
from hub.settings import HubSettings

__all__ = [
    "FINAL",
    "FINISHED_EVENT",
    "HostRow",
    "HostStatus",
    "InventoryError",
    "ModelSpec",
    "NoInventoryError",
    "Playbook",
    "Rollout",
    "RolloutEvent",
    "RolloutNotRunningError",
    "RolloutRequest",
    "RolloutRunningError",
    "RolloutStatus",
    "Rollouts",
    "UnknownTargetError",
]

log = logging.getLogger(__name__)


class Rollouts:
    def __init__(self, settings: HubSettings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._active: Run | None = None
        self._start_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._runs_dir = settings.data_dir.resolve() / "rollouts"  # rollouts/<id>: each run's private folder

    # --- starting, canceling, stopping -----------------------------------------------------------------------

    async def start(self, request: RolloutRequest) -> Rollout:
        """Check, record (pending, with the target's hosts) and start the playbook; returns at once."""
        async with self._start_lock:  # the check and the insert must not interleave with another start
            if self.settings.inventory is None:
                raise NoInventoryError("the hub has no inventory: set HUB_INVENTORY to roll out")
            if self._active is not None:
                raise RolloutRunningError(f"roll-out {self._active.id} is running: wait for it or cancel it")
            hosts = await list_hosts(self.settings, request.target)
            rollout_id = await self.db.run(
                lambda conn: store.insert_rollout(conn, request, hosts), write=True
            )
            run = Run(rollout_id, {h: HostState() for h in hosts})
            self._active = run
        try:
            await self._launch(run, request, hosts)
        except Exception as exc:
            log.exception("roll-out %s could not start", rollout_id)
            run.error = f"the roll-out could not start: {exc}"
            run.queue.put_nowait(("finished", Finished("failed", None)))
            run.done = asyncio.create_task(self._write_loop(run))
        return await self.get(rollout_id)

    async def cancel(self, rollout_id: int) -> Rollout:
        rollout = await self.get(rollout_id)
        run = self._active
        if run is None or run.id != rollout_id or rollout.status in FINAL:
            raise RolloutNotRunningError(
                f"roll-out {rollout_id} is {rollout.status}: there is nothing to cancel"
            )
        run.cancel.set()
        self._stop_processes(run)
        return rollout

    async def recover(self) -> None:
        """At start: a run the previous process left `running` is marked failed (it died with it)."""
        orphans = await self.db.run(store.fail_orphans, write=True)
        if orphans:
            log.warning("roll-out(s) %s were left running by a stopped hub: marked failed", orphans)
            # Their ansible-playbook outlived the hub that started it (it runs in its own session).
            await asyncio.gather(*(asyncio.to_thread(terminate, self._marker(i)) for i in orphans))

    async def close(self) -> None:
        """Stop following; a running ansible-playbook is cancelled."""
        run = self._active
        if run is None or run.done is None:
            return
        run.closing = True
        run.cancel.set()
        self._stop_processes(run)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(run.done), timeout=15)

    def _marker(self, rollout_id: int) -> str:
        """Set in ansible's environment: every process of the run (workers, connections) inherits it."""
        return str(self._runs_dir / str(rollout_id))

    def _stop_processes(self, run: Run) -> None:
        # ansible-runner only kills ansible-playbook's process group, and ansible's workers each run in a session
        # of their own: they would go on with their task. Every process of the run is ended instead.
        if run.stopper is None:
            run.stopper = asyncio.create_task(asyncio.to_thread(terminate, self._marker(run.id)))

    async def _launch(self, run: Run, request: RolloutRequest, hosts: list[str]) -> None:
        loop = asyncio.get_running_loop()

        def hand_off(kind: str, payload: Any) -> None:
            # Runner thread → event loop; after the loop closed (hub killed mid-run) there is no one to tell.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(run.queue.put_nowait, (kind, payload))

        await asyncio.to_thread(self._start_runner, run, request, hosts, hand_off)
        run.done = asyncio.create_task(self._write_loop(run))

    def _start_runner(
        self, run: Run, request: RolloutRequest, hosts: list[str], hand_off: Callable[[str, Any], None]
    ) -> None:
        """(blocking) The run's private folder, ansible-runner's thread, and a thread that reports its end."""
        private = self._runs_dir / str(run.id)
        private.mkdir(parents=True, exist_ok=True)
        extravars: dict[str, Any] = {}
        limit = request.target
        if request.playbook == "deploy_edge":
            extravars["edge_version"] = request.version
        elif request.playbook == "update_models" and request.model is not None:
            extravars |= {"edge_model_name": request.model.name, "edge_model_version": request.model.version}
        elif request.playbook == "facts":
            # Its second play writes the report on the controller (localhost): keep it with the run's files, for
            # exactly the hosts resolved (an `&` in the target would otherwise drop localhost).
            extravars |= {"edge_facts_report": str(private / "facts.json"), "edge_facts_hosts": hosts}
            limit = ",".join([*hosts, "localhost"])

        def on_event(data: dict[str, Any]) -> bool:
            hand_off("event", data)
            return False  # the database keeps the events: no second copy in the artifacts folder

        def on_status(data: dict[str, Any], runner_config: Any = None) -> None:
            hand_off("status", data.get("status"))

        ansible_dir = self.settings.ansible_dir.resolve()
        vault = self.settings.vault_password_file
        thread, runner = ansible_runner.run_async(
            private_data_dir=str(private),
            project_dir=str(ansible_dir),
            playbook=str(ansible_dir / f"{request.playbook}.yml"),
            inventory=str(Path(self.settings.inventory or "").resolve()),
            limit=limit,
            extravars=extravars,
            envvars={**ansible_env(self.settings), MARKER: self._marker(run.id)},
            cmdline=f"--vault-password-file {shlex.quote(str(vault.resolve()))}" if vault else None,
            ident="run",
            quiet=True,
            suppress_env_files=True,  # no copy of the environment on disk
            settings={"pexpect_timeout": 1},  # how often a cancel is noticed
            event_handler=on_event,
            status_handler=on_status,
            cancel_callback=run.cancel.is_set,
        )

        def report_end() -> None:
            # Joined here, not in the database's thread pool; the runner thread may also die of an exception
            # without calling any callback: its end is reported all the same, after every event it handed off.
            thread.join()
            hand_off("finished", Finished(str(runner.status), runner.rc))

        threading.Thread(target=report_end, name=f"rollout-{run.id}-end", daemon=True).start()

    # --- following a run ----------------------------------------------------------------------------------------

    async def _write_loop(self, run: Run) -> None:
        """The only writer of a run: events in the order ansible-runner gave them, batched per transaction."""
        finished = False
        while not finished:
            items = [await run.queue.get()]
            while not run.queue.empty():
                items.append(run.queue.get_nowait())
            writes: list[Write] = []
            for kind, payload in items:
                finished = finished or kind == "finished"
                try:
                    writes += self._apply(run, kind, payload)
                except Exception:  # one odd event must not stop the following of the run
                    log.exception("roll-out %s: event %s not understood", run.id, kind)
            try:
                await self.db.run(store.all_of(writes), write=True)
            except Exception:
                log.exception("roll-out %s: events could not be stored", run.id)
            self._notify()
        self._active = None

    def _apply(self, run: Run, kind: str, payload: Any) -> list[Write]:
        now = store.utc_now()
        if kind == "status":
            if payload != "running":
                return []
            return [lambda conn: conn.execute(store.set_rollout(run.id, status="running", started_at=now))]
        if kind == "finished":
            return self._finish(run, payload, now)
        data: dict[str, Any] = payload
        name = str(data.get("event") or "")
        event_data: dict[str, Any] = data.get("event_data") or {}
        task = clip(event_data.get("task") or event_data.get("play"))
        detail = event_detail(name, event_data, data.get("stdout"))
        if name == "verbose" and detail is None:
            return []
        if name == "verbose" and detail and detail.startswith(("ERROR", "[ERROR]")) and run.error is None:
            run.error = detail
        host = event_data.get("host")
        writes = [store.event_write(run.id, at=now, host=host, event=name[:64], task=task, detail=detail)]
        for changed in track(run, name, event_data, host, task, detail):
            writes.append(store.host_write(run, changed, now))
        return writes

    def _finish(self, run: Run, finished: Finished, now: datetime) -> list[Write]:
        status, detail = "failed", None
        if finished.status == "canceled" or run.cancel.is_set():  # killed by us: ansible may report it failed
            status = "canceled"
            detail = "The hub stopped during the roll-out." if run.closing else "Canceled from the hub."
        elif finished.status == "successful" and finished.rc == 0:
            status = "successful"
        elif finished.status == "timeout":
            detail = "ansible-playbook ran past its time limit and was stopped."
        else:
            detail = run.failure or run.error or f"ansible-playbook exited with code {finished.rc}."
        for state in run.hosts.values():
            # Never reached: skipped. Interrupted half-way (cancel, or no recap): failed.
            if state.status == "pending":
                state.status = "skipped"
            elif state.status == "running":
                state.status = "failed" if status != "successful" else "ok"
        writes = [store.host_write(run, host, now) for host in run.hosts]
        values = {"status": status, "finished_at": now, "rc": finished.rc, "detail": clip(detail)}
        writes.append(lambda conn: conn.execute(store.set_rollout(run.id, **values)))
        writes.append(store.event_write(run.id, at=now, event=FINISHED_EVENT, detail=clip(detail) or status))
        log.info("roll-out %s %s%s", run.id, status, f": {detail}" if detail else "")
        return writes

    def _notify(self) -> None:
        # Wake every follower waiting on the current event, and give the next ones a fresh one.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # --- reading --------------------------------------------------------------------------------------------------

    async def get(self, rollout_id: int) -> Rollout:
        found = await self.db.run(lambda conn: store.read_rollouts(conn, [rollout_id]))
        if not found:
            raise NotFoundError(f"there is no roll-out {rollout_id}", code="rollout_not_found")
        return found[0]

    async def recent(self, limit: int = 50) -> list[Rollout]:
        return await self.db.run(store.recent_rollouts(limit))

    async def follow(self, rollout_id: int, after: int = 0) -> AsyncIterator[RolloutEvent]:
        """The roll-out's events after `after`, then each new one as it is stored, until the final one."""
        last = after
        while True:
            changed = self._changed  # taken before reading: a write after the read sets it
            events, status = await self.db.run(store.events_after(rollout_id, last))
            for event in events:
                yield event
                last = event.id
                if event.event == FINISHED_EVENT:
                    return
            if not events and status in FINAL:
                return
            if not events:
                # Bounded wait: also notices what another process (a restarted hub's recover) wrote.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=5)
