"""The Raspberry Pi camera (libcamera through picamera2, imported only when such a camera opens)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_orchestrator.cameras.base import Backoff, CameraStatus, Health, encode_jpeg
from edge_orchestrator.domain import Frame, utcnow
from edge_orchestrator.errors import CameraError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install it with `sudo apt install python3-picamera2` on Raspberry Pi OS "
    "and create the virtual environment with --system-site-packages"
)


class PiCameraSettings(BaseModel):
    """A Raspberry Pi camera module (CSI), through libcamera and picamera2."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["picamera"] = Field(description="A Raspberry Pi camera module read through picamera2.")
    index: int = Field(
        default=0, ge=0, description="Which camera, when the board has several (Pi 5: 0 or 1)."
    )
    width: int = Field(default=1280, gt=0, description="Frame width in pixels.")
    height: int = Field(default=960, gt=0, description="Frame height in pixels.")
    exposure_us: int | None = Field(
        default=None, gt=0, description="Fixed exposure time in microseconds (None: automatic exposure)."
    )
    analogue_gain: float | None = Field(
        default=None, ge=1.0, description="Fixed sensor gain, 1.0 and up (None: automatic)."
    )
    jpeg_quality: int = Field(default=90, ge=1, le=100, description="JPEG quality of the captured frames.")

    def build(self, camera_id: str, base_dir: Path) -> PiCamera:
        return PiCamera(camera_id, self)


class PiCamera:
    """Streams continuously once started; capture_array() hands over the next completed frame (in a thread)."""

    def __init__(
        self,
        camera_id: str,
        settings: PiCameraSettings,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.camera_id = camera_id
        self.settings = settings
        self._health = Health()
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self._factory: Any = None  # picamera2.Picamera2
        self._device: Any = None  # a started Picamera2, or None while disconnected
        # libcamera objects are not safe to use from two threads at once, and an abandoned (cancelled)
        # capture's thread may still be running when the next one starts.
        self._device_lock = threading.Lock()
        self._closed = False
        self._reconnect_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"PiCamera({self.camera_id!r}, index={self.settings.index})"

    async def open(self) -> None:
        if self._factory is not None or self._closed:
            return
        try:
            module = importlib.import_module("picamera2")
        except ImportError as exc:
            raise CameraError(
                f"camera {self.camera_id!r} is a Raspberry Pi camera but the picamera2 package is missing: {INSTALL_HINT}"
            ) from exc
        self._factory = module.Picamera2
        if not await asyncio.to_thread(self._start):
            self._reconnect_soon()

    async def capture(self, not_before: datetime | None = None) -> Frame:
        # capture_array() waits for the next frame completed after the call, so it is never older than not_before.
        if self._closed or self._factory is None:
            raise CameraError(f"camera {self.camera_id!r} is not open")
        if self._device is None:
            raise CameraError(f"camera {self.camera_id!r} is not connected: {self._health.detail}")
        try:
            jpeg, width, height = await asyncio.to_thread(self._grab)
        except CameraError:
            if self._device is None:
                self._reconnect_soon()
            raise
        at = utcnow()
        self._health.frame(at)
        return Frame(self.camera_id, jpeg, width, height, at)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
        await asyncio.to_thread(self._stop_device)
        self._health.state(False, "closed")

    def status(self) -> CameraStatus:
        return self._health.snapshot()

    def _controls(self) -> dict[str, Any]:
        controls: dict[str, Any] = {}
        if self.settings.exposure_us is not None:
            controls |= {"AeEnable": False, "ExposureTime": self.settings.exposure_us}
        if self.settings.analogue_gain is not None:
            controls["AnalogueGain"] = self.settings.analogue_gain
        return controls

    def _start(self) -> bool:
        """Open, configure and start the camera (in a thread); False, with the reason in status, when it fails."""
        with self._device_lock:
            if self._closed or self._device is not None:
                return self._device is not None
            device = None
            try:
                device = self._factory(self.settings.index)
                # RGB888 is laid out B, G, R in memory: what OpenCV encodes without conversion.
                config = device.create_video_configuration(
                    main={"size": (self.settings.width, self.settings.height), "format": "RGB888"},
                    controls=self._controls(),
                )
                device.configure(config)
                device.start()
            except Exception as exc:  # picamera2 raises IndexError, RuntimeError, ... for a missing camera
                if device is not None:
                    _quietly_close(device)
                self._health.error(
                    f"cannot start Pi camera {self.settings.index}: {type(exc).__name__}: {exc}"
                )
                return False
            self._device = device
            self._health.state(True, None)
            log.info("camera %s: Pi camera %d started", self.camera_id, self.settings.index)
            return True

    def _grab(self) -> tuple[bytes, int, int]:
        with self._device_lock:
            device = self._device
            if device is None:
                raise CameraError(f"camera {self.camera_id!r} is not connected: {self._health.detail}")
            try:
                image = device.capture_array("main")
            except Exception as exc:
                self._device = None
                _quietly_close(device)
                detail = (
                    f"Pi camera {self.settings.index} stopped delivering frames: {type(exc).__name__}: {exc}"
                )
                self._health.error(detail)
                raise CameraError(f"camera {self.camera_id!r}: {detail}") from exc
        height, width = image.shape[:2]
        try:
            return encode_jpeg(image[:, :, :3], self.settings.jpeg_quality), int(width), int(height)
        except ValueError as exc:
            raise CameraError(
                f"camera {self.camera_id!r} gave a frame that cannot be encoded: {exc}"
            ) from exc

    def _stop_device(self) -> None:
        with self._device_lock:
            device, self._device = self._device, None
        if device is not None:
            _quietly_close(device)

    def _reconnect_soon(self) -> None:
        if self._closed or (self._reconnect_task is not None and not self._reconnect_task.done()):
            return
        self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        self._backoff.reset()
        while not self._closed:
            await asyncio.sleep(self._backoff.next())
            self._health.reconnect()
            if await asyncio.to_thread(self._start):
                return


def _quietly_close(device: Any) -> None:
    for step in (device.stop, device.close):
        try:
            step()
        except Exception:  # best effort: the device is being dropped anyway
            log.debug("closing a Pi camera failed", exc_info=True)
