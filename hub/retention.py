"""The hub's retention: results older than keep_results_days go with their images, then images go (oldest first,
those of OK items first) while they exceed the quota or the disk is under its free-space floor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, Connection, and_, delete, exists, func, not_, or_, select, tuple_

from hub.db import Database, utcnow
from hub.schema import images, results
from hub.settings import HubSettings

log = logging.getLogger(__name__)

GIB = 1024**3
# Rows per transaction: each batch holds SQLite's write lock briefly, so ingest keeps going during a long pass.
BATCH = 500
# The first pass waits this long at most after the start (not a whole interval: a hub restarted often still prunes).
FIRST_PASS_AFTER_S = 30.0

DiskFree = Callable[[Path], int]
Key = tuple[str, str]  # (item_id, camera_id)


def disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


class RetentionReport(BaseModel):
    """What one retention pass deleted, and why."""

    model_config = ConfigDict(frozen=True)

    results_deleted: int = Field(
        description="Results older than keep_results_days deleted, with their images."
    )
    images_deleted: int = Field(description="Image rows and files deleted, for any reason.")
    ok_images_pruned: int = Field(description="Images of OK items (not overridden) pruned under the limits.")
    other_images_pruned: int = Field(
        description="Images of KO, NO_DECISION or overridden items, or of no result, pruned under the limits "
        "(only once the OK ones were gone)."
    )
    bytes_freed: int = Field(description="Sum of the deleted images' sizes.")
    images_bytes: int = Field(description="Sum of the images' sizes after the pass.")
    fs_free_bytes: int = Field(description="Free bytes on the images' file system after the pass.")
    reason: str = Field(description="What went and why, in a sentence.")

    @property
    def deleted_anything(self) -> bool:
        return self.results_deleted > 0 or self.images_deleted > 0


class Retention:
    """One pass at a time (`run_once`); built by the app's lifespan, which runs it every retention_interval_s."""

    def __init__(
        self, db: Database, images_dir: Path, settings: HubSettings, *, free: DiskFree = disk_free
    ) -> None:
        self.db = db
        self.images_dir = images_dir
        self.keep_days = settings.keep_results_days
        self.quota = int(settings.images_quota_gb * GIB)
        self.floor = int(settings.min_free_gb * GIB)
        self.free = free  # the file system's free bytes (a parameter so tests can give a small disk)

    async def run_once(self) -> RetentionReport:
        results_deleted = expired_images = freed = 0
        reasons: list[str] = []
        if self.keep_days is not None:
            cutoff = utcnow() - timedelta(days=self.keep_days)
            while True:  # results (decided_at, else received_at) older than the cutoff, with their images
                n, gone = await self.db.run(partial(_expire_results, cutoff=cutoff), write=True)
                results_deleted, expired_images = results_deleted + n, expired_images + len(gone)
                freed += await self._remove(gone)
                if n < BATCH:
                    break
            while True:  # images whose result never came, received before the cutoff
                keys = await self.db.run(partial(_old_orphans, cutoff=cutoff))
                gone = await self.db.run(
                    partial(_delete_images, keys=keys, where=_orphan(cutoff)), write=True
                )
                expired_images += len(gone)
                freed += await self._remove(gone)
                if len(keys) < BATCH:
                    break
            if results_deleted or expired_images:
                reasons.append(
                    f"{results_deleted} results (and {expired_images} images) older than {self.keep_days} days "
                    "deleted"
                )
        need, why, used, free = await self._need()
        pruned = {True: 0, False: 0}
        for ok_tier in (True, False):
            while need > 0:
                candidates = await self.db.run(partial(_oldest, ok_tier=ok_tier))
                if not candidates:
                    break
                chosen: list[Key] = []
                total = 0
                for item_id, camera_id, size in candidates:
                    if total >= need:
                        break
                    chosen.append((item_id, camera_id))
                    total += size
                gone = await self.db.run(partial(_delete_images, keys=chosen), write=True)
                pruned[ok_tier] += len(gone)
                freed += await self._remove(gone)
                need, _, used, free = await self._need()
        if pruned[True] or pruned[False]:
            reasons.append(f"{why}: {pruned[True]} images of OK items deleted, oldest first")
        if pruned[False]:
            reasons.append(
                f"every OK image was gone, so {pruned[False]} images of KO, NO_DECISION or overridden items "
                "were deleted, oldest first"
            )
        if need > 0:
            reasons.append(f"still {need / GIB:.2f} GiB short with no image left to delete")
        report = RetentionReport(
            results_deleted=results_deleted,
            images_deleted=expired_images + pruned[True] + pruned[False],
            ok_images_pruned=pruned[True],
            other_images_pruned=pruned[False],
            bytes_freed=freed,
            images_bytes=used,
            fs_free_bytes=free,
            reason="; ".join(reasons) or f"nothing to delete: {why}",
        )
        if pruned[False] or need > 0:
            log.warning("retention: %s", report.reason)
        elif report.deleted_anything:
            log.info("retention: %s", report.reason)
        return report

    async def _need(self) -> tuple[int, str, int, int]:
        """(bytes of images to delete for both limits, why, images' bytes, free bytes)."""
        used = await self.db.run(_images_bytes)
        free = await asyncio.to_thread(self.free, self.images_dir)
        over_quota, under_floor = used - self.quota, self.floor - free
        if over_quota > 0 and over_quota >= under_floor:
            return (
                over_quota,
                f"images used {used / GIB:.2f} GiB of a {self.quota / GIB:g} GiB quota",
                used,
                free,
            )
        if under_floor > 0:
            why = f"only {free / GIB:.2f} GiB were free on the images' disk (floor {self.floor / GIB:g} GiB)"
            return under_floor, why, used, free
        return (
            0,
            f"images use {used / GIB:.2f} GiB of {self.quota / GIB:g} GiB, {free / GIB:.1f} GiB free",
            used,
            free,
        )

    async def _remove(self, gone: Sequence[tuple[str, int]]) -> int:
        """Unlink the files of rows already deleted and committed; returns their bytes.

        Rows first, files after the commit: a crash in between leaves at most an orphan file, never a row pointing
        at no file (the dashboard and the export would offer an image that is not there)."""
        if gone:
            await asyncio.to_thread(_unlink, self.images_dir, [path for path, _ in gone])
        return sum(size for _, size in gone)


async def run_every(
    retention: Retention, interval_s: float, on_report: Callable[[RetentionReport], None]
) -> None:
    """A pass every `interval_s` until cancelled; a failed pass is logged and the next one runs all the same."""
    await asyncio.sleep(min(interval_s, FIRST_PASS_AFTER_S))
    while True:
        try:
            on_report(await retention.run_once())
        except Exception:
            log.exception("retention pass failed; the next one runs in %g s", interval_s)
        await asyncio.sleep(interval_s)


def _images_bytes(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.sum(images.c.bytes), 0))).scalar_one())


def _expire_results(conn: Connection, cutoff: datetime) -> tuple[int, list[tuple[str, int]]]:
    """One batch of results older than `cutoff` deleted with their images: (results, [(path, bytes)])."""
    old = or_(
        results.c.decided_at < cutoff, and_(results.c.decided_at.is_(None), results.c.received_at < cutoff)
    )
    item_ids = list(
        conn.execute(select(results.c.item_id).where(old).order_by(results.c.id).limit(BATCH)).scalars()
    )
    if not item_ids:
        return 0, []
    gone = conn.execute(
        delete(images).where(images.c.item_id.in_(item_ids)).returning(images.c.path, images.c.bytes)
    ).all()
    conn.execute(delete(results).where(results.c.item_id.in_(item_ids)))
    return len(item_ids), [(path, size) for path, size in gone]


def _orphan(cutoff: datetime) -> ColumnElement[bool]:
    return and_(images.c.received_at < cutoff, ~exists().where(results.c.item_id == images.c.item_id))


def _old_orphans(conn: Connection, cutoff: datetime) -> list[Key]:
    query = select(images.c.item_id, images.c.camera_id).where(_orphan(cutoff)).limit(BATCH)
    return [(item_id, camera_id) for item_id, camera_id in conn.execute(query)]


def _oldest(conn: Connection, *, ok_tier: bool) -> list[tuple[str, str, int]]:
    """The oldest images of a tier (by their result's decision time): those of OK items nobody overrode, or the
    others (KO, NO_DECISION, overridden, or no result at all)."""
    ok = and_(results.c.final == "OK", results.c.overridden.is_(False))
    age = func.coalesce(results.c.decided_at, results.c.received_at, images.c.received_at)
    query = (
        select(images.c.item_id, images.c.camera_id, images.c.bytes)
        .select_from(images.outerjoin(results, results.c.item_id == images.c.item_id))
        .where(ok if ok_tier else or_(results.c.id.is_(None), not_(ok)))
        .order_by(age, images.c.item_id, images.c.camera_id)
        .limit(BATCH)
    )
    return [(item_id, camera_id, size) for item_id, camera_id, size in conn.execute(query)]


def _delete_images(
    conn: Connection, keys: Sequence[Key], where: ColumnElement[bool] | None = None
) -> list[tuple[str, int]]:
    """Delete these image rows (still matching `where`); returns the (path, bytes) of those deleted."""
    if not keys:
        return []
    stmt = (
        delete(images)
        .where(tuple_(images.c.item_id, images.c.camera_id).in_(list(keys)))
        .returning(images.c.path, images.c.bytes)
    )
    if where is not None:
        stmt = stmt.where(where)
    return [(path, size) for path, size in conn.execute(stmt)]


def _unlink(images_dir: Path, paths: Sequence[str]) -> None:
    for path in paths:
        target = images_dir / path
        target.unlink(missing_ok=True)
        # The item's own folder only: the shared ones above it may be in use by an upload creating them.
        if target.parent != images_dir:
            with contextlib.suppress(OSError):
                os.rmdir(target.parent)
