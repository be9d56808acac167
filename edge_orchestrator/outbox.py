"""The durable outbox: messages for MQTT, webhooks and the hub, queued in the results database in the same
transaction as the decision, and delivered in order per channel, at least once, whatever the receiver does.

A channel is one destination ("mqtt", "webhook:<name>", "hub"). A message leaves the outbox only once its
destination acknowledged it (PUBACK, 2xx); until then it is retried with backoff, in order, across restarts. A
message a receiver rejects for good (a 4xx other than 408/425/429, `max_attempts` times) is parked: kept,
counted and reported, never retried. Receivers deduplicate by item id (at-least-once). The only way a message
leaves unacknowledged is the quota (`outbox_quota_mb`): over it, OK results go first, oldest first, then the
others, oldest first, as image retention does; each drop is counted per channel, durably, and reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from .domain import Inspection, utcnow
from .retention import MB, protected, timestamp, transaction

if TYPE_CHECKING:
    from .storage import Store

log = logging.getLogger(__name__)

SCHEMA = """
    CREATE TABLE outbox (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        channel    TEXT NOT NULL,
        item_id    TEXT NOT NULL,
        body       TEXT NOT NULL,
        created_at TEXT NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        parked     INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX outbox_next ON outbox (channel, parked, seq);
"""
# Migration 3: the quota's priority (0 = an OK result, dropped first) and size; drops counted per channel.
QUOTA_SCHEMA = """
    ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE outbox ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
    UPDATE outbox SET bytes = length(CAST(body AS BLOB)),
        priority = CASE WHEN json_extract(body, '$.decision') = 'OK'
                         AND COALESCE(json_extract(body, '$.verdict.overrides'), 0) = 0 THEN 0 ELSE 1 END;
    -- The quota's total and its drop order, both read from the index alone.
    CREATE INDEX outbox_quota ON outbox (priority, seq, bytes);
    CREATE TABLE outbox_dropped (
        channel TEXT PRIMARY KEY,
        dropped INTEGER NOT NULL
    ) WITHOUT ROWID;
"""
# Rows the quota examines per writer job, so decisions keep being stored while it drops many.
_QUOTA_BATCH = 500


@dataclass(frozen=True, slots=True)
class Entry:
    channel: str
    item_id: str
    body: str
    priority: int = 1  # 0: an OK result, the first the quota drops


@dataclass(frozen=True, slots=True)
class Message:
    seq: int
    channel: str
    item_id: str
    body: str
    attempts: int


Messages = Callable[[Inspection], list[Entry]]


SendBatch = Callable[[list[Message]], Awaitable[None]]


class ChannelDepth(BaseModel):
    channel: str
    pending: int
    parked: int
    oldest_pending_at: str | None
    dropped: int = Field(default=0, description="Messages the outbox quota dropped (OK results first), ever.")


class ResultMessage(Inspection):
    """What each channel carries for each decision: the item as the REST API returns it, and who sent it."""

    event: str = Field(
        default="inspection.decided",
        description="inspection.decided; inspection.verdict (hub only) when an operator judged it later.",
    )
    device_id: str = Field(description="The device that inspected the part.")


class TransientError(Exception):
    """The destination is unreachable or busy: retry the same message later (never skip it).

    From a batch sender: the first `acknowledged` messages of the batch were delivered, the next one was not."""

    def __init__(self, detail: str, retry_after_s: float | None = None, acknowledged: int = 0) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
        self.acknowledged = acknowledged


class RejectedError(Exception):
    """The destination refused this message; after max_attempts it is parked.

    From a batch sender: the first `acknowledged` messages were delivered, and the next one is the refused one."""

    def __init__(self, detail: str, acknowledged: int = 0) -> None:
        super().__init__(detail)
        self.acknowledged = acknowledged


def retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds (0..3600), or None when absent or an HTTP date (then: our backoff)."""
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), 3600.0)
    except ValueError:
        return None


def insert(conn: sqlite3.Connection, entries: Sequence[Entry]) -> None:
    """Inside the caller's transaction (the decided row's)."""
    if not entries:
        return
    now = timestamp(utcnow())
    conn.executemany(
        "INSERT INTO outbox (channel, item_id, body, created_at, priority, bytes) VALUES (?, ?, ?, ?, ?, ?)",
        [(e.channel, e.item_id, e.body, now, e.priority, len(e.body.encode())) for e in entries],
    )


def _batch(conn: sqlite3.Connection, channel: str, limit: int) -> list[Message]:
    rows = conn.execute(
        "SELECT seq, item_id, body, attempts FROM outbox WHERE channel = ? AND parked = 0 ORDER BY seq LIMIT ?",
        (channel, limit),
    ).fetchall()
    return [Message(seq, channel, item_id, body, attempts) for seq, item_id, body, attempts in rows]


def _delete(conn: sqlite3.Connection, channel: str, seqs: Sequence[int]) -> None:
    # No fsync of its own: lost in a power cut, the messages are delivered again (at-least-once), and the
    # next FULL commit syncs the WAL with this change in it.
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        with transaction(conn):
            conn.executemany("DELETE FROM outbox WHERE channel = ? AND seq = ?", [(channel, s) for s in seqs])
    finally:
        conn.execute("PRAGMA synchronous=FULL")


def _failed(conn: sqlite3.Connection, seq: int, error: str, park: bool) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, parked = ? WHERE seq = ?",
            (error[:500], int(park), seq),
        )


def _depth(conn: sqlite3.Connection) -> list[ChannelDepth]:
    rows = conn.execute(
        "SELECT channel, SUM(parked = 0), SUM(parked), MIN(CASE WHEN parked = 0 THEN created_at END)"
        " FROM outbox GROUP BY channel ORDER BY channel"
    ).fetchall()
    dropped = dict(conn.execute("SELECT channel, dropped FROM outbox_dropped").fetchall())
    found = {
        c: ChannelDepth(channel=c, pending=p, parked=k, oldest_pending_at=o, dropped=dropped.pop(c, 0))
        for c, p, k, o in rows
    }
    for c, n in dropped.items():  # emptied channels still report what the quota took from them
        found[c] = ChannelDepth(channel=c, pending=0, parked=0, oldest_pending_at=None, dropped=n)
    return list(found.values())


def _drop_over_quota(conn: sqlite3.Connection, quota_bytes: int) -> tuple[int, dict[str, int]]:
    """One batch: drop the lowest-priority, oldest messages until the outbox fits; (bytes over before, drops)."""
    (total,) = conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM outbox").fetchone()
    excess = int(total) - quota_bytes
    if excess <= 0:
        return 0, {}
    chosen: list[int] = []
    freed = 0
    for seq, size in conn.execute(
        "SELECT seq, bytes FROM outbox ORDER BY priority, seq LIMIT ?", (_QUOTA_BATCH,)
    ):
        if freed >= excess:
            break
        chosen.append(seq)
        freed += size
    marks = ",".join("?" * len(chosen))
    with transaction(conn):
        counts: dict[str, int] = dict(
            conn.execute(
                f"SELECT channel, COUNT(*) FROM outbox WHERE seq IN ({marks}) GROUP BY channel", chosen
            ).fetchall()
        )
        conn.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", chosen)
        conn.executemany(
            "INSERT INTO outbox_dropped (channel, dropped) VALUES (?, ?)"
            " ON CONFLICT (channel) DO UPDATE SET dropped = dropped + excluded.dropped",
            list(counts.items()),
        )
    return excess, counts


class Outbox:
    """The queue side; `deliver()` is the loop that empties one channel through one destination."""

    def __init__(
        self, store: Store, device_id: str, channels: Sequence[str], verdict_channels: Sequence[str] = ()
    ) -> None:
        self._store = store
        self.device_id = device_id
        self.channels = list(channels)
        self.verdict_channels = [c for c in verdict_channels if c in self.channels]
        self._wake: dict[str, asyncio.Event] = {}
        self._retry: dict[str, asyncio.Event] = {}

    def entries(self, item: Inspection) -> list[Entry]:
        """The messages one decided item puts in the outbox: one per channel, the same body."""
        return self._entries(item, "inspection.decided", self.channels)

    def verdict_entries(self, item: Inspection) -> list[Entry]:
        """The messages an operator's verdict puts in the outbox (the verdict channels: the hub)."""
        return self._entries(item, "inspection.verdict", self.verdict_channels)

    def _entries(self, item: Inspection, event: str, channels: Sequence[str]) -> list[Entry]:
        if not channels:
            return []
        body = ResultMessage(**dict(item), event=event, device_id=self.device_id).model_dump_json()
        # Overridden items are model mistakes: kept like KOs, as image retention does.
        return [Entry(channel, item.item_id, body, protected(item)) for channel in channels]

    def notify(self) -> None:
        """New messages were committed: wake the deliverers."""
        for event in self._wake.values():
            event.set()

    def retry_now(self, channel: str) -> None:
        """The destination is known to answer again (the hub took a heartbeat): end the channel's backoff."""
        if (event := self._retry.get(channel)) is not None:
            event.set()

    async def enforce_quota(self, quota_mb: float) -> dict[str, int]:
        """Drop messages until the outbox's bodies fit in quota_mb: OK results first, oldest first, then the
        others, oldest first. Returns (and logs) the drops per channel."""
        dropped: dict[str, int] = {}
        excess = first_excess = 0
        while True:
            excess, counts = await self._store.write(_drop_over_quota, int(quota_mb * MB))
            first_excess = first_excess or excess
            if not counts:
                break
            for channel, n in counts.items():
                dropped[channel] = dropped.get(channel, 0) + n
        if dropped:
            log.warning(
                "outbox over its %g MiB quota by %.0f KiB: dropped %s (OK results first, oldest first)",
                quota_mb,
                first_excess / 1024,
                ", ".join(f"{n} for {c}" for c, n in sorted(dropped.items())),
            )
        return dropped

    async def depth(self) -> list[ChannelDepth]:
        """Every configured channel (0 when empty), and any other channel that holds or lost messages."""
        found = {d.channel: d for d in await self._store.read(_depth)}
        for channel in self.channels:
            found.setdefault(
                channel, ChannelDepth(channel=channel, pending=0, parked=0, oldest_pending_at=None)
            )
        return sorted(found.values(), key=lambda d: d.channel)

    async def deliver(
        self,
        channel: str,
        send: Callable[[Message], Awaitable[None]],
        *,
        max_attempts: int = 5,
        backoff_s: tuple[float, float] = (0.5, 60.0),
        batch: int = 50,
    ) -> None:
        """deliver_batches() for destinations that take one message per request (a PUBACK, a webhook's 2xx):
        in order, forever (cancel to stop); `send(message)` raises TransientError or RejectedError."""

        async def one_by_one(messages: list[Message]) -> None:
            for done, message in enumerate(messages):
                try:
                    await send(message)
                except TransientError as exc:
                    raise TransientError(str(exc), exc.retry_after_s, acknowledged=done) from exc
                except RejectedError as exc:
                    raise RejectedError(str(exc), acknowledged=done) from exc

        await self.deliver_batches(
            channel, one_by_one, max_attempts=max_attempts, backoff_s=backoff_s, batch=batch
        )

    async def deliver_batches(
        self,
        channel: str,
        send: SendBatch,
        *,
        max_attempts: int = 5,
        backoff_s: tuple[float, float] = (0.5, 60.0),
        batch: int = 100,
    ) -> None:
        """deliver() for destinations that take many messages per request: `send(messages)` returns once all
        were acknowledged, or raises TransientError/RejectedError whose `acknowledged` says how many at the
        head were (the next one is the one that failed). Same guarantees: in order, a message leaves only
        once acknowledged, transient failures back off (retry_now() ends the wait), and a message rejected
        max_attempts times is parked."""
        wake = self._wake.setdefault(channel, asyncio.Event())
        again = self._retry.setdefault(channel, asyncio.Event())
        retry = _Backoff(*backoff_s)
        while True:
            wake.clear()
            try:
                messages = await self._store.read(_batch, channel, batch)
                if messages:
                    again.clear()  # a retry_now() from here on cuts the pause after a failure short
                    pause = await self._send_batch(messages, send, retry, max_attempts)
                    if pause is not None:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(pause):
                                await again.wait()
                    continue
            except Exception:  # a storage hiccup or a bug must not end the channel's deliveries for good
                log.exception("%s: delivery failed; retrying in %.1f s", channel, retry.longest)
                await asyncio.sleep(retry.longest)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):  # also picks up messages queued before the wake-up existed
                    await wake.wait()

    async def _send_batch(
        self, messages: list[Message], send: SendBatch, retry: _Backoff, max_attempts: int
    ) -> float | None:
        """One request's worth; returns how long to wait before the next (None: go on at once)."""
        channel = messages[0].channel
        done = 0
        try:
            await send(messages)
            done = len(messages)
            retry.reset()
            return None
        except TransientError as exc:
            done = min(max(exc.acknowledged, 0), len(messages))
            if done:
                retry.reset()
            failed = messages[done] if done < len(messages) else None
            log.warning(
                "%s: %s not delivered yet: %s", channel, f"item {failed.item_id}" if failed else "batch", exc
            )
            return retry.next() if exc.retry_after_s is None else exc.retry_after_s
        except RejectedError as exc:
            done = min(max(exc.acknowledged, 0), len(messages))
            if done == len(messages):
                return None
            message = messages[done]
            park = message.attempts + 1 >= max_attempts
            log.error(
                "%s: item %s rejected (attempt %d%s): %s",
                channel,
                message.item_id,
                message.attempts + 1,
                ", parked" if park else "",
                exc,
            )
            await self._store.write(_failed, message.seq, str(exc), park)
            return None if park else retry.next()
        finally:
            # Shielded: what the destination acknowledged is deleted even if we are cancelled meanwhile.
            if done:
                await asyncio.shield(self._store.write(_delete, channel, [m.seq for m in messages[:done]]))


class _Backoff:
    """Exponential, capped, with ±20 % jitter so a fleet does not retry in step."""

    def __init__(self, first: float, longest: float) -> None:
        self.first = first
        self.longest = longest
        self._delay = first

    def next(self) -> float:
        delay = self._delay
        self._delay = min(self._delay * 2, self.longest)
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._delay = self.first
