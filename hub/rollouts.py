"""Roll-outs started from the hub: one ansible-playbook at a time through ansible-runner, followed event by event
into rollout_events and rollout_hosts, where the API, its SSE stream and the dashboard read them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import ansible_runner  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Connection, insert, select, update

from hub.db import Database
from hub.errors import ConflictError, HubError, InvalidInputError, NotFoundError
from hub.schema import rollout_events, rollout_hosts, rollouts
from hub.settings import HubSettings

log = logging.getLogger(__name__)

Playbook = Literal["deploy_edge", "update_models", "rollback", "facts"]
RolloutStatus = Literal["pending", "running", "successful", "failed", "canceled"]
HostStatus = Literal["pending", "running", "ok", "changed", "failed", "unreachable", "skipped"]
FINAL: tuple[str, ...] = ("successful", "failed", "canceled")
FINISHED_EVENT = "rollout_finished"
# The playbooks' `hosts:` default (hub/ansible/*.yml): a target only ever narrows this group.
EDGE_GROUP = "edge"
# An Ansible host pattern (groups, hosts, wildcards, `:`/`,` unions, `&` intersections, `!` exclusions). No `@file`
# (reads hosts from a file on the hub), no `~regex`, nothing that could read as an option.
TARGET_PATTERN = r"^[A-Za-z0-9_*!][A-Za-z0-9_.*:!&,\[\]-]{0,254}$"
LIST_HOSTS_TIMEOUT_S = 60.0
MARKER = "HUB_ROLLOUT_RUN"
STOP_GRACE_S = 5.0
DETAIL_CHARS = 500
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UNMATCHED = re.compile(r"Could not match supplied host pattern, ignoring: (\S+)")


class RolloutRunningError(ConflictError):
    code = "rollout_running"


class RolloutNotRunningError(ConflictError):
    code = "rollout_not_running"


class NoInventoryError(HubError):
    status = 503
    code = "no_inventory"


class InventoryError(HubError):
    status = 503
    code = "inventory_error"


class UnknownTargetError(InvalidInputError):
    code = "unknown_target"


class ModelSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="Model name, e.g. duck-detector."
    )
    version: str = Field(pattern=r"^[0-9]{1,9}$", description="Model version (a number).")


class RolloutRequest(BaseModel):
    """What to roll out where; each playbook takes exactly the fields it uses."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    playbook: Playbook = Field(description="The playbook of hub/ansible to run.")
    target: str = Field(
        pattern=TARGET_PATTERN, description="Inventory group or host pattern (`--limit`), e.g. line_lyon_1."
    )
    version: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$",
        description="The edge release to install (deploy_edge only).",
    )
    model: ModelSpec | None = Field(
        default=None, description="The model version to ship (update_models only)."
    )

    @model_validator(mode="after")
    def _fits_playbook(self) -> RolloutRequest:
        if (self.version is not None) != (self.playbook == "deploy_edge"):
            raise ValueError("deploy_edge needs a version; the other playbooks take none")
        if (self.model is not None) != (self.playbook == "update_models"):
            raise ValueError("update_models needs a model (name and version); the other playbooks take none")
        return self


class HostRow(BaseModel):
    host: str
    status: HostStatus
    ok: int = Field(description="Tasks that succeeded on this host (changed ones included).")
    changed: int
    failed: int
    last_task: str | None
    updated_at: datetime


class Rollout(BaseModel):
    id: int
    playbook: Playbook
    target: str
    version: str | None
    models: list[ModelSpec]
    status: RolloutStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    rc: int | None = Field(description="ansible-playbook's exit code.")
    detail: str | None = Field(description="Why it failed or was canceled, in a sentence.")
    hosts: list[HostRow] = Field(description="The target's hosts first (from the inventory), then any other.")


class RolloutEvent(BaseModel):
    id: int
    at: datetime
    host: str | None
    event: str = Field(description=f"ansible-runner's event name (runner_on_ok, ...), or {FINISHED_EVENT}.")
    task: str | None
    detail: str | None
    host_status: HostRow | None = Field(description="The host's row as it is now.")
    rollout_status: RolloutStatus = Field(description="The roll-out's status as it is now.")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # naive UTC in every table


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


def _clip(text: Any) -> str | None:
    if text is None or text == "":
        return None
    value = text if isinstance(text, str) else str(text)
    value = _ANSI.sub("", value).strip()
    return value[:DETAIL_CHARS] if value else None


@dataclass
class _Host:
    status: str = "pending"
    ok: int = 0
    changed: int = 0
    failed: int = 0
    last_task: str | None = None


@dataclass
class _Finished:
    status: str
    rc: int | None


@dataclass
class _Run:
    """The roll-out in progress. Only the writer task changes `hosts` (in event order)."""

    id: int
    hosts: dict[str, _Host]
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    closing: bool = False
    failure: str | None = None  # the first failed task, for the roll-out's detail
    error: str | None = None  # ansible-playbook's own ERROR line (bad inventory, vault...)
    done: asyncio.Task[None] | None = None
    stopper: asyncio.Task[None] | None = None


class Rollouts:
    def __init__(self, settings: HubSettings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._active: _Run | None = None
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
            hosts = await self._list_hosts(request.target)
            rollout_id = await self.db.run(lambda conn: _insert(conn, request, hosts), write=True)
            run = _Run(rollout_id, {h: _Host() for h in hosts})
            self._active = run
        try:
            await self._launch(run, request, hosts)
        except Exception as exc:
            log.exception("roll-out %s could not start", rollout_id)
            run.error = f"the roll-out could not start: {exc}"
            run.queue.put_nowait(("finished", _Finished("failed", None)))
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
        orphans = await self.db.run(_fail_orphans, write=True)
        if orphans:
            log.warning("roll-out(s) %s were left running by a stopped hub: marked failed", orphans)
            # Their ansible-playbook outlived the hub that started it (it runs in its own session).
            await asyncio.gather(*(asyncio.to_thread(_terminate, self._marker(i)) for i in orphans))

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

    def _stop_processes(self, run: _Run) -> None:
        # ansible-runner only kills ansible-playbook's process group, and ansible's workers each run in a session
        # of their own: they would go on with their task. Every process of the run is ended instead.
        if run.stopper is None:
            run.stopper = asyncio.create_task(asyncio.to_thread(_terminate, self._marker(run.id)))

    async def _launch(self, run: _Run, request: RolloutRequest, hosts: list[str]) -> None:
        loop = asyncio.get_running_loop()

        def hand_off(kind: str, payload: Any) -> None:
            # Runner thread → event loop; after the loop closed (hub killed mid-run) there is no one to tell.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(run.queue.put_nowait, (kind, payload))

        await asyncio.to_thread(self._start_runner, run, request, hosts, hand_off)
        run.done = asyncio.create_task(self._write_loop(run))

    def _start_runner(
        self, run: _Run, request: RolloutRequest, hosts: list[str], hand_off: Callable[[str, Any], None]
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
            envvars={**self._env(), MARKER: self._marker(run.id)},
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
            hand_off("finished", _Finished(str(runner.status), runner.rc))

        threading.Thread(target=report_end, name=f"rollout-{run.id}-end", daemon=True).start()

    def _env(self) -> dict[str, str]:
        """ansible's environment: the hub's own ansible first on PATH, its ansible.cfg, host keys checked
        (ansible-runner turns that off unless told), no colours; HUB_ANSIBLE_EXTRA_ENV last."""
        env = {"ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
        config = self.settings.ansible_dir.resolve() / "ansible.cfg"
        if config.is_file():
            env["ANSIBLE_CONFIG"] = str(config)
        env |= self.settings.ansible_extra_env
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', os.environ.get('PATH', ''))}"
        return env

    async def _list_hosts(self, target: str) -> list[str]:
        """The inventory's hosts the target selects, as ansible-playbook will (same binary, same patterns)."""
        ansible = Path(sys.executable).parent / "ansible"  # the ansible-core installed with the hub
        binary = str(ansible) if ansible.exists() else shutil.which("ansible")
        if binary is None:
            raise InventoryError("ansible is not installed beside the hub (pip install ansible-core)")
        argv = [binary, "-i", str(self.settings.inventory)]
        argv += [EDGE_GROUP, "--limit", target, "--list-hosts"]
        if self.settings.vault_password_file is not None:
            argv += ["--vault-password-file", str(self.settings.vault_password_file)]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **await asyncio.to_thread(self._env)},
            cwd=self.settings.ansible_dir,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), LIST_HOSTS_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise InventoryError(
                f"listing the inventory's hosts took more than {LIST_HOSTS_TIMEOUT_S:.0f} s"
            ) from None
        errors = err.decode(errors="replace")
        unmatched = _UNMATCHED.findall(errors)
        if unmatched or "leaves us with no hosts" in errors:
            what = f"{', '.join(unmatched)} match" if unmatched else f"{target} matches"
            raise UnknownTargetError(f"{what} no host of the inventory's {EDGE_GROUP!r} group")
        if proc.returncode != 0:
            lines = [line for line in _ANSI.sub("", errors).splitlines() if "ERROR" in line] or [
                "(no message)"
            ]
            raise InventoryError(f"the inventory cannot be read: {lines[0].strip()[:DETAIL_CHARS]}")
        hosts = [line.strip() for line in out.decode().splitlines()[1:] if line.strip()]
        if not hosts:
            raise UnknownTargetError(f"{target} matches no host of the inventory's {EDGE_GROUP!r} group")
        return hosts

    # --- following a run ----------------------------------------------------------------------------------------

    async def _write_loop(self, run: _Run) -> None:
        """The only writer of a run: events in the order ansible-runner gave them, batched per transaction."""
        finished = False
        while not finished:
            items = [await run.queue.get()]
            while not run.queue.empty():
                items.append(run.queue.get_nowait())
            writes: list[Callable[[Connection], object]] = []
            for kind, payload in items:
                finished = finished or kind == "finished"
                try:
                    writes += self._apply(run, kind, payload)
                except Exception:  # one odd event must not stop the following of the run
                    log.exception("roll-out %s: event %s not understood", run.id, kind)
            try:
                await self.db.run(_all(writes), write=True)
            except Exception:
                log.exception("roll-out %s: events could not be stored", run.id)
            self._notify()
        self._active = None

    def _apply(self, run: _Run, kind: str, payload: Any) -> list[Callable[[Connection], object]]:
        now = _now()
        if kind == "status":
            if payload != "running":
                return []
            return [lambda conn: conn.execute(_set(run.id, status="running", started_at=now))]
        if kind == "finished":
            return self._finish(run, payload, now)
        data: dict[str, Any] = payload
        name = str(data.get("event") or "")
        event_data: dict[str, Any] = data.get("event_data") or {}
        task = _clip(event_data.get("task") or event_data.get("play"))
        detail = _event_detail(name, event_data, data.get("stdout"))
        if name == "verbose" and detail is None:
            return []
        if name == "verbose" and detail and detail.startswith(("ERROR", "[ERROR]")) and run.error is None:
            run.error = detail
        host = event_data.get("host")
        writes: list[Callable[[Connection], object]] = [
            lambda conn: conn.execute(
                insert(rollout_events).values(
                    rollout_id=run.id, at=now, host=host, event=name[:64], task=task, detail=detail
                )
            )
        ]
        changed_hosts = self._track(run, name, event_data, host, task, detail)
        for changed in changed_hosts:
            writes.append(_host_write(run, changed, now))
        return writes

    def _track(
        self,
        run: _Run,
        name: str,
        data: dict[str, Any],
        host: str | None,
        task: str | None,
        detail: str | None,
    ) -> list[str]:
        """Update the hosts' state from one event; returns the hosts whose row changed."""
        if name == "playbook_on_stats":
            return _apply_stats(run, data)
        if host is None or not name.startswith("runner_on_"):
            return []
        state = run.hosts.setdefault(host, _Host())
        state.last_task = task
        res = data.get("res") if isinstance(data.get("res"), dict) else {}
        if name == "runner_on_start":
            state.status = "running"
        elif name == "runner_on_ok":
            state.status, state.ok = "running", state.ok + 1
            state.changed += 1 if res and res.get("changed") else 0
        elif name == "runner_on_failed" and not data.get("ignore_errors"):
            state.status, state.failed = "failed", state.failed + 1
            run.failure = run.failure or f"{host} failed at “{task}”: {detail or 'no message'}"
        elif name == "runner_on_unreachable":
            state.status = "unreachable"
            run.failure = run.failure or f"{host} was unreachable: {detail or 'no message'}"
        elif state.status == "pending":
            state.status = "running"
        return [host]

    def _finish(self, run: _Run, finished: _Finished, now: datetime) -> list[Callable[[Connection], object]]:
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
        writes = [_host_write(run, host, now) for host in run.hosts]
        values = {"status": status, "finished_at": now, "rc": finished.rc, "detail": _clip(detail)}
        writes.append(lambda conn: conn.execute(_set(run.id, **values)))
        writes.append(
            lambda conn: conn.execute(
                insert(rollout_events).values(
                    rollout_id=run.id, at=now, event=FINISHED_EVENT, detail=_clip(detail) or status
                )
            )
        )
        log.info("roll-out %s %s%s", run.id, status, f": {detail}" if detail else "")
        return writes

    def _notify(self) -> None:
        # Wake every follower waiting on the current event, and give the next ones a fresh one.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # --- reading --------------------------------------------------------------------------------------------------

    async def get(self, rollout_id: int) -> Rollout:
        found = await self.db.run(lambda conn: _read(conn, [rollout_id]))
        if not found:
            raise NotFoundError(f"there is no roll-out {rollout_id}", code="rollout_not_found")
        return found[0]

    async def recent(self, limit: int = 50) -> list[Rollout]:
        def read(conn: Connection) -> list[Rollout]:
            ids = conn.execute(select(rollouts.c.id).order_by(rollouts.c.id.desc()).limit(limit)).scalars()
            return _read(conn, list(ids))

        return await self.db.run(read)

    async def follow(self, rollout_id: int, after: int = 0) -> AsyncIterator[RolloutEvent]:
        """The roll-out's events after `after`, then each new one as it is stored, until the final one."""
        last = after
        while True:
            changed = self._changed  # taken before reading: a write after the read sets it
            events, status = await self.db.run(_events_after(rollout_id, last))
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


# --- SQL ---------------------------------------------------------------------------------------------------------


def _terminate(marker: str) -> None:
    """(blocking) SIGTERM every process whose environment carries the run's marker; SIGKILL what is left after
    STOP_GRACE_S. Linux (/proc); elsewhere only ansible-runner's own kill applies."""
    needle = f"{MARKER}={marker}".encode()

    def processes() -> list[int]:
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except (OSError, ValueError):
                continue  # gone meanwhile, or not ours
        return found

    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 2.0)):
        pids = processes()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = processes()
        if not pids:
            return


def _all(writes: list[Callable[[Connection], object]]) -> Callable[[Connection], None]:
    def run(conn: Connection) -> None:
        for write in writes:
            write(conn)

    return run


def _set(rollout_id: int, **values: Any) -> Any:
    return update(rollouts).where(rollouts.c.id == rollout_id).values(**values)


def _host_write(run: _Run, host: str, now: datetime) -> Callable[[Connection], object]:
    state = run.hosts[host]
    values = {
        "status": state.status,
        "ok": state.ok,
        "changed": state.changed,
        "failed": state.failed,
        "last_task": state.last_task,
        "updated_at": now,
    }

    def write(conn: Connection) -> object:
        key = (rollout_hosts.c.rollout_id == run.id) & (rollout_hosts.c.host == host)
        if conn.execute(update(rollout_hosts).where(key).values(**values)).rowcount == 0:
            conn.execute(insert(rollout_hosts).values(rollout_id=run.id, host=host[:255], **values))
        return None

    return write


def _apply_stats(run: _Run, data: dict[str, Any]) -> list[str]:
    """The play recap is authoritative: final counts and status of every host it names."""
    counts = {k: data.get(k) or {} for k in ("ok", "changed", "failures", "dark", "skipped", "processed")}
    named = sorted(set().union(*(set(v) for v in counts.values())))
    for host in named:
        state = run.hosts.setdefault(host, _Host())
        state.ok, state.changed = int(counts["ok"].get(host, 0)), int(counts["changed"].get(host, 0))
        state.failed = int(counts["failures"].get(host, 0))
        if state.failed:
            state.status = "failed"
        elif counts["dark"].get(host):
            state.status = "unreachable"
        elif state.changed:
            state.status = "changed"
        elif state.ok:
            state.status = "ok"
        else:
            state.status = "skipped"
    return named


def _event_detail(name: str, data: dict[str, Any], stdout: Any) -> str | None:
    res = data.get("res") if isinstance(data.get("res"), dict) else None
    if name == "playbook_on_stats":
        ok, changed, failures = (data.get(k) or {} for k in ("ok", "changed", "failures"))
        hosts = sorted(set(data.get("processed") or {}))
        return _clip(
            "; ".join(
                f"{h} ok={ok.get(h, 0)} changed={changed.get(h, 0)} failed={failures.get(h, 0)}"
                for h in hosts
            )
        )
    if res is not None:
        message = res.get("msg") or res.get("stderr") or res.get("reason")
        if name == "runner_on_ok":
            state = "changed" if res.get("changed") else "ok"
            return _clip(f"{state}: {message}" if isinstance(message, str) and message else state)
        return _clip(message or ("failed" if "failed" in name else None))
    if name == "playbook_on_play_start":
        return _clip(data.get("name") or data.get("play"))
    if name == "verbose":
        return _clip(stdout)
    return None


def _insert(conn: Connection, request: RolloutRequest, hosts: list[str]) -> int:
    now = _now()
    models = [request.model.model_dump()] if request.model else None
    rollout_id = conn.execute(
        insert(rollouts).values(
            playbook=request.playbook,
            target=request.target,
            version=request.version,
            models=models,
            status="pending",
            created_at=now,
        )
    ).inserted_primary_key
    assert rollout_id is not None
    new_id = int(rollout_id[0])
    conn.execute(
        insert(rollout_hosts),
        [
            {
                "rollout_id": new_id,
                "host": h,
                "status": "pending",
                "ok": 0,
                "changed": 0,
                "failed": 0,
                "updated_at": now,
            }
            for h in hosts
        ],
    )
    return new_id


def _fail_orphans(conn: Connection) -> list[int]:
    now = _now()
    detail = "The hub stopped during the roll-out."
    orphans = list(
        conn.execute(select(rollouts.c.id).where(rollouts.c.status.in_(["pending", "running"]))).scalars()
    )
    for rollout_id in orphans:
        conn.execute(_set(rollout_id, status="failed", finished_at=now, detail=detail))
        for before, after in (("running", "failed"), ("pending", "skipped")):
            conn.execute(
                update(rollout_hosts)
                .where((rollout_hosts.c.rollout_id == rollout_id) & (rollout_hosts.c.status == before))
                .values(status=after, updated_at=now)
            )
        conn.execute(
            insert(rollout_events).values(rollout_id=rollout_id, at=now, event=FINISHED_EVENT, detail=detail)
        )
    return orphans


def _host_row(row: Any) -> HostRow:
    return HostRow(
        host=row.host,
        status=row.status,
        ok=row.ok,
        changed=row.changed,
        failed=row.failed,
        last_task=row.last_task,
        updated_at=_utc(row.updated_at) or row.updated_at,
    )


def _host_order(host: str) -> tuple[bool, list[tuple[int, str]]]:
    # Devices in natural order (device2 before device10); the controller (facts' report play) last.
    parts = re.findall(r"(\d+)|(\D+)", host)
    return host == "localhost", [(int(d), "") if d else (-1, t) for d, t in parts]


def _read(conn: Connection, ids: list[int]) -> list[Rollout]:
    if not ids:
        return []
    rows = conn.execute(select(rollouts).where(rollouts.c.id.in_(ids)).order_by(rollouts.c.id.desc())).all()
    host_rows = conn.execute(select(rollout_hosts).where(rollout_hosts.c.rollout_id.in_(ids))).all()
    hosts: dict[int, list[HostRow]] = {}
    for host in sorted(host_rows, key=lambda h: _host_order(h.host)):
        hosts.setdefault(host.rollout_id, []).append(_host_row(host))
    return [
        Rollout(
            id=r.id,
            playbook=r.playbook,
            target=r.target,
            version=r.version,
            models=[ModelSpec.model_validate(m) for m in r.models or []],
            status=r.status,
            created_at=_utc(r.created_at) or r.created_at,
            started_at=_utc(r.started_at),
            finished_at=_utc(r.finished_at),
            rc=r.rc,
            detail=r.detail,
            hosts=hosts.get(r.id, []),
        )
        for r in rows
    ]


def _events_after(rollout_id: int, after: int) -> Callable[[Connection], tuple[list[RolloutEvent], str]]:
    def read(conn: Connection) -> tuple[list[RolloutEvent], str]:
        status = conn.execute(select(rollouts.c.status).where(rollouts.c.id == rollout_id)).scalar_one()
        rows = conn.execute(
            select(rollout_events)
            .where((rollout_events.c.rollout_id == rollout_id) & (rollout_events.c.id > after))
            .order_by(rollout_events.c.id)
            .limit(500)
        ).all()
        hosts: dict[str, HostRow] = {}
        if any(r.host for r in rows):
            hosts = {
                h.host: _host_row(h)
                for h in conn.execute(select(rollout_hosts).where(rollout_hosts.c.rollout_id == rollout_id))
            }
        events = [
            RolloutEvent(
                id=r.id,
                at=_utc(r.at) or r.at,
                host=r.host,
                event=r.event,
                task=r.task,
                detail=r.detail,
                host_status=hosts.get(r.host) if r.host else None,
                rollout_status=status,
            )
            for r in rows
        ]
        return events, status

    return read
