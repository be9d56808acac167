"""A roll-out in progress, in memory: its hosts' state as ansible-runner's events change it, and each event's detail."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from hub.rollouts.models import clip


@dataclass
class HostState:
    status: str = "pending"
    ok: int = 0
    changed: int = 0
    failed: int = 0
    last_task: str | None = None


@dataclass
class Finished:
    status: str
    rc: int | None


@dataclass
class Run:
    """The roll-out in progress. Only the writer task changes `hosts` (in event order)."""

    id: int
    hosts: dict[str, HostState]
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    closing: bool = False
    failure: str | None = None  # the first failed task, for the roll-out's detail
    error: str | None = None  # ansible-playbook's own ERROR line (bad inventory, vault...)
    done: asyncio.Task[None] | None = None
    stopper: asyncio.Task[None] | None = None


def track(
    run: Run,
    name: str,
    data: dict[str, Any],
    host: str | None,
    task: str | None,
    detail: str | None,
) -> list[str]:
    """Update the hosts' state from one event; returns the hosts whose row changed."""
    if name == "playbook_on_stats":
        return apply_stats(run, data)
    if host is None or not name.startswith("runner_on_"):
        return []
    state = run.hosts.setdefault(host, HostState())
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


def apply_stats(run: Run, data: dict[str, Any]) -> list[str]:
    """The play recap is authoritative: final counts and status of every host it names."""
    counts = {k: data.get(k) or {} for k in ("ok", "changed", "failures", "dark", "skipped", "processed")}
    named = sorted(set().union(*(set(v) for v in counts.values())))
    for host in named:
        state = run.hosts.setdefault(host, HostState())
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


def event_detail(name: str, data: dict[str, Any], stdout: Any) -> str | None:
    """The one line worth keeping of an event: a task's result, the recap's counts, a verbose line..."""
    res = data.get("res") if isinstance(data.get("res"), dict) else None
    if name == "playbook_on_stats":
        ok, changed, failures = (data.get(k) or {} for k in ("ok", "changed", "failures"))
        hosts = sorted(set(data.get("processed") or {}))
        return clip(
            "; ".join(
                f"{h} ok={ok.get(h, 0)} changed={changed.get(h, 0)} failed={failures.get(h, 0)}"
                for h in hosts
            )
        )
    if res is not None:
        message = res.get("msg") or res.get("stderr") or res.get("reason")
        if name == "runner_on_ok":
            state = "changed" if res.get("changed") else "ok"
            return clip(f"{state}: {message}" if isinstance(message, str) and message else state)
        return clip(message or ("failed" if "failed" in name else None))
    if name == "playbook_on_play_start":
        return clip(data.get("name") or data.get("play"))
    if name == "verbose":
        return clip(stdout)
    return None
