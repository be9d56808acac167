"""The durable outbox: messages for MQTT and webhooks, queued in the results database in the same transaction
as the decision, and delivered in order per channel, at least once, whatever the broker or receiver does.

A channel is one destination ("mqtt", "webhook:<name>"). A message leaves the outbox only once its destination
acknowledged it (PUBACK, 2xx); until then it is retried with backoff, in order, across restarts. A message a
receiver rejects for good (a 4xx other than 408/425/429, `max_attempts` times) is parked: kept, counted and
reported, never retried and never silently dropped. Receivers deduplicate by item id (at-least-once).
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
from .retention import timestamp, transaction

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


@dataclass(frozen=True, slots=True)
class Entry:
    channel: str
    item_id: str
    body: str


@dataclass(frozen=True, slots=True)
class Message:
    seq: int
    channel: str
    item_id: str
    body: str
    attempts: int


Messages = Callable[[Inspection], list[Entry]]


class ChannelDepth(BaseModel):
    channel: str
    pending: int
    parked: int
    oldest_pending_at: str | None


class ResultMessage(Inspection):
    """What MQTT and webhooks carry for each decision: the item as the REST API returns it, and who sent it."""

    event: str = Field(default="inspection.decided", description="Always inspection.decided.")
    device_id: str = Field(description="The device that inspected the part.")


class TransientError(Exception):
    """The destination is unreachable or busy: retry the same message later (never skip it)."""

    def __init__(self, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class RejectedError(Exception):
    """The destination refused this message; after max_attempts it is parked."""


def insert(conn: sqlite3.Connection, entries: Sequence[Entry]) -> None:
    """Inside the caller's transaction (the decided row's)."""
    if not entries:
        return
    now = timestamp(utcnow())
    conn.executemany(
        "INSERT INTO outbox (channel, item_id, body, created_at) VALUES (?, ?, ?, ?)",
        [(e.channel, e.item_id, e.body, now) for e in entries],
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
    return [ChannelDepth(channel=c, pending=p, parked=k, oldest_pending_at=o) for c, p, k, o in rows]


class Outbox:
    """The queue side; `deliver()` is the loop that empties one channel through one destination."""

    def __init__(self, store: Store, device_id: str, channels: Sequence[str]) -> None:
        self._store = store
        self.device_id = device_id
        self.channels = list(channels)
        self._wake: dict[str, asyncio.Event] = {}

    def entries(self, item: Inspection) -> list[Entry]:
        """The messages one decided item puts in the outbox: one per channel, the same body."""
        if not self.channels:
            return []
        body = ResultMessage(**dict(item), device_id=self.device_id).model_dump_json()
        return [Entry(channel, item.item_id, body) for channel in self.channels]

    def notify(self) -> None:
        """New messages were committed: wake the deliverers."""
        for event in self._wake.values():
            event.set()

    async def depth(self) -> list[ChannelDepth]:
        """Every configured channel (0 when empty), and any other channel that still holds messages."""
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
        """Send the channel's messages in order, forever (cancel to stop). A TransientError keeps the message
        at the head and retries it with exponential backoff (and jitter); RejectedError counts an attempt and
        parks the message after max_attempts. Acknowledged messages are deleted in batches."""
        wake = self._wake.setdefault(channel, asyncio.Event())
        retry = _Backoff(*backoff_s)
        while True:
            wake.clear()
            try:
                messages = await self._store.read(_batch, channel, batch)
                if messages:
                    await self._send_in_order(messages, send, retry, max_attempts)
                    continue
            except Exception:  # a storage hiccup or a bug must not end the channel's deliveries for good
                log.exception("%s: delivery failed; retrying in %.1f s", channel, retry.longest)
                await asyncio.sleep(retry.longest)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):  # also picks up messages queued before the wake-up existed
                    await wake.wait()

    async def _send_in_order(
        self,
        messages: list[Message],
        send: Callable[[Message], Awaitable[None]],
        retry: _Backoff,
        max_attempts: int,
    ) -> None:
        """Send until the first failure; what was acknowledged is deleted even if we are cancelled meanwhile."""
        done: list[int] = []
        pause: float | None = None
        try:
            for message in messages:
                try:
                    await send(message)
                except TransientError as exc:
                    log.warning("%s: item %s not delivered yet: %s", message.channel, message.item_id, exc)
                    pause = retry.next() if exc.retry_after_s is None else exc.retry_after_s
                    return
                except RejectedError as exc:
                    park = message.attempts + 1 >= max_attempts
                    log.error(
                        "%s: item %s rejected (attempt %d%s): %s",
                        message.channel,
                        message.item_id,
                        message.attempts + 1,
                        ", parked" if park else "",
                        exc,
                    )
                    await self._store.write(_failed, message.seq, str(exc), park)
                    pause = None if park else retry.next()
                    return
                done.append(message.seq)
                retry.reset()
        finally:
            if done:
                await asyncio.shield(self._store.write(_delete, messages[0].channel, done))
            if pause is not None:
                await asyncio.sleep(pause)


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
