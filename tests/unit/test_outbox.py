"""The outbox on the real results database: written with the decision, delivered in order, never dropped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from edge_orchestrator.domain import Decision, ItemState
from edge_orchestrator.outbox import Message, Outbox, RejectedError, TransientError
from edge_orchestrator.retention import MB
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


@contextlib.asynccontextmanager
async def delivering_batches(
    outbox: Outbox, channel: str, send: Callable[[list[Message]], Awaitable[None]], **options: object
) -> AsyncIterator[None]:
    task = asyncio.create_task(
        outbox.deliver_batches(channel, send, backoff_s=(0.01, 0.05), **options)  # type: ignore[arg-type]
    )
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


async def message_bytes(store: Store) -> int:
    def total(conn: sqlite3.Connection) -> int:
        (n,) = conn.execute("SELECT COALESCE(SUM(length(CAST(body AS BLOB))), 0) FROM outbox").fetchone()
        return int(n)

    return await store.read(total)


async def test_over_its_quota_the_outbox_drops_ok_results_first_oldest_first_and_counts_them(
    tmp_path: Path,
) -> None:
    async with Store(tmp_path / "data") as store:
        # Given a KO, three OK and another KO queued for two channels
        outbox = Outbox(store, "dev-7", ["mqtt", "hub"])
        decisions = [Decision.KO, Decision.OK, Decision.OK, Decision.OK, Decision.KO]
        ids = [await decide(store, outbox, d) for d in decisions]
        per_item = await message_bytes(store) / len(ids)  # its two messages
        # When the quota holds a bit more than three items' messages
        dropped = await outbox.enforce_quota(3.2 * per_item / MB)
        # Then the two oldest OK items went (from both channels), and the KOs stayed
        assert dropped == {"mqtt": 2, "hub": 2}
        sent: list[str] = []

        async def send(message: Message) -> None:
            sent.append(message.item_id)

        async with delivering(outbox, "mqtt", send):
            await eventually(lambda: len(sent) == 3)
        assert sent == [ids[0], ids[3], ids[4]]
        depth = {d.channel: (d.pending, d.dropped) for d in await outbox.depth()}
        assert depth == {"mqtt": (0, 2), "hub": (3, 2)}
        # When even the KOs do not fit, the oldest KO goes after the last OK
        dropped = await outbox.enforce_quota(0.6 * per_item / MB)
        assert dropped == {"hub": 2}
        [hub, mqtt] = await outbox.depth()
        assert (hub.channel, hub.pending, hub.dropped, mqtt.dropped) == ("hub", 1, 4, 2)
        last: list[Message] = []

        async def keep(messages: list[Message]) -> None:
            last.extend(messages)

        async with delivering_batches(outbox, "hub", keep):
            await eventually(lambda: len(last) == 1)
        assert last[0].item_id == ids[4]
    # And the drops are counted durably: a restart still reports them
    async with Store(tmp_path / "data") as store:
        outbox = Outbox(store, "dev-7", ["mqtt", "hub"])
        assert {d.channel: d.dropped for d in await outbox.depth()} == {"mqtt": 2, "hub": 4}
        assert await outbox.enforce_quota(512) == {}


async def test_batches_go_in_order_and_only_what_was_acknowledged_leaves(tmp_path: Path) -> None:
    async with Store(tmp_path / "data") as store:
        outbox = Outbox(store, "dev-7", ["hub"])
        ids = [await decide(store, outbox) for _ in range(7)]
        batches: list[list[str]] = []
        answers = iter(
            [
                TransientError("hub away"),  # nothing taken
                TransientError("hub timed out mid-batch", acknowledged=2),  # the first two taken
                None,  # the rest taken
            ]
        )

        async def send(messages: list[Message]) -> None:
            batches.append([m.item_id for m in messages])
            answer = next(answers, None)
            if answer is not None:
                raise answer

        async with delivering_batches(outbox, "hub", send, batch=5):
            await eventually(lambda: sum(map(len, batches)) >= 5 + 5 + 5)
        # Then each retry starts with the first message not acknowledged, and nothing is left
        assert batches == [ids[0:5], ids[0:5], ids[2:7]]
        assert [d.pending for d in await outbox.depth()] == [0]


async def test_a_message_refused_in_a_batch_is_parked_after_max_attempts_and_the_rest_goes_on(
    tmp_path: Path,
) -> None:
    async with Store(tmp_path / "data") as store:
        outbox = Outbox(store, "dev-7", ["hub"])
        ids = [await decide(store, outbox) for _ in range(4)]
        delivered: list[str] = []
        refusals: list[str] = []

        async def send(messages: list[Message]) -> None:
            for index, message in enumerate(messages):
                if message.item_id == ids[1]:
                    refusals.append(message.item_id)
                    raise RejectedError("HTTP 422", acknowledged=index)
                delivered.append(message.item_id)

        async with delivering_batches(outbox, "hub", send, max_attempts=3):
            await eventually(lambda: ids[3] in delivered)
        # Then the refused message was tried max_attempts times, parked, and the others delivered in order
        assert refusals == [ids[1]] * 3
        assert list(dict.fromkeys(delivered)) == [ids[0], ids[2], ids[3]]
        [depth] = await outbox.depth()
        assert (depth.pending, depth.parked) == (0, 1)


async def test_retry_now_ends_the_backoff_at_once(tmp_path: Path) -> None:
    async with Store(tmp_path / "data") as store:
        outbox = Outbox(store, "dev-7", ["hub"])
        await decide(store, outbox)
        tries: list[float] = []

        async def send(messages: list[Message]) -> None:
            tries.append(asyncio.get_running_loop().time())
            if len(tries) == 1:
                raise TransientError("hub refused the token (401 invalid_token)", retry_after_s=60)

        async with delivering_batches(outbox, "hub", send):
            await eventually(lambda: len(tries) == 1)
            await asyncio.sleep(0.05)
            outbox.retry_now("hub")  # the hub took a heartbeat again
            await eventually(lambda: len(tries) == 2)
        assert tries[1] - tries[0] < 5
        assert [d.pending for d in await outbox.depth()] == [0]


async def test_a_verdict_queues_a_hub_message_with_the_verdict(tmp_path: Path) -> None:
    async with Store(tmp_path / "data") as store:
        # Given a device delivering to MQTT and the hub, and an OK item already delivered
        outbox = Outbox(store, "dev-7", ["mqtt", "hub"], verdict_channels=["hub"])
        store.queue_verdicts(outbox)
        item_id = await decide(store, outbox, Decision.OK)
        sent: list[Message] = []

        async def send(messages: list[Message]) -> None:
            sent.extend(messages)

        async with delivering_batches(outbox, "hub", send):
            await eventually(lambda: len(sent) == 1)
            # When an operator overrides it
            await store.set_verdict(item_id, Decision.KO, "scratch on the beak", "ana")
            await eventually(lambda: len(sent) == 2)
        # Then the hub (only) gets an inspection.verdict message carrying the verdict
        body = json.loads(sent[1].body)
        assert body["event"] == "inspection.verdict" and body["item_id"] == item_id
        assert body["verdict"]["decision"] == "KO" and body["verdict"]["overrides"] is True
        assert {d.channel: d.pending for d in await outbox.depth()} == {"mqtt": 1, "hub": 0}
