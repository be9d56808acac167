"""What devices send the hub: heartbeats, results (stored exactly once per item id, whatever the devices repeat)
and sample images (files written atomically, one row each). One transaction per request."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Text, cast, delete, insert, select, update

from edge_orchestrator.telemetry import MAX_IMAGE_BYTES, Heartbeat, IngestReceipt, ResultBatch, ResultUpload
from hub.db import Database, dialect_insert, to_db_time, utcnow
from hub.errors import (
    ConflictError,
    DeviceMismatchError,
    InvalidInputError,
    TooLargeError,
    UnsupportedMediaTypeError,
)
from hub.schema import devices, heartbeats, images, results

CAMERA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_MAGIC = {b"\xff\xd8\xff": "jpg", b"\x89PNG\r\n\x1a\n": "png"}
# A repeated heartbeat replaces the one it repeats when that one arrived at most this long ago.
REPEAT_WINDOW = timedelta(days=1)
# Old heartbeats are deleted at most this often (a DELETE per beat would cost more than the beat).
PRUNE_EVERY_S = 600.0


class ImageConflictError(ConflictError):
    code = "image_conflict"


class InvalidItemIdError(InvalidInputError):
    code = "invalid_item_id"


class InvalidCameraIdError(InvalidInputError):
    code = "invalid_camera_id"


class UndecidedItemError(InvalidInputError):
    code = "undecided_item"


class ImageTooLargeError(TooLargeError):
    code = "image_too_large"


@dataclass(frozen=True)
class StoredImage:
    path: str  # relative to the images folder
    bytes: int
    sha256: str
    created: bool  # False: the very same image was already stored (a repeat after a lost answer)


def check_item_id(item_id: str) -> None:
    """Item ids are canonical UUIDs: anything else never reaches the database or the file system."""
    try:
        ok = str(uuid.UUID(item_id)) == item_id
    except ValueError:
        ok = False
    if not ok:
        raise InvalidItemIdError(f"{item_id[:80]!r} is not an item id (a lowercase canonical UUID)")


def check_camera_id(camera_id: str) -> None:
    if not CAMERA_ID.fullmatch(camera_id):
        raise InvalidCameraIdError(
            f"{camera_id[:80]!r} is not a camera id: 1-64 of letters, digits, '_' and '-', starting with a "
            "letter or digit"
        )


def image_kind(body: bytes) -> str:
    """'jpg' or 'png' from the magic bytes (what the client claims in Content-Type is not trusted)."""
    for magic, kind in _MAGIC.items():
        if body.startswith(magic):
            return kind
    raise UnsupportedMediaTypeError("the image is neither a JPEG nor a PNG (checked by its first bytes)")


def _same_device(device_id: str, payload_device_id: str) -> None:
    if payload_device_id != device_id:
        raise DeviceMismatchError(
            f"this token belongs to device {device_id}: it cannot write for device {payload_device_id}"
        )


class Ingest:
    """Writes what devices send. Built once by the app's lifespan (it keeps when it last pruned heartbeats)."""

    def __init__(self, db: Database, images_dir: Path, keep_heartbeats_days: int) -> None:
        self.db = db
        self.images_dir = images_dir
        self.keep_heartbeats = timedelta(days=keep_heartbeats_days)
        self._next_prune = 0.0

    async def heartbeat(self, device_id: str, beat: Heartbeat) -> datetime:
        """Store the beat and make it the device's latest; returns when the hub received it (naive UTC)."""
        _same_device(device_id, beat.device_id)
        prune = time.monotonic() >= self._next_prune
        if prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
        received_at = utcnow()

        def write(conn: Connection) -> None:
            conn.execute(
                update(devices)
                .where(devices.c.device_id == device_id)
                .values(
                    last_heartbeat_at=received_at,
                    interval_s=beat.interval_s,
                    version=beat.version[:64],
                    station_id=beat.station_id[:64] if beat.station_id else None,
                    ready=beat.health.ready,
                    heartbeat=beat.model_dump(mode="json"),
                )
            )
            # A beat whose answer was lost is repeated by the next one (same `since`, a wider window): the
            # repeat replaces it, so summing the history never counts a decision twice. Such repeats come within
            # a few intervals; the time bound keeps the delete on the (device, received_at) index.
            conn.execute(
                delete(heartbeats).where(
                    heartbeats.c.device_id == device_id,
                    heartbeats.c.received_at >= received_at - REPEAT_WINDOW,
                    heartbeats.c.since == to_db_time(beat.since),
                )
            )
            conn.execute(
                insert(heartbeats).values(
                    device_id=device_id,
                    received_at=received_at,
                    sent_at=to_db_time(beat.sent_at),
                    since=to_db_time(beat.since),
                    ok=beat.counts.ok,
                    ko=beat.counts.ko,
                    no_decision=beat.counts.no_decision,
                    ready=beat.health.ready,
                    fs_free_bytes=beat.disk.fs_free_bytes,
                    outbox_pending=sum(o.pending for o in beat.outbox),
                )
            )
            if prune:
                conn.execute(
                    delete(heartbeats).where(heartbeats.c.received_at < received_at - self.keep_heartbeats)
                )

        await self.db.run(write, write=True)
        return received_at

    async def results(self, device_id: str, batch: ResultBatch) -> IngestReceipt:
        """Store each result once per item id, in the batch's order (results.id is the arrival order).

        `inspection.decided` inserts the item unless the hub has it already (a duplicate). `inspection.verdict`
        inserts it, or updates its verdict, final decision and item when it is newer than what is stored.
        """
        for upload in batch.results:
            _same_device(device_id, upload.device_id)
        received_at = utcnow()
        rows = [_row(upload, received_at) for upload in batch.results]

        def write(conn: Connection) -> int:
            line = conn.execute(select(devices.c.line).where(devices.c.device_id == device_id)).scalar()
            for row in rows:
                row["line"] = line
            accepted = 0
            # Consecutive results of one kind go in one statement (a batch is usually one or two runs).
            for event, run in _runs(batch.results, rows):
                accepted += _store_run(conn, event, run)
            return accepted

        accepted = await self.db.run(write, write=True)
        return IngestReceipt(accepted=accepted, duplicates=len(rows) - accepted)

    async def image(self, device_id: str, item_id: str, camera_id: str, body: bytes) -> StoredImage:
        """Store an image under images/<device>/<item_id[:2]>/<item_id>/<camera>.<jpg|png>, atomically.

        The same item and camera from another device is refused (409 `image_conflict`); the same bytes again
        are a no-op (`created=False`); other bytes from the same device replace the image.
        """
        check_item_id(item_id)
        check_camera_id(camera_id)
        if len(body) > MAX_IMAGE_BYTES:
            raise ImageTooLargeError(f"the image is larger than {MAX_IMAGE_BYTES} bytes")
        kind = image_kind(body)
        relative = f"{device_id}/{item_id[:2]}/{item_id}/{camera_id}.{kind}"
        digest = hashlib.sha256(body).hexdigest()
        key = (images.c.item_id == item_id) & (images.c.camera_id == camera_id)

        def existing(conn: Connection) -> Any:
            return conn.execute(select(images.c.device_id, images.c.path, images.c.sha256).where(key)).first()

        before = await self.db.run(existing)
        if before is not None and before.device_id != device_id:
            raise _conflict(item_id, camera_id)
        target = self.images_dir / relative
        same = before is not None and before.sha256 == digest and before.path == relative
        if same and await asyncio.to_thread(target.is_file):
            return StoredImage(relative, len(body), digest, created=False)
        await asyncio.to_thread(write_atomically, target, body)

        def upsert(conn: Connection) -> bool:
            ins = dialect_insert(conn, images).values(
                item_id=item_id,
                camera_id=camera_id,
                device_id=device_id,
                path=relative,
                bytes=len(body),
                sha256=digest,
                received_at=utcnow(),
            )
            stmt = ins.on_conflict_do_update(
                index_elements=[images.c.item_id, images.c.camera_id],
                set_={c: ins.excluded[c] for c in ("path", "bytes", "sha256", "received_at")},
                # Another device's image is never replaced: the update (and its RETURNING row) is skipped.
                where=images.c.device_id == ins.excluded.device_id,
            ).returning(images.c.item_id)
            return conn.execute(stmt).first() is not None

        if not await self.db.run(upsert, write=True):
            # Lost a race with another device between the check and the write: our file is ours alone (its
            # folder is per device), so remove it and refuse.
            await asyncio.to_thread(target.unlink, missing_ok=True)
            raise _conflict(item_id, camera_id)
        if before is not None and before.path != relative:  # a JPEG replaced by a PNG, or the other way round
            await asyncio.to_thread((self.images_dir / before.path).unlink, missing_ok=True)
        return StoredImage(relative, len(body), digest, created=True)


def _conflict(item_id: str, camera_id: str) -> ImageConflictError:
    return ImageConflictError(f"another device already sent the image of item {item_id}, camera {camera_id}")


def _row(upload: ResultUpload, received_at: datetime) -> dict[str, Any]:
    item = upload.item
    check_item_id(item.item_id)
    if item.decision is None:
        raise UndecidedItemError(f"item {item.item_id} has no decision: only decided items go to the hub")
    decision = item.decision.value
    verdict = item.verdict.decision.value if item.verdict is not None else None
    labels = sorted(item.ko_labels())
    return {
        "item_id": item.item_id,
        "device_id": upload.device_id,
        "device_seq": upload.seq,
        "station_id": item.station_id[:64],
        "part_id": item.part_id[:128] if item.part_id else None,
        "decision": decision,
        "verdict": verdict,
        "overridden": verdict is not None and verdict != decision,
        "final": verdict or decision,
        "labels": " ".join(labels) if labels else None,
        "accepted_at": to_db_time(item.accepted_at),
        "decided_at": to_db_time(item.decided_at) if item.decided_at else None,
        "received_at": received_at,
        "item": item.model_dump(mode="json"),
    }


def _runs(uploads: list[ResultUpload], rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    runs: list[tuple[str, list[dict[str, Any]]]] = []
    for upload, row in zip(uploads, rows, strict=True):
        if runs and runs[-1][0] == upload.event:
            runs[-1][1].append(row)
        else:
            runs.append((upload.event, [row]))
    return runs


def _store_run(conn: Connection, event: str, rows: list[dict[str, Any]]) -> int:
    """Rows stored or updated now. One multi-row statement; conflicting items never fail it."""
    ins = dialect_insert(conn, results)
    if event == "inspection.decided":
        # The first of repeated items in one run wins, as it would one request after another.
        unique = list({row["item_id"]: row for row in reversed(rows)}.values())[::-1]
        stmt = ins.on_conflict_do_nothing(index_elements=[results.c.item_id]).returning(results.c.item_id)
    else:
        # The last verdict of an item in one run wins (PostgreSQL refuses to update a row twice in a statement).
        unique = list({row["item_id"]: row for row in rows}.values())
        stmt = ins.on_conflict_do_update(
            index_elements=[results.c.item_id],
            set_={c: ins.excluded[c] for c in ("verdict", "overridden", "final", "item", "device_seq")},
            # Only the item's own device, only a newer (or the same) event, and only when something changed:
            # a verdict repeated after a lost answer is a duplicate, an older one never overwrites a newer one.
            where=(results.c.device_id == ins.excluded.device_id)
            & (ins.excluded.device_seq >= results.c.device_seq)
            & cast(results.c.item, Text).is_distinct_from(cast(ins.excluded.item, Text)),
        ).returning(results.c.item_id)
    return len(conn.execute(stmt, unique).all())


def write_atomically(path: Path, body: bytes) -> None:
    """Write to a temporary file beside `path`, fsync it, rename it over `path`, fsync the folder: a reader (or a
    crash) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as file:
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
