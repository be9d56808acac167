"""The replay camera: a folder of images or a video file played back as a camera (demos, tests, re-runs)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_orchestrator.cameras.base import CameraStatus, Health, encode_jpeg, to_jpeg
from edge_orchestrator.domain import Frame, utcnow
from edge_orchestrator.errors import CameraError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
# Below this a folder is read once into memory: the demo replays at 20+ items/s on two cores, where a
# file read per capture would cost more than the inspection.
CACHE_LIMIT_BYTES = 64 * 1024 * 1024


class ReplayCameraSettings(BaseModel):
    """Images or a video from disk, played back in order as if a camera took them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["replay"] = Field(description="Replay images from a folder or a video file.")
    path: Path = Field(
        description="A folder of .jpg/.jpeg/.png images (played in name order) or a video file; "
        "relative paths start at the station file's folder."
    )
    loop: bool = Field(
        default=True, description="Start again after the last image; when false, captures then fail."
    )
    fps: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="Deliver at most this many frames per second (None: as fast as asked).",
    )
    jpeg_quality: int = Field(
        default=90, ge=1, le=100, description="JPEG quality when PNG images or video frames are re-encoded."
    )

    def build(self, camera_id: str, base_dir: Path) -> ReplayCamera:
        path = self.path if self.path.is_absolute() else base_dir / self.path
        return ReplayCamera(camera_id, path, loop=self.loop, fps=self.fps, jpeg_quality=self.jpeg_quality)


@dataclass(frozen=True, slots=True)
class _Encoded:
    jpeg: bytes
    width: int
    height: int


class ReplayCamera:
    """Plays a folder (each capture takes the next image; concurrent captures take distinct ones) or a video."""

    def __init__(
        self,
        camera_id: str,
        path: Path,
        *,
        loop: bool = True,
        fps: float | None = None,
        jpeg_quality: int = 90,
        cache_limit_bytes: int = CACHE_LIMIT_BYTES,
    ) -> None:
        self.camera_id = camera_id
        self.path = path
        self._loop = loop
        self._interval = 1.0 / fps if fps else 0.0
        self._quality = jpeg_quality
        self._cache_limit = cache_limit_bytes
        self._health = Health()
        self._files: list[Path] = []
        self._cache: list[_Encoded] | None = None
        self._video: Any = None  # cv2.VideoCapture while a video is open
        self._video_lock = threading.Lock()  # one reader of the video at a time, whichever thread runs it
        self._next = 0
        self._next_due = 0.0
        self._opened = False

    def __repr__(self) -> str:
        return f"ReplayCamera({self.camera_id!r}, {str(self.path)!r})"

    async def open(self) -> None:
        if self._opened:
            return
        if not self.path.exists():
            raise CameraError(f"replay camera {self.camera_id!r}: {self.path} does not exist")
        if self.path.is_dir() or self.path.suffix.lower() in IMAGE_SUFFIXES:
            await asyncio.to_thread(self._open_images)
        else:
            await asyncio.to_thread(self._open_video)
        self._opened = True
        self._health.state(True, None)

    def _open_images(self) -> None:
        if self.path.is_dir():
            files = sorted(
                p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        else:
            files = [self.path]
        if not files:
            raise CameraError(
                f"replay camera {self.camera_id!r}: {self.path} holds no .jpg, .jpeg or .png image"
            )
        self._files = files
        if sum(p.stat().st_size for p in files) <= self._cache_limit:
            self._cache = [self._load(p) for p in files]

    def _load(self, path: Path) -> _Encoded:
        try:
            jpeg, width, height = to_jpeg(path.read_bytes(), self._quality)
        except (OSError, ValueError) as exc:
            raise CameraError(f"replay camera {self.camera_id!r} cannot read {path}: {exc}") from exc
        return _Encoded(jpeg, width, height)

    def _open_video(self) -> None:
        import cv2

        video = cv2.VideoCapture(str(self.path))
        ok = video.isOpened() and video.grab()
        video.release()
        if not ok:
            raise CameraError(f"replay camera {self.camera_id!r}: {self.path} is not a video OpenCV can read")
        self._video = cv2.VideoCapture(str(self.path))

    async def capture(self, not_before: datetime | None = None) -> Frame:
        # Replayed frames are taken at delivery time, so they always satisfy not_before.
        if not self._opened:
            raise CameraError(f"replay camera {self.camera_id!r} is not open")
        try:
            if self._files:
                # Claim the index before any await: concurrent captures each get their own image.
                index = self._claim_index()
                await self._pace()
                encoded = (
                    self._cache[index]
                    if self._cache
                    else await asyncio.to_thread(self._load, self._files[index])
                )
            else:
                await self._pace()
                encoded = await asyncio.to_thread(self._read_video)
        except CameraError as exc:
            self._health.error(exc.detail, connected=self._opened)
            raise
        at = utcnow()
        self._health.frame(at)
        return Frame(self.camera_id, encoded.jpeg, encoded.width, encoded.height, at)

    def _claim_index(self) -> int:
        index = self._next
        if index >= len(self._files):
            if not self._loop:
                raise CameraError(
                    f"replay camera {self.camera_id!r} has played all {len(self._files)} images "
                    f"of {self.path} (loop is off)"
                )
            index = 0
        self._next = index + 1
        return index

    async def _pace(self) -> None:
        if not self._interval:
            return
        # Reserve a delivery slot before sleeping, so concurrent captures are spaced rather than bunched.
        now = time.monotonic()
        due = max(now, self._next_due)
        self._next_due = due + self._interval
        if due > now:
            await asyncio.sleep(due - now)

    def _read_video(self) -> _Encoded:
        import cv2

        with self._video_lock:
            if self._video is None:
                raise CameraError(f"replay camera {self.camera_id!r} is closed")
            ok, image = self._video.read()
            if not ok and self._loop:
                self._video.release()
                self._video = cv2.VideoCapture(str(self.path))
                ok, image = self._video.read()
            if not ok:
                raise CameraError(
                    f"replay camera {self.camera_id!r} has played all of {self.path}"
                    + (" (loop is off)" if not self._loop else "")
                )
        height, width = image.shape[:2]
        return _Encoded(encode_jpeg(image, self._quality), int(width), int(height))

    async def close(self) -> None:
        self._opened = False
        self._cache = None
        self._health.state(False, "closed")
        await asyncio.to_thread(self._release_video)

    def _release_video(self) -> None:
        with self._video_lock:
            if self._video is not None:
                self._video.release()
                self._video = None

    def status(self) -> CameraStatus:
        return self._health.snapshot()
