"""Durable storage: every inspection in SQLite (WAL, also the queue of accepted items) and its images on disk."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import shutil
import sqlite3
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from . import outbox, retention
from .domain import (
    Decision,
    Inspection,
    ItemState,
    Verdict,
    is_item_id,
    utcnow,
)
from .errors import (
    ConflictError,
    DuplicateItemError,
    ImageNotFoundError,
    InvalidCursorError,
    InvalidItemIdError,
    InvalidVerdictError,
    ItemNotFoundError,
    ItemStateError,
    NotDecidedError,
    NotReadyError,
    StorageError,
)
from .outbox import Messages
from .retention import DiskUsage, RetentionReport, StoragePolicy, transaction
from .stats import LatencyPercentiles, Stats, compute_stats

__all__ = [
    "INTERRUPTED_REASON",
    "ConflictError",
    "DiskUsage",
    "DuplicateItemError",
    "InspectionPage",
    "InspectionQuery",
    "InvalidCursorError",
    "InvalidVerdictError",
    "ItemStateError",
    "LatencyPercentiles",
    "NotDecidedError",
    "RetentionReport",
    "Stats",
    "StorageError",
    "StoragePolicy",
    "Store",
]

logger = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

INTERRUPTED_REASON = "the device stopped before this item was decided (interrupted)"
DB_NAME = "inspections.db"
PENDING = (ItemState.ACCEPTED, ItemState.RUNNING)

# Schema migrations, applied in order; PRAGMA user_version counts how many have run.
# Timestamps are fixed-width UTC text so that text order is time order (keyset pagination, ranges).
_MIGRATIONS = [
    """
    CREATE TABLE items (
        item_id     TEXT PRIMARY KEY,
        station_id  TEXT NOT NULL,
        state       TEXT NOT NULL,
        decision    TEXT,
        part_id     TEXT,
        accepted_at TEXT NOT NULL,
        decided_at  TEXT,
        overridden  INTEGER NOT NULL DEFAULT 0,
        image_bytes INTEGER NOT NULL DEFAULT 0,
        latency_ms  REAL,
        ko_labels   TEXT,
        body        TEXT NOT NULL
    );
    -- Pages are keyset on (accepted_at, item_id); the trailing columns make stats index-only.
    CREATE INDEX items_accepted
        ON items (accepted_at, item_id, station_id, state, decision, overridden, latency_ms);
    CREATE INDEX items_decision ON items (decision, accepted_at, item_id);
    CREATE INDEX items_station ON items (station_id, accepted_at, item_id);
    CREATE INDEX items_state ON items (state, accepted_at, item_id);
    -- Once ANALYZE has seen millions of `done` rows it judges `state` unselective; this one stays tiny.
    CREATE INDEX items_pending ON items (accepted_at) WHERE state IN ('accepted', 'running');
    CREATE INDEX items_part ON items (part_id, accepted_at, item_id) WHERE part_id IS NOT NULL;
    CREATE INDEX items_overridden ON items (accepted_at, item_id) WHERE overridden = 1;
    CREATE TABLE images (
        item_id     TEXT NOT NULL REFERENCES items (item_id) ON DELETE CASCADE,
        camera_id   TEXT NOT NULL,
        rel_path    TEXT NOT NULL,
        bytes       INTEGER NOT NULL,
        decision    TEXT NOT NULL,
        protected   INTEGER NOT NULL,
        accepted_at TEXT NOT NULL,
        pruned      INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (item_id, camera_id)
    ) WITHOUT ROWID;
    CREATE INDEX images_live ON images (protected, accepted_at, bytes) WHERE pruned = 0;
    """,
    """
    ALTER TABLE items ADD COLUMN idempotency_key TEXT;
    CREATE INDEX items_idempotency ON items (idempotency_key, accepted_at)
        WHERE idempotency_key IS NOT NULL;
    """
    + outbox.SCHEMA,
    # The outbox quota; counts by decision time (the hub's heartbeats); small durable device state.
    outbox.QUOTA_SCHEMA
    + """
    CREATE INDEX items_decided ON items (decided_at, decision) WHERE decided_at IS NOT NULL;
    CREATE TABLE device_state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    """,
]
_COLUMNS = (
    "item_id, station_id, state, decision, part_id, accepted_at, decided_at,"
    " overridden, image_bytes, latency_ms, ko_labels, idempotency_key, body"
)
_VALUES = ", ".join(f":{c.strip()}" for c in _COLUMNS.split(","))


class InspectionQuery(BaseModel):
    """Filters for listing inspections, newest first; every filter is served by an index."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision: list[Decision] | None = Field(
        default=None, min_length=1, description="Machine decisions to keep."
    )
    state: ItemState | None = Field(default=None, description="Only items in this state.")
    station_id: str | None = Field(default=None, description="Only items of this station.")
    part_id: str | None = Field(default=None, description="Only items with exactly this part id.")
    since: datetime | None = Field(default=None, description="Accepted at or after (UTC when naive).")
    until: datetime | None = Field(default=None, description="Accepted before (UTC when naive).")
    overridden: bool | None = Field(default=None, description="Only items an operator overrode (or did not).")
    limit: int = Field(default=50, ge=1, le=500, description="Items per page.")
    cursor: str | None = Field(default=None, description="The previous page's next_cursor.")


class InspectionPage(BaseModel):
    model_config = ConfigDict(frozen=True)

    items: list[Inspection]
    next_cursor: str | None = Field(
        description="Pass it as `cursor` for the next page; None on the last page."
    )


class Store:
    """Owns the data directory: one SQLite connection per dedicated thread, so nothing needs locks.

    The writer thread's connection does every write, in order. Reads (get, query, stats, usage, image_file)
    run on a second thread with a read-only connection: WAL lets them run while the writer commits, so a
    dashboard computing stats never delays an accept. Each read is one short read transaction, begun when
    the job starts and ended when it returns, so it sees every write committed before it was called.
    """

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._read_executor: ThreadPoolExecutor | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._verdicts: outbox.Outbox | None = None

    def queue_verdicts(self, box: outbox.Outbox) -> None:
        """From now on each verdict queues its messages (the hub's) in `box`, in the verdict's transaction."""
        self._verdicts = box

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        if self._executor is not None:
            return
        writer = self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storage")
        reader = self._read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storage-read")
        # Both opens are queued now, so calls made meanwhile run after them. The reader's waits for the
        # writer's: the writer creates the database, switches it to WAL and migrates the schema.
        writer_opened = writer.submit(self._open)
        try:
            await asyncio.wrap_future(reader.submit(self._open_reader, writer_opened))
        except BaseException:
            self._executor = self._read_executor = None
            # Queued behind the opens (still running if we were cancelled): each connection is closed
            # on its own thread.
            reader.submit(self._close_reader)
            writer.submit(self._close)
            reader.shutdown(wait=False)
            writer.shutdown(wait=False)
            raise

    async def close(self) -> None:
        writer, self._executor = self._executor, None
        reader, self._read_executor = self._read_executor, None
        if writer is None or reader is None:
            return
        loop = asyncio.get_running_loop()
        # Each close is queued after every pending job of its thread, so accepted writes finish (and
        # running reads return) before the connections close. The reader goes first, so that the
        # writer is the last connection and checkpoints the WAL as it closes.
        try:
            await loop.run_in_executor(reader, self._close_reader)
        finally:
            reader.shutdown(wait=False)
            try:
                await loop.run_in_executor(writer, self._close)
            finally:
                writer.shutdown(wait=False)

    async def accept(self, item: Inspection) -> None:
        """Insert the item as `accepted`; committed with a synced WAL before this returns."""
        _check_id(item.item_id)
        await self._call(self._accept, item.model_copy(update={"state": ItemState.ACCEPTED}))

    async def mark_running(self, item_id: str) -> None:
        _check_id(item_id)
        await self._call(self._mark_running, item_id)

    async def complete(
        self,
        item: Inspection,
        images: Mapping[str, bytes],
        policy: StoragePolicy,
        messages: Messages | None = None,
    ) -> Inspection:
        """Write the images the policy keeps (atomically), then the decided row and its outbox messages
        (MQTT, webhooks) in one transaction: a result is never stored without its messages, nor the reverse."""
        _check_id(item.item_id)
        if item.decision is None:
            raise ValueError(f"item {item.item_id} has no decision to store")
        # Checked before any file is written: a done item's images must never be overwritten.
        await self._call(self._check_pending, item.item_id)
        cameras = {camera.camera_id for camera in item.cameras}
        if unknown := sorted(images.keys() - cameras):
            logger.warning("item %s: images for cameras without a result ignored: %s", item.item_id, unknown)
        keep = policy.save_images == "all" or (
            policy.save_images == "not_ok" and item.decision != Decision.OK
        )
        to_write = {cid: data for cid, data in images.items() if cid in cameras} if keep else {}
        try:
            written = await asyncio.to_thread(
                retention.write_images, self._data_dir, item.item_id, item.accepted_at, to_write
            )
        except OSError:
            # A full or failing disk costs the images, never the result.
            logger.exception(
                "item %s: its images could not be written; storing the result without them", item.item_id
            )
            written = {}
        done = item.model_copy(
            update={
                "state": ItemState.DONE,
                "decided_at": item.decided_at or utcnow(),
                "cameras": [
                    retention.with_image(c, images.get(c.camera_id), c.camera_id in written)
                    for c in item.cameras
                ],
            }
        )
        entries = messages(done) if messages is not None else []
        try:
            await self._call(self._complete, done, written, entries)
        except Exception:  # not on cancellation: the job may still commit, and then the files are needed
            await asyncio.to_thread(retention.remove_files, self._data_dir, written.values())
            raise
        return done

    async def recover_interrupted(self, messages: Messages | None = None) -> list[Inspection]:
        """After a stop, turn every undecided item into `interrupted` / NO_DECISION (and queue their
        messages in the same transaction); returns them."""
        return await self._call(self._recover, messages)

    async def find_idempotent(self, key: str, since: datetime) -> Inspection | None:
        """The newest item accepted at or after `since` with this idempotency key, if any."""
        return await self._read(self._find_idempotent, key, since)

    async def write(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run `fn(connection)` on the writer thread (for the outbox, which shares this database)."""
        return await self._call(fn, *args, **kwargs)

    async def read(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run `fn(read-only connection)` on the reader thread, in one snapshot."""
        return await self._read(fn, *args, **kwargs)

    async def get(self, item_id: str) -> Inspection:
        _check_id(item_id)
        return await self._read(self._get, item_id)

    async def query(self, query: InspectionQuery) -> InspectionPage:
        after = _decode_cursor(query.cursor) if query.cursor is not None else None
        return await self._read(self._query, query, after)

    async def set_verdict(
        self, item_id: str, decision: Decision, reason: str | None, operator: str | None
    ) -> Inspection:
        """Record (or replace) an operator's verdict on a decided item, with its outbox messages if any."""
        _check_id(item_id)
        if decision not in (Decision.OK, Decision.KO):
            raise InvalidVerdictError(f"a verdict is OK or KO, not {decision}")
        box = self._verdicts
        messages = box.verdict_entries if box is not None else None
        item = await self._call(self._set_verdict, item_id, decision, reason, operator, messages)
        if box is not None:
            box.notify()
        return item

    async def image_file(self, item_id: str, camera_id: str) -> Path:
        """The stored image's path, taken from the database row (never from the caller's input)."""
        _check_id(item_id)
        return await self._read(self._image_file, item_id, camera_id)

    async def stats(self, since: datetime, until: datetime) -> Stats:
        return await self._read(compute_stats, since, until)

    async def enforce_retention(self, policy: StoragePolicy) -> RetentionReport:
        """Expire old results, then prune images under the quota and free-space floor: OK first, oldest first."""
        return await retention.enforce(self._call, self._data_dir, policy)

    async def usage(self) -> DiskUsage:
        return await self._read(retention.usage, self._data_dir)

    async def _call(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run `fn(connection)` on the writer thread, after every write submitted before it."""
        executor = self._executor
        if executor is None:
            raise NotReadyError("the storage is not open")

        def job() -> T:
            if self._conn is None:
                raise NotReadyError("the storage is not open")
            return fn(self._conn, *args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(executor, job)

    async def _read(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run `fn(read-only connection)` on the reader thread, in one read transaction of its own."""
        executor = self._read_executor
        if executor is None:
            raise NotReadyError("the storage is not open")

        def job() -> T:
            conn = self._read_conn
            if conn is None:
                raise NotReadyError("the storage is not open")
            # One snapshot for all of fn's statements, taken now: it holds every write committed before
            # this call. Ended before returning, so no snapshot outlives the call (it would hide later
            # writes from the next read and keep the writer's checkpoints from recycling the WAL).
            conn.execute("BEGIN")
            try:
                return fn(conn, *args, **kwargs)
            finally:
                conn.execute("ROLLBACK")  # nothing to commit: the connection is read-only

        return await asyncio.get_running_loop().run_in_executor(executor, job)

    # --- everything below runs on the storage threads (writer, or reader where said) ------------

    def _open(self) -> None:
        self._data_dir = self._data_dir.resolve()
        (self._data_dir / "images").mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._data_dir / DB_NAME, isolation_level=None, timeout=10.0)
        try:
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode != "wal":
                raise StorageError(f"the database in {self._data_dir} cannot use WAL (journal mode {mode})")
            # FULL syncs the WAL on every commit: an accepted item survives a power cut.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > len(_MIGRATIONS):
                raise StorageError(f"the database schema is v{version}, newer than this version knows")
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                conn.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;")
        except BaseException:
            conn.close()
            raise
        retention.fsync_dir(self._data_dir)
        self._conn = conn

    def _open_reader(self, writer_opened: Future[None]) -> None:
        """On the reader thread, once the writer has opened (and migrated) the database."""
        writer_opened.result()  # the writer's error, if it failed
        uri = (self._data_dir / DB_NAME).as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10.0)
        try:
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
            if mode != "wal":  # without WAL a reader would block the writer (and the reverse)
                raise StorageError(
                    f"the database in {self._data_dir} is not in WAL mode (journal mode {mode})"
                )
        except BaseException:
            conn.close()
            raise
        self._read_conn = conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.execute("PRAGMA optimize")
            self._conn.close()
            self._conn = None

    def _close_reader(self) -> None:
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None

    def _accept(self, conn: sqlite3.Connection, item: Inspection) -> None:
        try:
            with transaction(conn):
                conn.execute(f"INSERT INTO items ({_COLUMNS}) VALUES ({_VALUES})", _row(item))
        except sqlite3.IntegrityError as exc:
            raise DuplicateItemError(f"item {item.item_id} was already accepted") from exc

    def _mark_running(self, conn: sqlite3.Connection, item_id: str) -> None:
        # No fsync of its own: lost in a power cut, the item is still `accepted` and recovered the same
        # way, and the next FULL commit syncs the WAL with this change in it. One fsync less per item.
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with transaction(conn):
                changed = conn.execute(
                    "UPDATE items SET state = 'running', body = json_set(body, '$.state', 'running')"
                    " WHERE item_id = ? AND state IN ('accepted', 'running')",
                    (item_id,),
                ).rowcount
        finally:
            conn.execute("PRAGMA synchronous=FULL")
        if not changed:
            row = conn.execute("SELECT state FROM items WHERE item_id = ?", (item_id,)).fetchone()
            if row is None:
                raise ItemNotFoundError(f"no item {item_id}")
            raise ItemStateError(f"item {item_id} is already {row[0]}")

    def _check_pending(self, conn: sqlite3.Connection, item_id: str) -> None:
        """Unknown ids may still be completed (never lose a result); decided ones may not."""
        row = conn.execute("SELECT state FROM items WHERE item_id = ?", (item_id,)).fetchone()
        if row is not None and row[0] not in PENDING:
            raise ItemStateError(f"item {item_id} is already {row[0]}")

    def _complete(
        self,
        conn: sqlite3.Connection,
        item: Inspection,
        written: Mapping[str, str],
        entries: list[outbox.Entry],
    ) -> None:
        row = _row(item)
        updates = ", ".join(f"{c} = excluded.{c}" for c in row if c != "item_id")
        with transaction(conn):
            changed = conn.execute(
                f"INSERT INTO items ({_COLUMNS}) VALUES ({_VALUES}) ON CONFLICT (item_id) DO UPDATE SET {updates}"
                " WHERE items.state IN ('accepted', 'running')",
                row,
            ).rowcount
            if not changed:
                raise ItemStateError(f"item {item.item_id} was decided meanwhile")
            retention.record_images(conn, item, written)
            outbox.insert(conn, entries)

    def _recover(self, conn: sqlite3.Connection, messages: Messages | None) -> list[Inspection]:
        rows = conn.execute(
            "SELECT body FROM items WHERE state IN ('accepted', 'running') ORDER BY accepted_at"
        ).fetchall()
        now = utcnow()
        recovered = [
            item.model_copy(
                update={
                    "state": ItemState.INTERRUPTED,
                    "decision": Decision.NO_DECISION,
                    "decided_at": now,
                    "reasons": [*item.reasons, INTERRUPTED_REASON],
                }
            )
            for item in (Inspection.model_validate_json(body) for (body,) in rows)
        ]
        # Images written before the stop belong to no row: removed first, so a crash here only repeats it.
        for item in recovered:
            shutil.rmtree(
                self._data_dir / retention.item_dir(item.item_id, item.accepted_at), ignore_errors=True
            )
        with transaction(conn):
            conn.executemany(
                "UPDATE items SET state = :state, decision = :decision, decided_at = :decided_at, body = :body"
                " WHERE item_id = :item_id",
                [_row(item) for item in recovered],
            )
            if messages is not None:
                outbox.insert(conn, [entry for item in recovered for entry in messages(item)])
        if recovered:
            logger.warning(
                "%d items were interrupted by the last stop and are now NO_DECISION", len(recovered)
            )
        return recovered

    # _get, _query, _image_file and compute_stats run on the reader thread (read-only connection).

    def _find_idempotent(self, conn: sqlite3.Connection, key: str, since: datetime) -> Inspection | None:
        row = conn.execute(
            "SELECT body FROM items WHERE idempotency_key = ? AND accepted_at >= ?"
            " ORDER BY accepted_at DESC LIMIT 1",
            (key, retention.timestamp(since)),
        ).fetchone()
        return None if row is None else Inspection.model_validate_json(row[0])

    def _get(self, conn: sqlite3.Connection, item_id: str) -> Inspection:
        row = conn.execute("SELECT body FROM items WHERE item_id = ?", (item_id,)).fetchone()
        if row is None:
            raise ItemNotFoundError(f"no item {item_id}")
        return retention.with_pruned(conn, [Inspection.model_validate_json(row[0])])[0]

    def _query(
        self, conn: sqlite3.Connection, query: InspectionQuery, after: tuple[str, str] | None
    ) -> InspectionPage:
        where: list[str] = ["1"]
        params: list[Any] = []
        for column, value in (
            ("state", query.state),
            ("station_id", query.station_id),
            ("part_id", query.part_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if query.since is not None:
            where.append("accepted_at >= ?")
            params.append(retention.timestamp(query.since))
        if query.until is not None:
            where.append("accepted_at < ?")
            params.append(retention.timestamp(query.until))
        if query.overridden is not None:  # a literal, so the partial index applies
            where.append(f"overridden = {int(query.overridden)}")
        if after is not None:
            where.append("(accepted_at, item_id) < (?, ?)")
            params += after
        page = " ORDER BY accepted_at DESC, item_id DESC LIMIT ?"
        select = "SELECT body, accepted_at, item_id FROM items WHERE " + " AND ".join(where)
        if not query.decision:
            rows = conn.execute(select + page, (*params, query.limit + 1)).fetchall()
        else:
            # One ordered index range per decision, merged: `decision IN (...)` would sort every match.
            branches = [f"SELECT * FROM ({select} AND decision = ?{page})" for _ in query.decision]
            branch_params = [p for d in query.decision for p in (*params, d.value, query.limit + 1)]
            rows = conn.execute(
                f"SELECT * FROM ({' UNION ALL '.join(branches)}){page}", (*branch_params, query.limit + 1)
            ).fetchall()
        items = retention.with_pruned(
            conn, [Inspection.model_validate_json(row[0]) for row in rows[: query.limit]]
        )
        next_cursor = None
        if len(rows) > query.limit:
            next_cursor = _encode_cursor(*rows[query.limit - 1][1:])
        return InspectionPage(items=items, next_cursor=next_cursor)

    def _set_verdict(
        self,
        conn: sqlite3.Connection,
        item_id: str,
        decision: Decision,
        reason: str | None,
        operator: str | None,
        messages: Messages | None,
    ) -> Inspection:
        with transaction(conn):
            row = conn.execute("SELECT body FROM items WHERE item_id = ?", (item_id,)).fetchone()
            if row is None:
                raise ItemNotFoundError(f"no item {item_id}")
            item = Inspection.model_validate_json(row[0])
            if item.decision is None or item.state in PENDING:
                raise NotDecidedError(
                    f"item {item_id} is {item.state.value}: there is no decision to confirm yet"
                )
            verdict = Verdict(
                decision=decision,
                reason=reason,
                operator=operator,
                at=utcnow(),
                overrides=decision != item.decision,
            )
            item = item.model_copy(update={"verdict": verdict})
            conn.execute(
                "UPDATE items SET overridden = ?, body = ? WHERE item_id = ?",
                (int(verdict.overrides), item.model_dump_json(), item_id),
            )
            # An overridden item is a model mistake: its images are worth keeping like a KO's.
            conn.execute(
                "UPDATE images SET protected = ? WHERE item_id = ?", (retention.protected(item), item_id)
            )
            if messages is not None:
                outbox.insert(conn, messages(item))
        return retention.with_pruned(conn, [item])[0]

    def _image_file(self, conn: sqlite3.Connection, item_id: str, camera_id: str) -> Path:
        shown = repr(camera_id[:64])
        row = conn.execute(
            "SELECT rel_path, pruned FROM images WHERE item_id = ? AND camera_id = ?", (item_id, camera_id)
        ).fetchone()
        if row is None:
            item = self._get(conn, item_id)
            if item.camera(camera_id) is None:
                raise ImageNotFoundError(f"item {item_id} has no camera {shown}")
            raise ImageNotFoundError(f"the image of camera {shown} of item {item_id} was not saved")
        if row[1]:
            raise ImageNotFoundError(
                f"the image of camera {shown} of item {item_id} was removed by retention"
            )
        rel_path: str = row[0]
        path = (self._data_dir / rel_path).resolve()
        if not path.is_relative_to((self._data_dir / "images").resolve()) or not path.is_file():
            raise ImageNotFoundError(f"the image of camera {shown} of item {item_id} is missing on disk")
        return path


def _check_id(item_id: str) -> None:
    if not is_item_id(item_id):
        raise InvalidItemIdError(f"{item_id[:64]!r} is not an item id (a UUID)")


def _row(item: Inspection) -> dict[str, Any]:
    latency = None
    if item.state == ItemState.DONE:
        if item.decided_at is not None:
            latency = (
                retention.utc(item.decided_at) - retention.utc(item.accepted_at)
            ).total_seconds() * 1000
        else:
            latency = item.timings_ms.get("total")
    ko_labels = None
    if item.decision == Decision.KO:
        ko_labels = json.dumps(sorted(item.ko_labels()))
    row: dict[str, Any] = {
        "item_id": item.item_id,
        "station_id": item.station_id,
        "state": item.state.value,
        "decision": None if item.decision is None else item.decision.value,
        "part_id": item.part_id,
        "accepted_at": retention.timestamp(item.accepted_at),
        "decided_at": None if item.decided_at is None else retention.timestamp(item.decided_at),
        "overridden": int(item.verdict is not None and item.verdict.overrides),
        "image_bytes": sum(c.image.bytes for c in item.cameras if c.image is not None and c.image.stored),
        "latency_ms": latency,
        "ko_labels": ko_labels,
        "idempotency_key": item.idempotency_key,
        "body": item.model_dump_json(),
    }
    return row


def _encode_cursor(accepted_at: str, item_id: str) -> str:
    raw = json.dumps([accepted_at, item_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        accepted_at, item_id = json.loads(raw)
        if not (isinstance(accepted_at, str) and isinstance(item_id, str) and is_item_id(item_id)):
            raise ValueError(raw)
        datetime.strptime(accepted_at, retention.TS_FORMAT)
    except (binascii.Error, ValueError, TypeError) as exc:  # JSON, unpacking and UTF-8 errors are ValueErrors
        raise InvalidCursorError("the cursor is not one a previous page returned") from exc
    return accepted_at, item_id
