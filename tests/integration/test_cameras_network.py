"""Cameras over real loopback sockets: HTTP snapshots, an MJPEG-over-HTTP stream, an unreachable RTSP camera."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import SecretStr

from edge_orchestrator.cameras import HttpSnapshotCameraSettings, RtspCameraSettings
from edge_orchestrator.domain import utcnow
from edge_orchestrator.errors import CameraError, CameraTimeoutError
from tests.conftest import encode, free_port, solid

pytestmark = pytest.mark.anyio

JPEG = encode(solid((0, 0, 255), 40, 30), ".jpg")
PNG = encode(solid((0, 255, 0), 24, 16), ".png")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class FakeCameraServer:
    """A camera's web server on 127.0.0.1: snapshots, failures, and a bounded MJPEG stream."""

    base: str
    stop: threading.Event
    authorizations: list[str | None] = field(default_factory=list)


@pytest.fixture
def camera_server() -> Iterator[FakeCameraServer]:
    stop = threading.Event()
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            if self.path == "/snap.jpg":
                self.reply(200, "image/jpeg", JPEG)
            elif self.path == "/snap.png":
                self.reply(200, "image/png", PNG)
            elif self.path == "/error":
                self.reply(500, "text/plain", b"sensor failure")
            elif self.path == "/html":
                self.reply(200, "text/html", b"<html>login</html>")
            elif self.path == "/slow":
                stop.wait(1.0)
                self.reply(200, "image/jpeg", JPEG)
            elif self.path == "/mjpeg":
                self.mjpeg()
            else:
                self.reply(404, "text/plain", b"no such page")

        def mjpeg(self) -> None:
            # At most 10 s of 20 fps, ending early when the client leaves or the test ends.
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for i in range(200):
                    if stop.is_set():
                        return
                    jpeg = encode(np.full((48, 64, 3), (i * 5) % 250, np.uint8), ".jpg")
                    part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                    self.wfile.write(part + jpeg + b"\r\n")
                    self.wfile.flush()
                    stop.wait(0.05)
            except OSError:
                return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield FakeCameraServer(f"http://127.0.0.1:{server.server_address[1]}", stop, seen)
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def snapshot(url: str, **extra: object) -> HttpSnapshotCameraSettings:
    return HttpSnapshotCameraSettings.model_validate({"type": "http", "url": url, **extra})


async def test_http_snapshot_returns_the_jpeg_as_sent(camera_server: FakeCameraServer) -> None:
    camera = snapshot(f"{camera_server.base}/snap.jpg").build("cam", Path())
    await camera.open()
    before = utcnow()
    frame = await camera.capture(not_before=before)
    await camera.close()
    await camera.close()

    assert frame.jpeg == JPEG and (frame.width, frame.height) == (40, 30)
    assert frame.captured_at >= before
    assert camera.status().frames == 1 and camera.status().errors == 0


async def test_http_snapshot_re_encodes_png(camera_server: FakeCameraServer) -> None:
    camera = snapshot(f"{camera_server.base}/snap.png").build("cam", Path())
    await camera.open()
    frame = await camera.capture()
    await camera.close()

    assert frame.jpeg.startswith(b"\xff\xd8\xff") and (frame.width, frame.height) == (24, 16)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/error", r"'cam' answered HTTP 500"),
        ("/missing", r"'cam' answered HTTP 404"),
        ("/html", r"'cam' did not send an image .*text/html"),
        ("/mjpeg", r"'cam' sends a video stream"),
    ],
)
async def test_http_snapshot_failures_are_camera_errors(
    camera_server: FakeCameraServer, path: str, message: str
) -> None:
    camera = snapshot(f"{camera_server.base}{path}").build("cam", Path())
    await camera.open()
    try:
        with pytest.raises(CameraError, match=message):
            await camera.capture()
    finally:
        await camera.close()
    status = camera.status()
    assert status.errors == 1 and not status.connected


async def test_http_snapshot_timeout(camera_server: FakeCameraServer) -> None:
    camera = snapshot(f"{camera_server.base}/slow", timeout_s=0.2).build("cam", Path())
    await camera.open()
    start = time.monotonic()
    try:
        with pytest.raises(CameraTimeoutError, match=r"'cam' did not answer within 0\.2 s"):
            await camera.capture()
    finally:
        await camera.close()
    assert time.monotonic() - start < 1.0


async def test_http_snapshot_unreachable_camera() -> None:
    camera = snapshot(f"http://127.0.0.1:{free_port()}/snap.jpg").build("cam", Path())
    await camera.open()
    try:
        with pytest.raises(CameraError, match="'cam' cannot be reached"):
            await camera.capture()
    finally:
        await camera.close()


async def test_http_snapshot_sends_basic_auth_and_keeps_the_password_out_of_status(
    camera_server: FakeCameraServer,
) -> None:
    settings = snapshot(f"{camera_server.base}/error", username="operator", password=SecretStr("s3cret"))
    camera = settings.build("cam", Path())
    await camera.open()
    with pytest.raises(CameraError) as raised:
        await camera.capture()
    await camera.close()

    expected = "Basic " + base64.b64encode(b"operator:s3cret").decode()
    assert camera_server.authorizations == [expected]
    assert "s3cret" not in raised.value.detail
    assert "s3cret" not in repr(settings) and "s3cret" not in camera.status().model_dump_json()


async def test_mjpeg_over_http_through_the_stream_reader(camera_server: FakeCameraServer) -> None:
    probe = cv2.VideoCapture(f"{camera_server.base}/mjpeg", cv2.CAP_FFMPEG)
    readable = probe.isOpened() and probe.read()[0]
    probe.release()
    if not readable:
        pytest.skip("this OpenCV build's FFmpeg cannot read MJPEG over HTTP")

    camera = RtspCameraSettings(type="rtsp", url=f"{camera_server.base}/mjpeg").build("cam", Path())
    await camera.open()
    try:
        first = await asyncio.wait_for(camera.capture(), 5)
        trigger = utcnow()
        fresh = await asyncio.wait_for(camera.capture(not_before=trigger), 5)
    finally:
        await camera.close()

    assert (first.width, first.height) == (64, 48)
    assert fresh.captured_at >= trigger
    assert camera.status().frames >= 2


async def test_unreachable_rtsp_camera_is_reported_without_its_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_orchestrator")
    url = f"rtsp://admin:s3cret@127.0.0.1:{free_port()}/stream1"
    camera = RtspCameraSettings(type="rtsp", url=url, timeout_s=1).build("cam", Path())

    await camera.open()  # never raises for an absent device
    try:
        for _ in range(100):
            if camera.status().errors:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(CameraError, match="'cam' is not connected") as raised:
            await camera.capture()
    finally:
        await camera.close()

    status = camera.status()
    assert not status.connected
    assert "s3cret" not in raised.value.detail and "rtsp://***@127.0.0.1" in raised.value.detail
    assert "s3cret" not in status.model_dump_json() and "s3cret" not in repr(camera)
    assert caplog.records and "s3cret" not in caplog.text
