"""Cameras on real files: replay folders and videos, the OpenCV stream reader, the picamera2 path, settings."""

from __future__ import annotations

import asyncio
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from edge_orchestrator.cameras import (
    CameraSettings,
    HttpSnapshotCameraSettings,
    PiCameraSettings,
    ReplayCamera,
    ReplayCameraSettings,
    RtspCameraSettings,
    StreamCamera,
    UsbCameraSettings,
    mask_url,
)
from edge_orchestrator.domain import Frame, utcnow
from edge_orchestrator.errors import CameraError
from tests.conftest import encode, solid

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def grey_of(frame: Frame) -> float:
    image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (frame.height, frame.width)
    return float(image.mean())


def write_video(path: Path, frames: int, fps: float = 20.0, step: int = 5) -> Path:
    """An MJPG .avi whose frame i is uniformly grey at level i * step (so a frame tells its index)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((48, 64, 3), i * step, np.uint8))
    writer.release()
    return path


def index_of(frame: Frame, step: int = 5) -> int:
    return round(grey_of(frame) / step)


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll a status condition (a snapshot, nothing to await) for at most 5 s."""
    for _ in range(250):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the camera never reached the expected status")


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """a.jpg (red 32x32), b.png (green 40x30), c.jpeg (blue 16x8): name order differs from creation order."""
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "c.jpeg").write_bytes(encode(solid((255, 0, 0), 16, 8), ".jpg"))
    (folder / "b.png").write_bytes(encode(solid((0, 255, 0), 40, 30), ".png"))
    (folder / "a.jpg").write_bytes(encode(solid((0, 0, 255), 32, 32), ".jpg"))
    (folder / "notes.txt").write_text("not an image")
    return folder


# --- replay -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cache_limit_bytes", [64 * 1024 * 1024, 0], ids=["cached", "read-per-capture"])
async def test_replay_folder_plays_in_name_order_and_loops(
    image_folder: Path, cache_limit_bytes: int
) -> None:
    camera = ReplayCamera("cam", image_folder, cache_limit_bytes=cache_limit_bytes)
    await camera.open()
    frames = [await camera.capture() for _ in range(4)]
    await camera.close()

    assert [(f.width, f.height) for f in frames] == [(32, 32), (40, 30), (16, 8), (32, 32)]
    assert frames[0].jpeg == (image_folder / "a.jpg").read_bytes()  # JPEG files are passed through as-is
    assert frames[1].jpeg.startswith(b"\xff\xd8\xff")  # the PNG is re-encoded to JPEG
    assert grey_of(frames[1]) == pytest.approx(255 / 3, abs=3)
    assert all(f.camera_id == "cam" for f in frames)
    status = camera.status()
    assert status.frames == 4 and status.last_frame_at == frames[-1].captured_at
    assert not status.connected


async def test_replay_without_loop_fails_once_exhausted(image_folder: Path) -> None:
    camera = ReplayCameraSettings(type="replay", path=Path("images"), loop=False).build(
        "cam", image_folder.parent
    )
    await camera.open()
    for _ in range(3):
        await camera.capture()

    with pytest.raises(CameraError, match="'cam' has played all 3 images"):
        await camera.capture()
    assert camera.status().errors == 1
    await camera.close()


async def test_concurrent_replay_captures_get_distinct_frames(image_folder: Path) -> None:
    camera = ReplayCamera("cam", image_folder, cache_limit_bytes=0)
    await camera.open()
    frames = await asyncio.gather(*(camera.capture() for _ in range(3)))
    await camera.close()

    assert sorted((f.width, f.height) for f in frames) == [(16, 8), (32, 32), (40, 30)]


async def test_replay_paces_at_fps(image_folder: Path) -> None:
    camera = ReplayCamera("cam", image_folder, fps=20)
    await camera.open()
    start = time.monotonic()
    await asyncio.gather(*(camera.capture() for _ in range(5)))
    elapsed = time.monotonic() - start
    await camera.close()

    assert 0.18 <= elapsed < 1.0  # five slots 50 ms apart, concurrent captures included


@pytest.mark.parametrize("kind", ["missing", "empty", "not-an-image"])
async def test_replay_configuration_errors_raise_on_open(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "images"
    if kind == "empty":
        path.mkdir()
    elif kind == "not-an-image":
        path.mkdir()
        (path / "a.jpg").write_bytes(b"garbage")
    camera = ReplayCamera("cam", path)

    with pytest.raises(CameraError, match="replay camera 'cam'"):
        await camera.open()


async def test_replay_video_file_plays_frames_in_order_and_loops(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", frames=4, step=40)
    camera = ReplayCameraSettings(type="replay", path=Path("clip.avi")).build("cam", tmp_path)
    await camera.open()
    frames = [await camera.capture() for _ in range(6)]
    await camera.close()
    await camera.close()  # idempotent

    assert [index_of(f, 40) for f in frames] == [0, 1, 2, 3, 0, 1]
    assert (frames[0].width, frames[0].height) == (64, 48)
    assert video.exists()


async def test_replay_video_without_loop_fails_at_the_end(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.avi", frames=2)
    camera = ReplayCamera("cam", tmp_path / "clip.avi", loop=False)
    await camera.open()
    await camera.capture()
    await camera.capture()

    with pytest.raises(CameraError, match="loop is off"):
        await camera.capture()
    await camera.close()


async def test_replay_rejects_a_file_that_is_not_a_video(tmp_path: Path) -> None:
    (tmp_path / "clip.avi").write_bytes(b"not a video")

    with pytest.raises(CameraError, match="not a video OpenCV can read"):
        await ReplayCamera("cam", tmp_path / "clip.avi").open()


# --- stream (USB / RTSP reader) ---------------------------------------------------------------------


async def test_stream_keeps_only_the_latest_frame(tmp_path: Path) -> None:
    # Given a 40-frame clip played in real time (20 fps) through the RTSP settings (a local file as url)
    write_video(tmp_path / "clip.avi", frames=40, fps=20)
    camera = RtspCameraSettings(type="rtsp", url="clip.avi").build("cam", tmp_path)
    await camera.open()
    try:
        first = await camera.capture()
        # When we wait 0.3 s (about 6 frames) before asking again
        await asyncio.sleep(0.3)
        second = await camera.capture()
    finally:
        await camera.close()

    # Then we get the newest frame, not the next one in a backlog
    assert index_of(second) - index_of(first) >= 3
    assert camera.status().connected is False


async def test_stream_capture_waits_for_a_frame_taken_after_not_before(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.avi", frames=40, fps=20)
    camera = RtspCameraSettings(type="rtsp", url=str(tmp_path / "clip.avi")).build("cam", tmp_path)
    await camera.open()
    try:
        await camera.capture()  # the stream is running
        trigger = utcnow()
        frame = await camera.capture(not_before=trigger)
    finally:
        await camera.close()

    assert frame.captured_at >= trigger
    assert (frame.width, frame.height) == (64, 48)


async def test_stream_reconnects_with_backoff_when_the_source_ends(tmp_path: Path) -> None:
    # Given a short file read as fast as it decodes: it ends almost at once, every time
    path = str(write_video(tmp_path / "clip.avi", frames=5))
    camera = StreamCamera(
        "cam", path, lambda: cv2.VideoCapture(path), backoff_initial_s=0.05, backoff_max_s=0.1
    )
    await camera.open()
    try:
        # Then the reader reopens it, counting reconnects and the failed reads that ended each pass
        await eventually(lambda: camera.status().reconnects >= 2 and camera.status().frames >= 15)
        status = camera.status()
        assert status.errors >= 2
        # And a capture after the trigger is served by a later pass, from its first frame onwards
        trigger = utcnow()
        frame = await asyncio.wait_for(camera.capture(not_before=trigger), 2)
        assert frame.captured_at >= trigger
    finally:
        await camera.close()


async def test_stream_close_is_idempotent_and_stops_captures(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.avi", frames=40, fps=20)
    camera = RtspCameraSettings(type="rtsp", url="clip.avi").build("cam", tmp_path)
    await camera.open()
    await camera.capture()
    waiting = asyncio.create_task(camera.capture(not_before=utcnow()))

    await camera.close()
    await camera.close()

    with pytest.raises(CameraError, match="'cam' is not open"):
        await waiting
    with pytest.raises(CameraError, match="'cam' is not open"):
        await camera.capture()
    status = camera.status()
    assert not status.connected and status.detail == "closed"


async def test_capture_is_cancellation_safe(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.avi", frames=40, fps=20)
    camera = RtspCameraSettings(type="rtsp", url="clip.avi").build("cam", tmp_path)
    await camera.open()
    try:
        future = utcnow().replace(year=utcnow().year + 1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await camera.capture(not_before=future)
        frame = await camera.capture(not_before=utcnow())  # the camera still works after a cancelled capture
        assert frame.width == 64
    finally:
        await camera.close()


async def test_missing_usb_device_does_not_raise_and_reports_why(caplog: pytest.LogCaptureFixture) -> None:
    camera = UsbCameraSettings(type="usb", device="/dev/video-missing").build("cam", Path())

    await camera.open()
    try:
        await eventually(lambda: camera.status().errors >= 1)
        status = camera.status()
        assert not status.connected
        assert "cannot open /dev/video-missing" in (status.detail or "")
        with pytest.raises(CameraError, match="'cam' is not connected: cannot open /dev/video-missing"):
            await asyncio.wait_for(camera.capture(), 2)
    finally:
        await camera.close()


async def test_stream_reconnects_once_the_source_appears(tmp_path: Path) -> None:
    path = tmp_path / "late.avi"
    camera = StreamCamera("cam", str(path), lambda: cv2.VideoCapture(str(path)), backoff_initial_s=0.05)
    await camera.open()
    try:
        await eventually(lambda: camera.status().errors >= 2)
        write_video(path, frames=5)
        await eventually(lambda: camera.status().frames >= 5)
        assert camera.status().reconnects >= 2
    finally:
        await camera.close()


# --- Raspberry Pi camera ------------------------------------------------------------------------------


async def test_picamera_without_picamera2_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` fail, installed or not
    camera = PiCameraSettings(type="picamera").build("cam", Path())

    with pytest.raises(CameraError, match=r"'cam'.*picamera2.*apt install python3-picamera2"):
        await camera.open()


class FakePicamera2:
    """Just enough of picamera2.Picamera2 for the camera: records what it was asked, returns BGR arrays."""

    instances: list[FakePicamera2] = []
    fail_to_open = 0  # how many constructions raise, like a camera that is not plugged in

    def __init__(self, camera_num: int = 0) -> None:
        if FakePicamera2.fail_to_open:
            FakePicamera2.fail_to_open -= 1
            raise IndexError("list index out of range")
        self.camera_num = camera_num
        self.config: dict[str, Any] = {}
        self.started = self.closed = False
        self.fail_capture = False
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main: dict[str, Any], controls: dict[str, Any]) -> dict[str, Any]:
        return {"main": main, "controls": controls}

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config

    def start(self) -> None:
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        if self.fail_capture:
            raise RuntimeError("camera frontend has timed out")
        width, height = self.config["main"]["size"]
        return np.full((height, width, 3), 128, np.uint8)

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> type[FakePicamera2]:
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    FakePicamera2.instances = []
    FakePicamera2.fail_to_open = 0
    return FakePicamera2


async def test_picamera_configures_captures_and_closes(fake_picamera2: type[FakePicamera2]) -> None:
    settings = PiCameraSettings(
        type="picamera", index=1, width=64, height=48, exposure_us=5000, analogue_gain=2.0
    )
    camera = settings.build("cam", Path())
    await camera.open()
    frame = await camera.capture(not_before=utcnow())
    await camera.close()
    await camera.close()

    device = fake_picamera2.instances[0]
    assert device.camera_num == 1
    assert device.config["main"] == {"size": (64, 48), "format": "RGB888"}
    assert device.config["controls"] == {"AeEnable": False, "ExposureTime": 5000, "AnalogueGain": 2.0}
    assert (frame.width, frame.height) == (64, 48)
    assert grey_of(frame) == pytest.approx(128, abs=2)
    assert device.closed and not device.started
    assert camera.status().frames == 1


async def test_picamera_reconnects_in_the_background(fake_picamera2: type[FakePicamera2]) -> None:
    # Given a camera that is missing at first
    fake_picamera2.fail_to_open = 2
    camera = PiCameraSettings(type="picamera", width=32, height=24).build("cam", Path())
    camera = type(camera)("cam", camera.settings, backoff_initial_s=0.02)
    await camera.open()  # does not raise
    try:
        assert not camera.status().connected
        with pytest.raises(CameraError, match="'cam' is not connected: cannot start Pi camera 0"):
            await camera.capture()
        # Then it connects once the camera answers
        await eventually(lambda: camera.status().connected)
        assert (await camera.capture()).width == 32
        # And a device failing mid-capture fails that capture, then comes back
        fake_picamera2.instances[-1].fail_capture = True
        with pytest.raises(CameraError, match="stopped delivering frames"):
            await camera.capture()
        await eventually(lambda: camera.status().connected)
        assert (await camera.capture()).height == 24
        assert camera.status().reconnects >= 3
    finally:
        await camera.close()
    assert all(device.closed for device in fake_picamera2.instances)


# --- settings -------------------------------------------------------------------------------------------

SETTINGS: list[type[BaseModel]] = [
    ReplayCameraSettings,
    UsbCameraSettings,
    PiCameraSettings,
    RtspCameraSettings,
    HttpSnapshotCameraSettings,
]


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
def test_every_settings_field_is_described(cls: type[BaseModel]) -> None:
    assert cls.model_config.get("frozen") and cls.model_config.get("extra") == "forbid"
    assert [name for name, field in cls.model_fields.items() if not field.description] == []


def test_camera_settings_union_selects_the_kind_by_type(tmp_path: Path) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(CameraSettings)
    assert isinstance(adapter.validate_python({"type": "usb", "device": 2}), UsbCameraSettings)
    assert isinstance(
        adapter.validate_python({"type": "http", "url": "http://cam/snap.jpg"}), HttpSnapshotCameraSettings
    )
    replay = adapter.validate_python({"type": "replay", "path": "images", "fps": 5})
    assert replay.build("cam", tmp_path).path == tmp_path / "images"
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "rtsp", "url": "rtsp://cam/1", "bogus": 1})
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "thermal"})


def test_urls_are_masked_for_logs_and_status() -> None:
    assert mask_url("rtsp://admin:s3cret@10.0.0.5:554/stream1") == "rtsp://***@10.0.0.5:554/stream1"
    assert mask_url("http://cam/snap.jpg?user=a&password=s3cret") == "http://cam/snap.jpg?user=a&password=***"
    assert mask_url("/dev/video0") == "/dev/video0"
    camera = RtspCameraSettings(type="rtsp", url="rtsp://admin:s3cret@10.0.0.5/stream1").build("cam", Path())
    assert "s3cret" not in repr(camera) and "s3cret" not in camera.source
