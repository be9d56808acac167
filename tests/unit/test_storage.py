"""Storage: the durable queue, results and images on a real SQLite database and real files."""

from __future__ import annotations

import os
import sqlite3
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from edge_orchestrator import retention
from edge_orchestrator.domain import (
    CameraResult,
    Decision,
    Detection,
    ImageInfo,
    Inspection,
    ItemState,
    Prediction,
    new_item_id,
)
from edge_orchestrator.errors import ImageNotFoundError, InvalidItemIdError, ItemNotFoundError
from edge_orchestrator.storage import (
    INTERRUPTED_REASON,
    InspectionQuery,
    InvalidCursorError,
    InvalidVerdictError,
    ItemStateError,
    NotDecidedError,
    StorageError,
    StoragePolicy,
    Store,
)

REPO = Path(__file__).parents[2]
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
KEEP_ALL = StoragePolicy(min_free_mb=0, keep_results_days=None)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "data") as opened:
        yield opened


def accepted(
    at: datetime = T0, station_id: str = "duck-line", part_id: str | None = None, item_id: str | None = None
) -> Inspection:
    return Inspection(
        item_id=item_id or new_item_id(),
        station_id=station_id,
        station_revision="rev1",
        state=ItemState.ACCEPTED,
        source="api",
        part_id=part_id,
        lot="lot-7",
        accepted_at=at,
    )


def camera(camera_id: str, decision: Decision, labels: tuple[str, ...] = ()) -> CameraResult:
    prediction = Prediction(
        model_name="duck-detector",
        model_version="1",
        task="detection",
        detections=[Detection(label=label, score=0.9, box=(0.1, 0.1, 0.5, 0.5)) for label in labels],
    )
    return CameraResult(
        camera_id=camera_id,
        decision=decision,
        prediction=prediction,
        image=ImageInfo(width=64, height=48, bytes=0),
    )


def decided(
    item: Inspection,
    decision: Decision,
    latency_ms: float = 100.0,
    cameras: tuple[CameraResult, ...] | None = None,
) -> Inspection:
    if cameras is None:
        cameras = (camera("top", decision), camera("side", decision))
    return item.model_copy(
        update={
            "decision": decision,
            "decided_at": item.accepted_at + timedelta(milliseconds=latency_ms),
            "reasons": [f"machine said {decision}"],
            "cameras": list(cameras),
        }
    )


def jpegs(item: Inspection, size: int = 1000) -> dict[str, bytes]:
    """Distinct fake JPEG bytes per camera (storage never decodes them)."""
    return {c.camera_id: (c.camera_id + item.item_id).encode().ljust(size, b".") for c in item.cameras}


async def run(
    store: Store,
    decision: Decision,
    at: datetime = T0,
    *,
    policy: StoragePolicy = KEEP_ALL,
    station_id: str = "duck-line",
    part_id: str | None = None,
    latency_ms: float = 100.0,
    cameras: tuple[CameraResult, ...] | None = None,
) -> Inspection:
    """One item through the whole queue: accepted, running, done (with 1000-byte images)."""
    item = accepted(at, station_id, part_id)
    await store.accept(item)
    await store.mark_running(item.item_id)
    result = decided(item, decision, latency_ms, cameras)
    return await store.complete(result, jpegs(result), policy)


@pytest.mark.anyio
async def test_an_item_round_trips_with_its_images(store: Store, tmp_path: Path) -> None:
    item = accepted(part_id="duck-42")
    await store.accept(item)
    assert (await store.get(item.item_id)).state == ItemState.ACCEPTED
    await store.mark_running(item.item_id)
    assert (await store.get(item.item_id)).state == ItemState.RUNNING
    result = decided(
        item, Decision.KO, cameras=(camera("top", Decision.KO, ("crack",)), camera("side", Decision.OK))
    )
    images = jpegs(result, size=1234)

    completed = await store.complete(result, images, KEEP_ALL)

    stored = await store.get(item.item_id)
    assert stored == completed
    assert stored.state == ItemState.DONE and stored.decision == Decision.KO and stored.part_id == "duck-42"
    for cam in stored.cameras:
        assert cam.image == ImageInfo(width=64, height=48, bytes=1234, stored=True)
        path = await store.image_file(item.item_id, cam.camera_id)
        assert path.read_bytes() == images[cam.camera_id]
        assert path == tmp_path / "data" / "images" / "2024/05/01" / item.item_id / f"{cam.camera_id}.jpg"
    assert not list((tmp_path / "data").rglob("*.tmp"))
    usage = await store.usage()
    assert (usage.image_bytes, usage.image_files, usage.items) == (2468, 2, 1)


@pytest.mark.anyio
async def test_reads_do_not_wait_for_a_write_in_progress(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    done_before = await run(store, Decision.KO)
    item = accepted(T0 + timedelta(seconds=1))
    await store.accept(item)
    await store.mark_running(item.item_id)
    # The writer thread is held inside complete()'s write transaction until released.
    entered, release = threading.Event(), threading.Event()
    record_images = retention.record_images

    def slow_record_images(conn: sqlite3.Connection, item: Inspection, written: Mapping[str, str]) -> None:
        entered.set()
        release.wait(timeout=30)
        record_images(conn, item, written)

    monkeypatch.setattr(retention, "record_images", slow_record_images)
    result = decided(item, Decision.OK)
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.complete, result, jpegs(result), KEEP_ALL)
        try:
            with anyio.fail_after(10):
                assert await anyio.to_thread.run_sync(entered.wait, 10)
            with anyio.fail_after(5):  # on the writer's thread these would wait the full 30 s
                assert await store.get(done_before.item_id) == done_before
                # The write is not committed yet: readers see the state before it.
                assert (await store.get(item.item_id)).state == ItemState.RUNNING
                stats = await store.stats(T0, T0 + timedelta(minutes=1))
                assert stats.counts[Decision.KO] == 1 and stats.counts[Decision.OK] == 0
                assert [i.item_id for i in (await store.query(InspectionQuery())).items] == [
                    item.item_id,
                    done_before.item_id,
                ]
                assert (await store.usage()).image_files == 2
                assert (await store.image_file(done_before.item_id, "top")).is_file()
            assert not release.is_set()  # the writer was busy the whole time
        finally:
            release.set()
    assert (await store.get(item.item_id)).state == ItemState.DONE


@pytest.mark.anyio
async def test_a_read_right_after_a_write_sees_it(store: Store, tmp_path: Path) -> None:
    for n in range(1, 21):
        item = accepted(T0 + timedelta(seconds=n))
        await store.accept(item)
        assert (await store.get(item.item_id)).state == ItemState.ACCEPTED
        await store.mark_running(item.item_id)
        assert (await store.get(item.item_id)).state == ItemState.RUNNING
        result = decided(item, Decision.KO)
        done = await store.complete(result, jpegs(result), KEEP_ALL)
        assert await store.get(item.item_id) == done
        assert (await store.stats(T0, T0 + timedelta(minutes=1))).counts[Decision.KO] == n
        assert (await store.query(InspectionQuery(limit=1))).items == [done]
        assert (await store.usage()).image_files == 2 * n
        overridden = await store.set_verdict(item.item_id, Decision.OK, None, "alice")
        assert await store.get(item.item_id) == overridden
    await store.enforce_retention(
        StoragePolicy(quota_mb=1000 / 1024**2, min_free_mb=0, keep_results_days=None)
    )
    assert (await store.usage()).image_files == 1
    # No read transaction outlives its call: a checkpoint can empty the whole WAL.
    with sqlite3.connect(tmp_path / "data" / "inspections.db", timeout=0.1) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0


@pytest.mark.anyio
async def test_a_result_is_kept_even_if_its_item_was_never_accepted(store: Store) -> None:
    item = accepted()

    done = await store.complete(decided(item, Decision.OK), {}, KEEP_ALL)

    assert await store.get(item.item_id) == done
    assert done.state == ItemState.DONE and all(c.image and not c.image.stored for c in done.cameras)


@pytest.mark.anyio
async def test_images_may_live_on_another_disk_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "usb").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "images").symlink_to(tmp_path / "usb")
    async with Store(tmp_path / "data") as store:
        ko = await run(store, Decision.KO)
        path = await store.image_file(ko.item_id, "top")
    assert path.is_relative_to(tmp_path / "usb") and path.read_bytes() == jpegs(ko)["top"]


@pytest.mark.anyio
async def test_a_hostile_camera_id_cannot_write_or_read_outside_the_images_directory(
    store: Store, tmp_path: Path
) -> None:
    item = accepted()
    result = decided(item, Decision.KO, cameras=(camera("../../../escape", Decision.KO),))
    await store.accept(item)
    await store.complete(result, {"../../../escape": b"jpeg"}, KEEP_ALL)

    path = await store.image_file(item.item_id, "../../../escape")
    assert path.is_relative_to(tmp_path / "data" / "images" / "2024/05/01" / item.item_id)
    assert path.read_bytes() == b"jpeg"
    with pytest.raises(InvalidItemIdError):
        await store.image_file("../" + item.item_id, "top")


@pytest.mark.anyio
async def test_an_accepted_item_is_on_disk_for_another_process_as_soon_as_accept_returns(
    store: Store, tmp_path: Path
) -> None:
    item = accepted(part_id="duck-1")
    await store.accept(item)

    reader = textwrap.dedent(
        """
        import sqlite3, sys
        row = sqlite3.connect(sys.argv[1]).execute(
            "SELECT state, part_id FROM items WHERE item_id = ?", (sys.argv[2],)).fetchone()
        print(row)
        """
    )
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-c", reader, str(tmp_path / "data" / "inspections.db"), item.item_id]
        )
    out = done.stdout.decode()
    assert out.strip() == "('accepted', 'duck-1')"


@pytest.mark.anyio
async def test_undecided_items_are_interrupted_after_a_restart_and_keep_what_they_had(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with Store(data) as first:
        waiting = accepted(part_id="duck-1")
        await first.accept(waiting)
        running = accepted(T0 + timedelta(seconds=1), part_id="duck-2")
        await first.accept(running)
        await first.mark_running(running.item_id)
        finished = await run(first, Decision.OK, T0 + timedelta(seconds=2))

    async with Store(data) as second:
        recovered = await second.recover_interrupted()

        assert [item.item_id for item in recovered] == [waiting.item_id, running.item_id]
        for before in (waiting, running):
            after = await second.get(before.item_id)
            assert after.state == ItemState.INTERRUPTED and after.decision == Decision.NO_DECISION
            assert after.reasons == [INTERRUPTED_REASON]
            assert (after.part_id, after.lot, after.accepted_at) == (
                before.part_id,
                before.lot,
                before.accepted_at,
            )
        assert await second.get(finished.item_id) == finished
        assert await second.recover_interrupted() == []


@pytest.mark.anyio
async def test_an_item_survives_a_store_that_was_never_closed(tmp_path: Path) -> None:
    abandoned = Store(tmp_path / "data")
    await abandoned.open()
    item = accepted()
    await abandoned.accept(item)
    await abandoned.mark_running(item.item_id)

    async with Store(tmp_path / "data") as restarted:
        assert [i.item_id for i in await restarted.recover_interrupted()] == [item.item_id]
    await abandoned.close()  # only to release the thread; the item was already recovered


@pytest.mark.anyio
async def test_an_item_survives_kill_9_between_its_images_and_its_row(tmp_path: Path) -> None:
    item = accepted()
    crash = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from pathlib import Path
        from edge_orchestrator.domain import Inspection
        from edge_orchestrator.retention import write_images
        from edge_orchestrator.storage import Store

        async def main():
            store = Store(Path({str(tmp_path / "data")!r}))
            await store.open()
            item = Inspection.model_validate_json({item.model_dump_json()!r})
            await store.accept(item)
            await store.mark_running(item.item_id)
            write_images(Path({str(tmp_path / "data")!r}).resolve(), item.item_id, item.accepted_at, {{"top": b"x"}})
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    with anyio.fail_after(60):
        proc = await anyio.run_process([sys.executable, "-c", crash], cwd=REPO, check=False)
    assert proc.returncode == -9
    orphan_dir = tmp_path / "data" / "images" / "2024/05/01" / item.item_id
    assert (orphan_dir / "top.jpg").exists()

    async with Store(tmp_path / "data") as restarted:
        [recovered] = await restarted.recover_interrupted()
        assert recovered.item_id == item.item_id and recovered.decision == Decision.NO_DECISION
        assert not orphan_dir.exists()  # no row accounts for those files: they would escape the quota


@pytest.mark.anyio
async def test_queries_filter_by_every_field(store: Store) -> None:
    ok = await run(store, Decision.OK, T0, part_id="p-1")
    ko = await run(store, Decision.KO, T0 + timedelta(minutes=1), station_id="other-line")
    nd = await run(store, Decision.NO_DECISION, T0 + timedelta(minutes=2), part_id="p-2")
    waiting = accepted(T0 + timedelta(minutes=3))
    await store.accept(waiting)
    await store.set_verdict(ko.item_id, Decision.OK, "a shadow, not a crack", "alice")

    async def ids(**filters: object) -> list[str]:
        return [item.item_id for item in (await store.query(InspectionQuery.model_validate(filters))).items]

    assert await ids() == [waiting.item_id, nd.item_id, ko.item_id, ok.item_id]
    assert await ids(decision=[Decision.KO]) == [ko.item_id]
    assert await ids(decision=[Decision.OK, Decision.NO_DECISION]) == [nd.item_id, ok.item_id]
    assert await ids(state=ItemState.ACCEPTED) == [waiting.item_id]
    assert await ids(station_id="other-line") == [ko.item_id]
    assert await ids(part_id="p-2") == [nd.item_id]
    assert await ids(part_id="p") == []
    assert await ids(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == [
        nd.item_id,
        ko.item_id,
    ]
    assert await ids(overridden=True) == [ko.item_id]
    assert await ids(overridden=False, decision=[Decision.OK, Decision.KO]) == [ok.item_id]


@pytest.mark.anyio
async def test_pages_follow_each_other_with_cursors_newest_first(store: Store) -> None:
    # Two items share each timestamp, so the item id must break ties.
    made = [await run(store, Decision.OK, T0 + timedelta(seconds=i // 2)) for i in range(7)]
    expected = [i.item_id for i in sorted(made, key=lambda i: (i.accepted_at, i.item_id), reverse=True)]

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await store.query(InspectionQuery(limit=3, cursor=cursor))
        pages.append([item.item_id for item in page.items])
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert [len(p) for p in pages] == [3, 3, 1]
    assert [item_id for p in pages for item_id in p] == expected
    ko_page = await store.query(InspectionQuery(limit=3, cursor=cursor, decision=[Decision.KO, Decision.OK]))
    assert [i.item_id for i in ko_page.items] == pages[2]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "",
        "W10",  # []
        "WyJ4IiwieSJd",  # ["x","y"]
        "WyIyMDI0LTA1LTAxVDA4OjAwOjAwLjAwMDAwMFoiLDVd",  # a timestamp and a number
        "eyJhIjoxLCJiIjoyfQ",  # {"a":1,"b":2}
    ],
)
async def test_a_forged_cursor_is_refused(store: Store, cursor: str) -> None:
    with pytest.raises(InvalidCursorError) as raised:
        await store.query(InspectionQuery(cursor=cursor))
    assert raised.value.code == "invalid_cursor"


@pytest.mark.anyio
async def test_verdicts_confirm_override_and_replace(store: Store) -> None:
    ko = await run(store, Decision.KO)

    confirmed = await store.set_verdict(ko.item_id, Decision.KO, None, "alice")
    assert confirmed.verdict is not None and not confirmed.verdict.overrides
    assert confirmed.decision == Decision.KO  # the machine's decision is kept beside the verdict

    overridden = await store.set_verdict(ko.item_id, Decision.OK, "a shadow", "bob")
    assert overridden.verdict is not None and overridden.verdict.overrides
    assert (overridden.verdict.operator, overridden.verdict.reason) == ("bob", "a shadow")
    assert await store.get(ko.item_id) == overridden
    assert [i.item_id for i in (await store.query(InspectionQuery(overridden=True))).items] == [ko.item_id]


@pytest.mark.anyio
async def test_verdicts_need_a_decided_known_item_and_an_ok_or_ko(store: Store) -> None:
    waiting = accepted()
    await store.accept(waiting)
    with pytest.raises(NotDecidedError) as raised:
        await store.set_verdict(waiting.item_id, Decision.OK, None, None)
    assert raised.value.code == "not_decided"
    with pytest.raises(ItemNotFoundError):
        await store.set_verdict(new_item_id(), Decision.OK, None, None)
    with pytest.raises(InvalidVerdictError):
        await store.set_verdict(waiting.item_id, Decision.NO_DECISION, None, None)


@pytest.mark.anyio
async def test_a_decided_item_cannot_be_run_or_completed_again(store: Store) -> None:
    done = await run(store, Decision.KO)
    original = (await store.image_file(done.item_id, "top")).read_bytes()

    with pytest.raises(ItemStateError):
        await store.mark_running(done.item_id)
    with pytest.raises(ItemStateError):
        await store.complete(decided(done, Decision.OK), {"top": b"other"}, KEEP_ALL)
    assert (await store.image_file(done.item_id, "top")).read_bytes() == original
    with pytest.raises(ItemNotFoundError):
        await store.mark_running(new_item_id())


@pytest.mark.anyio
async def test_a_result_is_stored_without_its_images_when_they_cannot_be_written(
    store: Store, tmp_path: Path
) -> None:
    (tmp_path / "data" / "images" / "2024").write_bytes(b"")  # where the day directories should go

    ko = await run(store, Decision.KO)

    assert ko.state == ItemState.DONE and all(c.image and not c.image.stored for c in ko.cameras)
    assert await store.get(ko.item_id) == ko
    with pytest.raises(ImageNotFoundError, match="not saved"):
        await store.image_file(ko.item_id, "top")


@pytest.mark.anyio
async def test_image_file_refuses_unknown_unsaved_and_pruned_images(store: Store) -> None:
    ok = await run(
        store, Decision.OK, policy=StoragePolicy(save_images="not_ok", min_free_mb=0, keep_results_days=None)
    )
    ko = await run(store, Decision.KO, T0 + timedelta(seconds=1))
    await store.enforce_retention(
        StoragePolicy(quota_mb=1000 / 1024**2, min_free_mb=0, keep_results_days=None)
    )  # 1 KB: one image left

    with pytest.raises(ImageNotFoundError, match="no camera 'front'"):
        await store.image_file(ko.item_id, "front")
    with pytest.raises(ImageNotFoundError, match="not saved"):
        await store.image_file(ok.item_id, "top")
    pruned = [c.camera_id for c in (await store.get(ko.item_id)).cameras if c.image and not c.image.stored]
    assert len(pruned) == 1
    with pytest.raises(ImageNotFoundError, match="removed by retention"):
        await store.image_file(ko.item_id, pruned[0])
    with pytest.raises(ItemNotFoundError):
        await store.image_file(new_item_id(), "top")


@pytest.mark.anyio
async def test_the_not_ok_policy_keeps_only_images_of_items_not_ok(store: Store, tmp_path: Path) -> None:
    policy = StoragePolicy(save_images="not_ok", min_free_mb=0, keep_results_days=None)
    ok = await run(store, Decision.OK, policy=policy)
    nd = await run(store, Decision.NO_DECISION, policy=policy)

    assert all(c.image == ImageInfo(width=64, height=48, bytes=1000, stored=False) for c in ok.cameras)
    assert all(c.image is not None and c.image.stored for c in nd.cameras)
    assert not (tmp_path / "data" / "images" / "2024/05/01" / ok.item_id).exists()
    assert (await store.usage()).image_files == 2


@pytest.mark.anyio
async def test_retention_deletes_ok_images_oldest_first_and_keeps_ko_and_no_decision(store: Store) -> None:
    # Six items of two 1000-byte images each, one second apart.
    decisions = [Decision.OK, Decision.KO, Decision.OK, Decision.NO_DECISION, Decision.OK, Decision.KO]
    items = [await run(store, d, T0 + timedelta(seconds=i)) for i, d in enumerate(decisions)]
    overridden = await run(store, Decision.OK, T0 - timedelta(seconds=1))
    await store.set_verdict(overridden.item_id, Decision.KO, "missed a crack", "alice")

    report = await store.enforce_retention(
        StoragePolicy(quota_mb=10_000 / 1024**2, min_free_mb=0, keep_results_days=None)
    )

    assert (report.ok_deleted, report.not_ok_deleted, report.files_deleted, report.bytes_freed) == (
        4,
        0,
        4,
        4000,
    )
    assert "quota" in report.reason
    stored = {
        i.item_id: [c.image.stored for c in (await store.get(i.item_id)).cameras if c.image] for i in items
    }
    assert [stored[i.item_id] for i in items] == [[False, False], [True, True], [False, False]] + [
        [True, True]
    ] * 3
    assert all(c.image and c.image.stored for c in (await store.get(overridden.item_id)).cameras)
    assert (await store.usage()).image_bytes == 10_000
    assert (
        await store.enforce_retention(
            StoragePolicy(quota_mb=10_000 / 1024**2, min_free_mb=0, keep_results_days=None)
        )
    ).files_deleted == 0


@pytest.mark.anyio
async def test_retention_spills_to_ko_images_rather_than_fill_the_disk(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    decisions = [Decision.KO, Decision.OK, Decision.NO_DECISION, Decision.KO]
    items = [await run(store, d, T0 + timedelta(seconds=i)) for i, d in enumerate(decisions)]

    report = await store.enforce_retention(
        StoragePolicy(quota_mb=3000 / 1024**2, min_free_mb=0, keep_results_days=None)
    )

    assert (report.ok_deleted, report.not_ok_deleted, report.bytes_freed) == (2, 3, 5000)
    assert "KO" in report.reason and "KO" in caplog.text
    kept = [
        sum(bool(c.image and c.image.stored) for c in (await store.get(i.item_id)).cameras) for i in items
    ]
    assert kept == [0, 0, 1, 2]  # the oldest KO went first, the newest KO is whole
    assert (await store.usage()).image_bytes == 3000


@pytest.mark.anyio
async def test_retention_deletes_results_older_than_keep_results_days(store: Store, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    old = await run(store, Decision.KO, now - timedelta(days=40))
    recent = await run(store, Decision.KO, now - timedelta(days=1))
    old_dir = (await store.image_file(old.item_id, "top")).parent

    report = await store.enforce_retention(StoragePolicy(keep_results_days=30, min_free_mb=0))

    assert (report.results_deleted, report.files_deleted) == (1, 2)
    with pytest.raises(ItemNotFoundError):
        await store.get(old.item_id)
    assert not old_dir.exists() and not old_dir.parent.exists()  # the old day directory goes too
    assert (await store.get(recent.item_id)).cameras[0].image == ImageInfo(width=64, height=48, bytes=1000)


@pytest.mark.anyio
async def test_stats_count_a_hand_made_window(store: Store) -> None:
    before = await run(store, Decision.KO, T0 - timedelta(seconds=1))  # outside the window
    interrupted = accepted(T0 + timedelta(seconds=5))
    await store.accept(interrupted)
    await store.recover_interrupted()
    await run(store, Decision.OK, T0, latency_ms=100)
    await run(store, Decision.OK, T0 + timedelta(seconds=1), latency_ms=200, station_id="other-line")
    ko = await run(
        store,
        Decision.KO,
        T0 + timedelta(seconds=2),
        latency_ms=300,
        cameras=(camera("top", Decision.KO, ("crack", "dent")), camera("side", Decision.OK, ("stain",))),
    )
    await run(
        store,
        Decision.KO,
        T0 + timedelta(seconds=3),
        latency_ms=400,
        cameras=(camera("top", Decision.KO, ("crack",)), camera("side", Decision.KO, ("crack",))),
    )
    await run(store, Decision.NO_DECISION, T0 + timedelta(seconds=4), latency_ms=500)
    await store.accept(accepted(T0 + timedelta(seconds=6)))
    await store.set_verdict(ko.item_id, Decision.OK, None, None)
    await store.set_verdict(before.item_id, Decision.OK, None, None)

    stats = await store.stats(T0, T0 + timedelta(minutes=10))

    assert stats.total == 7
    assert stats.counts == {Decision.OK: 2, Decision.KO: 2, Decision.NO_DECISION: 2}
    assert stats.yield_ratio == pytest.approx(2 / 6)
    assert stats.throughput_per_min == pytest.approx(0.7)
    assert stats.latency_ms.p50 == pytest.approx(300)
    assert stats.latency_ms.p90 == pytest.approx(460)
    assert stats.latency_ms.p99 == pytest.approx(496)
    assert (stats.overridden, stats.interrupted) == (1, 1)
    assert stats.ko_by_label == {"crack": 2, "dent": 1}
    assert stats.per_station["other-line"] == {Decision.OK: 1, Decision.KO: 0, Decision.NO_DECISION: 0}
    assert stats.per_station["duck-line"] == {Decision.OK: 1, Decision.KO: 2, Decision.NO_DECISION: 2}

    empty = await store.stats(T0 + timedelta(days=1), T0 + timedelta(days=2))
    assert (empty.total, empty.yield_ratio, empty.latency_ms.p50) == (0, None, None)
    assert empty.counts == dict.fromkeys(Decision, 0)


@pytest.mark.anyio
async def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    async with Store(tmp_path / "data"):
        pass
    with sqlite3.connect(tmp_path / "data" / "inspections.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    store = Store(tmp_path / "data")
    with pytest.raises(StorageError, match="newer"):
        await store.open()
    assert os.listdir(tmp_path / "data")  # nothing was removed
