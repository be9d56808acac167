"""The image side of storage: files on disk, their rows in `images`, and retention under the quota."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .domain import CameraResult, Decision, ImageInfo, Inspection, utcnow

logger = logging.getLogger(__name__)
T = TypeVar("T")

MB = 1024 * 1024
# Small batches keep each executor job short, so accepts and completes interleave with a long prune.
BATCH = 200
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_SAFE_CAMERA = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class StoragePolicy(BaseModel):
    """What the station keeps on disk (the station file's `storage:` section)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    save_images: Literal["all", "not_ok", "none"] = Field(
        default="all",
        description="Which images to keep: all, only those of items decided KO or NO_DECISION, or none.",
    )
    quota_mb: float = Field(default=2048, gt=0, description="Images may use at most this many MiB.")
    min_free_mb: float = Field(
        default=256, ge=0, description="Keep at least this many MiB free on the data directory's file system."
    )
    keep_results_days: int | None = Field(
        default=30,
        ge=1,
        description="Delete results (and their images) accepted more than this many days ago; empty keeps them "
        "forever. At one part a second a result row takes about 200 MB a day.",
    )


class RetentionReport(BaseModel):
    """What one retention pass deleted, and why."""

    model_config = ConfigDict(frozen=True)

    files_deleted: int = Field(description="Image files deleted (pruned or with their expired result).")
    bytes_freed: int = Field(description="Bytes of the deleted image files.")
    ok_deleted: int = Field(description="Pruned images of OK items (the first to go).")
    not_ok_deleted: int = Field(
        description="Pruned images of KO, NO_DECISION or overridden items (only when the OK ones were not enough)."
    )
    results_deleted: int = Field(default=0, description="Results older than keep_results_days deleted.")
    reason: str = Field(description="Why, in a sentence.")


class DiskUsage(BaseModel):
    model_config = ConfigDict(frozen=True)

    image_bytes: int = Field(
        description="Bytes of the stored (not pruned) images, as tracked in the database."
    )
    image_files: int
    items: int
    fs_free_bytes: int = Field(description="Free bytes on the data directory's file system.")
    fs_total_bytes: int


class OnStorageThread(Protocol):
    """Runs `fn(connection)` on the storage's writer thread and awaits it."""

    def __call__(self, fn: Callable[[sqlite3.Connection], T], /) -> Awaitable[T]: ...


async def enforce(on_thread: OnStorageThread, data_dir: Path, policy: StoragePolicy) -> RetentionReport:
    """Expire old results, then prune images under the quota and free-space floor: OK first, oldest first.

    Each batch is its own job on the writer thread, so inspections keep being stored during a long prune.
    """
    files = freed = ok = not_ok = results = 0
    reasons: list[str] = []
    if policy.keep_results_days is not None:
        cutoff = utcnow() - timedelta(days=policy.keep_results_days)
        while True:
            n_items, n_files, n_bytes = await on_thread(
                partial(expire_results, data_dir=data_dir, cutoff=cutoff)
            )
            results, files, freed = results + n_items, files + n_files, freed + n_bytes
            if n_items < BATCH:
                break
        if results:
            reasons.append(f"{results} results older than {policy.keep_results_days} days deleted")
    need, why = await on_thread(partial(bytes_to_free, data_dir=data_dir, policy=policy))
    reasons.append(why)
    for is_protected in (False, True):
        while need > 0:
            n_files, n_bytes = await on_thread(
                partial(prune_oldest, data_dir=data_dir, protected=is_protected, need=need)
            )
            if n_files == 0:
                break
            files, freed = files + n_files, freed + n_bytes
            if is_protected:
                not_ok += n_files
            else:
                ok += n_files
            need, _ = await on_thread(partial(bytes_to_free, data_dir=data_dir, policy=policy))
    if ok:
        reasons.append(f"{ok} OK images deleted, oldest first")
    if not_ok:
        reasons.append(f"every OK image was gone, so {not_ok} KO/NO_DECISION/overridden images were deleted")
    if need > 0:
        reasons.append(f"still {need / MB:.1f} MiB short with no image left to delete")
    if not_ok or need > 0:
        logger.warning("retention: %s", "; ".join(reasons))
    return RetentionReport(
        files_deleted=files,
        bytes_freed=freed,
        ok_deleted=ok,
        not_ok_deleted=not_ok,
        results_deleted=results,
        reason="; ".join(reasons),
    )


def bytes_to_free(conn: sqlite3.Connection, data_dir: Path, policy: StoragePolicy) -> tuple[int, str]:
    """How many image bytes must go to respect both the quota and the free-space floor, and why."""
    (tracked,) = conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM images WHERE pruned = 0").fetchone()
    free = shutil.disk_usage(data_dir).free
    over_quota = int(tracked) - int(policy.quota_mb * MB)
    under_free = int(policy.min_free_mb * MB) - free
    if over_quota >= under_free and over_quota > 0:
        return over_quota, f"images use {tracked / MB:.1f} MiB of a {policy.quota_mb:g} MiB quota"
    if under_free > 0:
        return (
            under_free,
            f"only {free / MB:.1f} MiB free on the data disk (floor {policy.min_free_mb:g} MiB)",
        )
    return 0, f"images use {tracked / MB:.1f} MiB of {policy.quota_mb:g} MiB, {free / MB:.0f} MiB free"


def prune_oldest(conn: sqlite3.Connection, data_dir: Path, *, protected: bool, need: int) -> tuple[int, int]:
    """Delete the oldest live images of one tier until `need` bytes are freed (one batch); (files, bytes)."""
    rows = conn.execute(
        "SELECT item_id, camera_id, rel_path, bytes FROM images"
        " WHERE pruned = 0 AND protected = ? ORDER BY accepted_at LIMIT ?",
        (int(protected), BATCH),
    ).fetchall()
    chosen: list[tuple[str, str, str, int]] = []
    freed = 0
    for row in rows:
        if freed >= need:
            break
        chosen.append(row)
        freed += row[3]
    # Files first, then the rows: a crash in between leaves rows whose file is gone (re-pruned next
    # pass, refused by image_file), never files no row accounts for.
    remove_files(data_dir, (rel_path for _, _, rel_path, _ in chosen))
    with transaction(conn):
        conn.executemany(
            "UPDATE images SET pruned = 1 WHERE item_id = ? AND camera_id = ?",
            [(item_id, camera_id) for item_id, camera_id, _, _ in chosen],
        )
        conn.executemany(
            "UPDATE items SET image_bytes = MAX(image_bytes - ?, 0) WHERE item_id = ?",
            [(size, item_id) for item_id, _, _, size in chosen],
        )
    return len(chosen), freed


def expire_results(conn: sqlite3.Connection, data_dir: Path, cutoff: datetime) -> tuple[int, int, int]:
    """Delete one batch of decided results accepted before `cutoff`, with their images; (items, files, bytes)."""
    item_ids = [
        row[0]
        for row in conn.execute(
            "SELECT item_id FROM items WHERE accepted_at < ? AND state IN ('done', 'interrupted')"
            " ORDER BY accepted_at LIMIT ?",
            (timestamp(cutoff), BATCH),
        )
    ]
    if not item_ids:
        return 0, 0, 0
    marks = ",".join("?" * len(item_ids))
    live = conn.execute(
        f"SELECT rel_path, bytes FROM images WHERE pruned = 0 AND item_id IN ({marks})", item_ids
    ).fetchall()
    remove_files(data_dir, (rel_path for rel_path, _ in live))
    with transaction(conn):  # images rows go with their item (ON DELETE CASCADE)
        conn.execute(f"DELETE FROM items WHERE item_id IN ({marks})", item_ids)
    return len(item_ids), len(live), sum(size for _, size in live)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction; IMMEDIATE takes the write lock up front, so it can never deadlock on upgrade."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def usage(conn: sqlite3.Connection, data_dir: Path) -> DiskUsage:
    """Read-only: the storage runs it on its reader thread."""
    files, image_bytes = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM images WHERE pruned = 0"
    ).fetchone()
    (items,) = conn.execute("SELECT COUNT(*) FROM items").fetchone()
    disk = shutil.disk_usage(data_dir)
    return DiskUsage(
        image_bytes=image_bytes,
        image_files=files,
        items=items,
        fs_free_bytes=disk.free,
        fs_total_bytes=disk.total,
    )


def protected(item: Inspection) -> int:
    """Retention's second tier: KO, NO_DECISION and overridden items (model mistakes) lose their images last."""
    return int(item.decision != Decision.OK or (item.verdict is not None and item.verdict.overrides))


def record_images(conn: sqlite3.Connection, item: Inspection, written: Mapping[str, str]) -> None:
    """Index the files just written for a decided item (inside the caller's transaction)."""
    rows = []
    for camera_id, rel_path in written.items():
        camera = item.camera(camera_id)
        size = 0 if camera is None or camera.image is None else camera.image.bytes
        rows.append(
            (
                item.item_id,
                camera_id,
                rel_path,
                size,
                item.decision,
                protected(item),
                timestamp(item.accepted_at),
            )
        )
    conn.executemany(
        "INSERT OR REPLACE INTO images (item_id, camera_id, rel_path, bytes, decision, protected, accepted_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def with_image(camera: CameraResult, data: bytes | None, stored: bool) -> CameraResult:
    """The camera's ImageInfo once its image was (or was not) saved."""
    if data is None:
        if camera.image is None:
            return camera
        return camera.model_copy(update={"image": camera.image.model_copy(update={"stored": False})})
    # The pipeline fills width/height from the frame; without it the size is unknown (0).
    info = camera.image or ImageInfo(width=0, height=0, bytes=len(data))
    return camera.model_copy(update={"image": info.model_copy(update={"bytes": len(data), "stored": stored})})


def with_pruned(conn: sqlite3.Connection, items: list[Inspection]) -> list[Inspection]:
    """Pruning only flags rows in `images`; readers see it as image.stored = False."""
    if not items:
        return items
    pruned: dict[str, set[str]] = {}
    ids = [item.item_id for item in items]
    for item_id, camera_id in conn.execute(
        f"SELECT item_id, camera_id FROM images WHERE pruned = 1 AND item_id IN ({','.join('?' * len(ids))})",
        ids,
    ):
        pruned.setdefault(item_id, set()).add(camera_id)
    return [_mark_pruned(item, pruned[item.item_id]) if item.item_id in pruned else item for item in items]


def _mark_pruned(item: Inspection, cameras: set[str]) -> Inspection:
    return item.model_copy(
        update={
            "cameras": [
                c.model_copy(update={"image": c.image.model_copy(update={"stored": False})})
                if c.camera_id in cameras and c.image is not None
                else c
                for c in item.cameras
            ]
        }
    )


def remove_files(data_dir: Path, rel_paths: Iterable[str]) -> None:
    """Unlink image files (relative paths from the database) and the directories they leave empty."""
    item_dirs: set[Path] = set()
    for rel_path in rel_paths:
        path = data_dir / rel_path
        path.unlink(missing_ok=True)
        item_dirs.add(path.parent)
    for item_dir in item_dirs:
        remove_empty_dirs(data_dir, item_dir)


def remove_empty_dirs(data_dir: Path, item_dir: Path) -> None:
    """Remove an item's directory if empty, and its day/month/year directories once they are old and empty."""
    _rmdir(item_dir)
    day_dir = item_dir.parent
    try:
        day = date(int(day_dir.parent.parent.name), int(day_dir.parent.name), int(day_dir.name))
    except ValueError:
        return
    # Today's and yesterday's directories stay: a concurrent complete() may be creating an item in them.
    if day >= utcnow().date() - timedelta(days=1):
        return
    for directory in (day_dir, day_dir.parent, day_dir.parent.parent):
        if directory == data_dir or not _rmdir(directory):
            return


def _rmdir(directory: Path) -> bool:
    try:
        os.rmdir(directory)
    except OSError:  # not empty, or already gone
        return False
    return True


def utc(value: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def timestamp(value: datetime) -> str:
    """Fixed-width UTC text, so that text order is time order (keyset pagination, ranges)."""
    return utc(value).strftime(TS_FORMAT)


def item_dir(item_id: str, accepted_at: datetime) -> str:
    """images/YYYY/MM/DD/<item_id>, relative to the data directory; item_id must be a checked UUID."""
    return f"images/{utc(accepted_at):%Y/%m/%d}/{item_id}"


def file_name(camera_id: str) -> str:
    if _SAFE_CAMERA.fullmatch(camera_id):
        return f"{camera_id}.jpg"
    # Anything else is reduced to safe characters; the hash keeps two such ids from sharing a file.
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", camera_id)[:48].strip("_-") or "camera"
    return f"{cleaned}-{hashlib.sha256(camera_id.encode()).hexdigest()[:12]}.jpg"


def write_images(
    data_dir: Path, item_id: str, accepted_at: datetime, files: Mapping[str, bytes]
) -> dict[str, str]:
    """Write each camera's image atomically (tmp in the same directory, fsync, rename, fsync the directory).

    Returns the relative path per camera id. On an OSError (a full disk...)
    nothing of this call is left behind.
    """
    if not files:
        return {}
    rel_dir = item_dir(item_id, accepted_at)
    directory = data_dir / rel_dir
    images_root = (data_dir / "images").resolve()  # may be a symlink to another disk
    written: dict[str, str] = {}
    tmp: Path | None = None
    try:
        make_dirs(directory, data_dir)
        for camera_id, data in files.items():
            name = file_name(camera_id)
            path = directory / name
            if not path.resolve().is_relative_to(images_root):
                raise ValueError(f"refusing to write outside the images directory: {path}")
            tmp = path.with_name(f".{name}.tmp")
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            written[camera_id] = f"{rel_dir}/{name}"
        fsync_dir(directory)
    except OSError:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        remove_files(data_dir, written.values())
        raise
    return written


def make_dirs(directory: Path, root: Path) -> None:
    """mkdir -p below `root`, fsyncing each parent that gained an entry so the new directory survives a power cut."""
    missing: list[Path] = []
    while not directory.is_dir() and directory != root:
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
