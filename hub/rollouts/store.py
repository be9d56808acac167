"""The SQL of roll-outs: reads and writes of the rollouts, rollout_hosts and rollout_events tables."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from hub.rollouts.models import FINISHED_EVENT, HostRow, ModelSpec, Rollout, RolloutEvent, RolloutRequest
from hub.rollouts.tracking import Run
from hub.schema import rollout_events, rollout_hosts, rollouts

Write = Callable[[Connection], object]


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # naive UTC in every table


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


def all_of(writes: list[Write]) -> Callable[[Connection], None]:
    """The writes as one transaction's work."""

    def run(conn: Connection) -> None:
        for write in writes:
            write(conn)

    return run


def set_rollout(rollout_id: int, **values: Any) -> Any:
    return update(rollouts).where(rollouts.c.id == rollout_id).values(**values)


def event_write(rollout_id: int, **values: Any) -> Write:
    return lambda conn: conn.execute(insert(rollout_events).values(rollout_id=rollout_id, **values))


def host_write(run: Run, host: str, now: datetime) -> Write:
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


def insert_rollout(conn: Connection, request: RolloutRequest, hosts: list[str]) -> int:
    now = utc_now()
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


def fail_orphans(conn: Connection) -> list[int]:
    now = utc_now()
    detail = "The hub stopped during the roll-out."
    orphans = list(
        conn.execute(select(rollouts.c.id).where(rollouts.c.status.in_(["pending", "running"]))).scalars()
    )
    for rollout_id in orphans:
        conn.execute(set_rollout(rollout_id, status="failed", finished_at=now, detail=detail))
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


def read_rollouts(conn: Connection, ids: list[int]) -> list[Rollout]:
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


def recent_rollouts(limit: int) -> Callable[[Connection], list[Rollout]]:
    def read(conn: Connection) -> list[Rollout]:
        ids = conn.execute(select(rollouts.c.id).order_by(rollouts.c.id.desc()).limit(limit)).scalars()
        return read_rollouts(conn, list(ids))

    return read


def events_after(rollout_id: int, after: int) -> Callable[[Connection], tuple[list[RolloutEvent], str]]:
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
