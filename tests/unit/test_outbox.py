"""The outbox on the real results database: written with the decision, delivered in order, never dropped."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from edge_orchestrator.domain import Decision, ItemState
from edge_orchestrator.outbox import Message, Outbox, RejectedError, TransientError
from edge_orchestrator.storage import Store
from tests.unit.test_storage import KEEP_ALL, accepted, decided, jpegs

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def decide(store: Store, outbox: Outbox, decision: Decision = Decision.OK) -> str:
    item = accepted()
    await store.accept(item)
    result = decided(item, decision)
    await store.complete(result, jpegs(result), KEEP_ALL, outbox.entries)
    outbox.notify()
    return item.item_id


@contextlib.asynccontextmanager
async def delivering(
    outbox: Outbox, channel: str, send: Callable[[Message], Awaitable[None]], **options: object
) -> AsyncIterator[None]:
    task = asyncio.create_task(outbox.deliver(channel, send, backoff_s=(0.01, 0.05), **options))  # type: ignore[arg-type]
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(check: Callable[[], bool]) -> None:
    for _ in range(500):  # 5 s at most
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached in 5 s")


async def test_each_decision_is_queued_once_per_channel_with_the_device_id(tmp_path: Path) -> None:
    async with Store(tmp_path / "data") as store:
        outbox = Outbox(store, "dev-7", ["mqtt", "webhook:mes"])
        item_id = await decide(store, outbox, Decision.KO)
        depth = {d.channel: d.pending for d in await outbox.depth()}
        assert depth == {"mqtt": 1, "webhook:mes": 1}
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        async with delivering(outbox, "mqtt", send):
            await eventually(lambda: len(sent) == 1)
        body = json.loads(sent[0].body)
        assert body["item_id"] == item_id and body["device_id"] == "dev-7" and body["decision"] == "KO"
        assert body["event"] == "inspection.decided" and body["state"] == ItemState.DONE
        assert {d.channel: d.pending for d in await outbox.depth()} == {"mqtt": 0, "webhook:mes": 1}


async def test_no_channels_means_no_messages(tmp_path: Path) -> None:
    async with Store(tmp_path / "data") as store:
        outbox = Outbox(store, "dev-7", [])
        await decide(store, outbox)
        assert await outbox.depth() == []


async def test_a_transient_failure_keeps_the_order(tmp_path: Path) -> None:
    async with Store(tmp_path / "data") as store:
        outbox = Outbox(store, "dev-7", ["mqtt"])
        ids = [await decide(store, outbox) for _ in range(5)]
        delivered: list[str] = []
        failures = iter([False, True, True, False, True, False, False, False, False, False, False])

        async def flaky(message: Message) -> None:
            if next(failures):
                raise TransientError("broker away")
            delivered.append(message.item_id)

        async with delivering(outbox, "mqtt", flaky):
            await eventually(lambda: len(delivered) == 5)
        assert delivered == ids


async def test_a_rejected_message_is_parked_after_max_attempts_and_the_rest_goes_on(tmp_path: Path) -> None:
    async with Store(tmp_path / "data") as store:
        outbox = Outbox(store, "dev-7", ["webhook:mes"])
        ids = [await decide(store, outbox) for _ in range(3)]
        tries: list[str] = []

        async def picky(message: Message) -> None:
            tries.append(message.item_id)
            if message.item_id == ids[1]:
                raise RejectedError("HTTP 400")

        async with delivering(outbox, "webhook:mes", picky, max_attempts=3):
            await eventually(lambda: ids[2] in tries)
        assert tries == [ids[0], ids[1], ids[1], ids[1], ids[2]]
        [depth] = await outbox.depth()
        assert (depth.pending, depth.parked) == (0, 1)


async def test_undelivered_messages_survive_a_restart(tmp_path: Path) -> None:
    async with Store(tmp_path / "data") as store:
        ids = [await decide(store, Outbox(store, "dev-7", ["mqtt"])) for _ in range(3)]
    async with Store(tmp_path / "data") as store:
        outbox = Outbox(store, "dev-7", ["mqtt"])
        delivered: list[str] = []

        async def send(message: Message) -> None:
            delivered.append(message.item_id)

        async with delivering(outbox, "mqtt", send):
            await eventually(lambda: len(delivered) == 3)
        assert delivered == ids


async def test_interrupted_items_are_published_too(tmp_path: Path) -> None:
    async with Store(tmp_path / "data") as store:
        item = accepted()
        await store.accept(item)
    async with Store(tmp_path / "data") as store:
        outbox = Outbox(store, "dev-7", ["mqtt"])
        await store.recover_interrupted(outbox.entries)
        [depth] = await outbox.depth()
        assert depth.pending == 1
