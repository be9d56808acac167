"""The in-process event stream behind SSE: one event per item state change, decision, verdict and switch."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Literal

from pydantic import BaseModel, Field, JsonValue

EventType = Literal[
    "item.accepted",
    "item.running",
    "item.decided",
    "item.interrupted",
    "item.verdict",
    "station.activated",
    "stream.overflow",
]


class Event(BaseModel):
    id: int = Field(description="Increasing sequence number (SSE id; resume with Last-Event-ID).")
    type: EventType
    data: dict[str, JsonValue]


class EventBus:
    """Fan-out to subscribers with bounded queues; a recent history lets a reconnecting client resume.

    A subscriber that falls `queue_size` events behind is sent `stream.overflow` and dropped, so a stalled
    browser tab can never make the orchestrator hold unbounded memory.
    """

    def __init__(self, history: int = 256, queue_size: int = 512) -> None:
        # Ids start at the current time in ms, so they keep increasing across restarts and a client resuming
        # with Last-Event-ID after a restart never mistakes new events for ones it has seen.
        self._ids = itertools.count(int(time.time() * 1000))
        self._history: deque[Event] = deque(maxlen=history)
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self._queue_size = queue_size

    def publish(self, type_: EventType, data: dict[str, JsonValue]) -> Event:
        event = Event(id=next(self._ids), type=type_, data=data)
        self._history.append(event)
        for queue in list(self._subscribers):
            if queue.qsize() >= self._queue_size - 1:
                self._subscribers.discard(queue)
                queue.put_nowait(Event(id=event.id, type="stream.overflow", data={"missed_from": event.id}))
                queue.put_nowait(None)
            else:
                queue.put_nowait(event)
        return event

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def subscribe(self, last_event_id: int | None = None) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        if last_event_id is not None:
            for event in self._history:
                if event.id > last_event_id:
                    queue.put_nowait(event)
        self._subscribers.add(queue)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        """Ends every subscription (server shutdown)."""
        for queue in list(self._subscribers):
            queue.put_nowait(None)
        self._subscribers.clear()
