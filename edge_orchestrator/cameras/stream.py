"""Continuous cameras (USB/V4L2 and RTSP/IP): an OpenCV reader thread keeps only the latest frame and reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

from pydantic import BaseModel, ConfigDict, Field

from edge_orchestrator.cameras.base import Backoff, CameraStatus, Health, encode_jpeg, mask_url
from edge_orchestrator.domain import Frame, utcnow
from edge_orchestrator.errors import CameraError

log = logging.getLogger(__name__)

_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# OpenCV's FFmpeg backend takes demuxer options (rtsp_transport) only from this process-wide variable, read
# while a capture opens; the lock keeps two cameras with different transports from seeing each other's value.
_ffmpeg_env_lock = threading.Lock()

OpenSource = Callable[[], Any]  # returns a cv2.VideoCapture (opened or not); may raise cv2.error


class UsbCameraSettings(BaseModel):
    """A USB (UVC) camera read through V4L2."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["usb"] = Field(description="A USB camera read through V4L2.")
    device: int | str = Field(
        default=0, description="Device index (0 for /dev/video0) or path (/dev/v4l/by-id/...)."
    )
    width: int | None = Field(
        default=None, gt=0, description="Requested width in pixels (None: the device's default)."
    )
    height: int | None = Field(
        default=None, gt=0, description="Requested height in pixels (None: the device's default)."
    )
    fps: float | None = Field(
        default=None, gt=0, description="Requested frame rate (None: the device's default)."
    )
    fourcc: str = Field(
        default="MJPG",
        pattern=r"^[A-Za-z0-9 ]{4}$",
        description="Pixel format asked of the device; MJPG allows high resolutions over USB 2.",
    )
    exposure: float | None = Field(
        default=None,
        description="Manual exposure in the driver's units (V4L2: exposure_time_absolute, 100 µs steps); "
        "None: automatic exposure.",
    )
    jpeg_quality: int = Field(default=90, ge=1, le=100, description="JPEG quality of the captured frames.")

    def build(self, camera_id: str, base_dir: Path) -> StreamCamera:
        source = f"/dev/video{self.device}" if isinstance(self.device, int) else self.device
        return StreamCamera(camera_id, source, partial(_open_usb, self), jpeg_quality=self.jpeg_quality)


class RtspCameraSettings(BaseModel):
    """An IP camera (RTSP), or any stream or video file OpenCV's FFmpeg can read (HTTP MJPEG, a recorded clip)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["rtsp"] = Field(description="A network stream read through OpenCV's FFmpeg.")
    url: str = Field(
        min_length=1,
        description="rtsp://user:password@host:554/path (credentials are masked in logs and status); "
        "also http(s) MJPEG URLs, or a local video file (played at its own frame rate, relative to the station file).",
    )
    transport: Literal["tcp", "udp"] = Field(
        default="tcp", description="RTSP transport; tcp survives lossy networks without torn frames."
    )
    timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="Longest wait to connect, and for one frame."
    )
    jpeg_quality: int = Field(default=90, ge=1, le=100, description="JPEG quality of the captured frames.")

    def build(self, camera_id: str, base_dir: Path) -> StreamCamera:
        url, local = self.url, "://" not in self.url
        if local and not Path(url).is_absolute():
            url = str(base_dir / url)
        opener = partial(_open_ffmpeg, url, self.transport, int(self.timeout_s * 1000))
        # A file reads as fast as it decodes; pacing it at its own rate makes it behave like a live camera.
        return StreamCamera(camera_id, mask_url(url), opener, jpeg_quality=self.jpeg_quality, realtime=local)


def _open_usb(settings: UsbCameraSettings) -> Any:
    import cv2

    cap = cv2.VideoCapture(settings.device, cv2.CAP_V4L2)
    if not cap.isOpened():
        return cap
    # The format first: the sizes and rates a device offers depend on it.
    cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*settings.fourcc))
    if settings.width:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, settings.width)
    if settings.height:
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, settings.height)
    if settings.fps:
        cap.set(cv2.CAP_PROP_FPS, settings.fps)
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer queued driver buffers: a read returns a fresher frame
    # V4L2 auto-exposure menu: 1 = manual, 3 = aperture priority (auto). Set both ways: the device keeps
    # the last mode across opens.
    if settings.exposure is None:
        cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 3)
    else:
        cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 1)
        cap.set(cv2.CAP_PROP_EXPOSURE, settings.exposure)
    return cap


def _open_ffmpeg(url: str, transport: str, timeout_ms: int) -> Any:
    import cv2

    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
    if not url.lower().startswith(("rtsp://", "rtsps://")):
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    with _ffmpeg_env_lock:
        previous = os.environ.get(_FFMPEG_OPTIONS_ENV)
        os.environ[_FFMPEG_OPTIONS_ENV] = f"rtsp_transport;{transport}"
        try:
            return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        finally:
            if previous is None:
                os.environ.pop(_FFMPEG_OPTIONS_ENV, None)
            else:
                os.environ[_FFMPEG_OPTIONS_ENV] = previous


# connecting: an attempt is under way or due after a drop (captures wait); connected: frames flow;
# down: the last attempt gave no frame and the reader waits to retry (captures fail at once, with the reason,
# rather than time out).
_State = Literal["connecting", "connected", "down"]


@dataclass(frozen=True, slots=True)
class _Latest:
    image: np.ndarray[Any, Any]
    captured_at: datetime


class StreamCamera:
    """A continuous source read by one thread that keeps only the newest frame, reconnecting with backoff.

    capture() returns the newest frame taken at or after not_before, waiting for the next one if needed;
    JPEG encoding happens then, off the event loop, so frames nobody asks for cost only their decode."""

    def __init__(
        self,
        camera_id: str,
        source: str,
        open_source: OpenSource,
        *,
        jpeg_quality: int = 90,
        realtime: bool = False,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.camera_id = camera_id
        self.source = source  # for logs and status: never holds credentials
        self._open_source = open_source
        self._quality = jpeg_quality
        self._realtime = realtime
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self._health = Health()
        self._lock = threading.Lock()  # guards _latest and _state between the reader thread and the loop
        self._latest: _Latest | None = None
        self._state: _State = "connecting"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._new_frame = asyncio.Event()
        self._closed = False

    def __repr__(self) -> str:
        return f"StreamCamera({self.camera_id!r}, {self.source!r})"

    async def open(self) -> None:
        # Never raises for a missing device: the reader keeps trying and status() says why it cannot.
        if self._thread is not None or self._closed:
            return
        self._loop = asyncio.get_running_loop()
        self._health.state(False, f"connecting to {self.source}")
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.camera_id}", daemon=True)
        self._thread.start()

    async def capture(self, not_before: datetime | None = None) -> Frame:
        while True:
            if self._closed or self._thread is None:
                raise CameraError(f"camera {self.camera_id!r} is not open")
            waiter = self._new_frame  # taken before checking, so a frame published after the check wakes us
            with self._lock:
                latest, state = self._latest, self._state
            if latest is not None and (
                latest.captured_at >= not_before if not_before is not None else state == "connected"
            ):
                break
            if state == "down":
                detail = self._health.detail or "no frame"
                raise CameraError(f"camera {self.camera_id!r} is not connected: {detail}")
            await waiter.wait()
        jpeg = await asyncio.to_thread(encode_jpeg, latest.image, self._quality)
        height, width = latest.image.shape[:2]
        return Frame(self.camera_id, jpeg, int(width), int(height), latest.captured_at)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake()
        thread, self._thread = self._thread, None
        if thread is not None:
            # A read can block until the source's own timeout; the thread releases the device when it ends.
            await asyncio.to_thread(thread.join, 15.0)
            if thread.is_alive():
                log.warning(
                    "camera %s: the reader of %s did not stop within 15 s", self.camera_id, self.source
                )
        with self._lock:
            self._latest = None
        self._health.state(False, "closed")

    def status(self) -> CameraStatus:
        return self._health.snapshot()

    def _wake(self) -> None:
        # Runs on the event loop: release every capture waiting for a frame, then arm a fresh event.
        waiter, self._new_frame = self._new_frame, asyncio.Event()
        waiter.set()

    def _publish(self, image: np.ndarray[Any, Any]) -> None:
        at = utcnow()
        with self._lock:
            self._latest = _Latest(image, at)
        self._health.frame(at)
        self._wake_from_thread()

    def _set_state(self, state: _State) -> None:
        with self._lock:
            self._state = state
            if state == "connected":
                self._latest = None  # a frame from before the reconnection is not the current view
        if state == "down":
            self._wake_from_thread()  # waiting captures fail now rather than time out

    def _wake_from_thread(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                self._loop.call_soon_threadsafe(self._wake)

    def _run(self) -> None:
        first, last_reason = True, ""
        while not self._stop.is_set():
            if not first:
                self._health.reconnect()
            first = False
            self._set_state("connecting")
            self._health.state(False, f"connecting to {self.source}")
            try:
                frames, reason = self._session()
            except Exception as exc:  # a bug or an OpenCV error must not end the reader for good
                frames, reason = 0, f"reading {self.source} failed: {type(exc).__name__}: {exc}"
                log.exception("camera %s: reader failed", self.camera_id)
            if self._stop.is_set():
                break
            if frames:
                self._backoff.reset()
            delay = self._backoff.next()
            self._health.error(f"{reason}; retrying in {delay:g} s")
            # A source that was delivering probably comes back at the next attempt: captures wait for it.
            # One that cannot be opened at all is down: captures fail at once with the reason.
            self._set_state("connecting" if frames else "down")
            # An absent camera fails the same way for hours: say it once, then only when the reason changes.
            level = logging.DEBUG if reason == last_reason else logging.WARNING
            log.log(level, "camera %s: %s; retrying in %g s", self.camera_id, reason, delay)
            last_reason = reason
            self._stop.wait(delay)
        self._health.state(False, "closed")

    def _session(self) -> tuple[int, str]:
        """Open the source and read until it fails or the camera closes: (frames read, why it ended)."""
        import cv2

        cap = self._open_source()
        try:
            if not cap.isOpened():
                return 0, f"cannot open {self.source}"
            log.info("camera %s: connected to %s", self.camera_id, self.source)
            self._set_state("connected")
            self._health.state(True, None)
            interval = 0.0
            if self._realtime:
                fps = cap.get(cv2.CAP_PROP_FPS)
                interval = 1.0 / fps if 0 < fps < 1000 else 1.0 / 25
            started, frames = time.monotonic(), 0
            while not self._stop.is_set():
                ok, image = cap.read()
                if not ok or image is None:
                    return (
                        frames,
                        f"{self.source} stopped delivering frames"
                        if frames
                        else f"{self.source} gave no frame",
                    )
                frames += 1
                self._publish(image)
                if interval:
                    self._stop.wait(max(0.0, started + frames * interval - time.monotonic()))
            return frames, "closed"
        finally:
            cap.release()
