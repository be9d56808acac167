"""The API key's sources (environment, file, generated 0600) and the event bus's fan-out, resume and bounds."""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path

import pytest

from edge_orchestrator.auth import ApiKeyError, resolve_api_key
from edge_orchestrator.events import Event, EventBus


def test_the_environment_key_wins(tmp_path: Path) -> None:
    key = resolve_api_key("from-env-0123456789", tmp_path / "absent", tmp_path)
    assert key.value == "from-env-0123456789" and "environment" in key.source
    assert key.matches("from-env-0123456789") and not key.matches("from-env-012345678")
    assert not (tmp_path / "api-key").exists()


def test_a_key_file_is_read_and_a_short_or_missing_one_refused(tmp_path: Path) -> None:
    good = tmp_path / "key"
    good.write_text("k" * 32 + "\n")
    assert resolve_api_key(None, good, tmp_path).value == "k" * 32
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(ApiKeyError, match="shorter"):
        resolve_api_key(None, short, tmp_path)
    with pytest.raises(ApiKeyError, match="cannot be read"):
        resolve_api_key(None, tmp_path / "missing", tmp_path)


def test_without_a_key_one_is_generated_0600_logged_by_path_only_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        first = resolve_api_key(None, None, tmp_path / "data")
    path = tmp_path / "data" / "api-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.source == str(path) and len(first.value) >= 32
    assert str(path) in caplog.text and first.value not in caplog.text
    assert resolve_api_key(None, None, tmp_path / "data").value == first.value


def test_events_fan_out_resume_and_drop_a_stalled_subscriber() -> None:
    async def go() -> None:
        bus = EventBus(history=4, queue_size=3)
        got: list[Event] = []

        async def listen(last: int | None) -> None:
            async for event in bus.subscribe(last):
                got.append(event)
                if event.type == "item.decided":
                    return

        ids = [bus.publish("item.accepted", {"n": i}).id for i in range(6)]
        assert ids == sorted(ids) and len(set(ids)) == 6
        # resume after the fourth: the fifth and sixth come from history, then the live one
        listener = asyncio.create_task(listen(ids[3]))
        await asyncio.sleep(0)
        live = bus.publish("item.decided", {"n": 6}).id
        await listener
        assert [e.id for e in got] == [ids[4], ids[5], live]
        # a restarted orchestrator (seconds later; ids advance slower than the clock's ms) continues above
        await asyncio.sleep(0.05)
        assert EventBus().publish("item.accepted", {}).id > live

        # a subscriber that never reads is told it overflowed and dropped, never buffered without bound
        stalled = bus.subscribe()

        async def next_event() -> Event:
            return await anext(stalled)

        first = asyncio.create_task(next_event())
        await asyncio.sleep(0)
        for i in range(10):
            bus.publish("item.accepted", {"n": i})
        assert bus.subscribers == 0
        assert (await first).type == "item.accepted"
        rest = [event.type async for event in stalled]
        assert rest[-1] == "stream.overflow" and len(rest) <= 3

    asyncio.run(go())
