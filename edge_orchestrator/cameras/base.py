"""What every camera kind shares: the Camera protocol, its status, health counters, backoff and JPEG helpers."""

from __future__ import annotations

import re
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import numpy as np

from pydantic import BaseModel, ConfigDict, Field

from edge_orchestrator.domain import Frame

JPEG_MAGIC = b"\xff\xd8\xff"
# Start-of-frame markers carry the image size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SECRET_QUERY = re.compile(r"(?i)((?:pass(?:word)?|pwd|token|key|secret|auth)[^=&]*=)[^&]*")


class CameraStatus(BaseModel):
    """What a camera reports about itself (shown on the status page and in health checks)."""

    model_config = ConfigDict(frozen=True)

    connected: bool = Field(description="True while the camera can deliver frames.")
    detail: str | None = Field(
        default=None, description="Why it is not connected, or what it is doing, as a sentence."
    )
    last_frame_at: datetime | None = Field(default=None, description="When the last frame was received.")
    frames: int = Field(default=0, description="Frames received from the source since the camera opened.")
    errors: int = Field(default=0, description="Failed opens, reads and captures since the camera opened.")
    reconnects: int = Field(
        default=0, description="Attempts to reopen the source after the first one (continuous cameras)."
    )


class Camera(Protocol):
    """A source of frames for one camera id; the pipeline opens it, captures per item, and closes it."""

    camera_id: str

    async def open(self) -> None: ...

    async def capture(self, not_before: datetime | None = None) -> Frame: ...

    async def close(self) -> None: ...

    def status(self) -> CameraStatus: ...


class Health:
    """The counters behind CameraStatus; thread-safe because reader threads and the event loop both update them."""

    def __init__(self, detail: str | None = "not opened yet") -> None:
        self._lock = threading.Lock()
        self._connected = False
        self._detail = detail
        self._last_frame_at: datetime | None = None
        self._frames = 0
        self._errors = 0
        self._reconnects = 0

    def frame(self, at: datetime) -> None:
        with self._lock:
            self._connected, self._detail = True, None
            self._last_frame_at = at
            self._frames += 1

    def error(self, detail: str, *, connected: bool = False) -> None:
        with self._lock:
            self._connected, self._detail = connected, detail
            self._errors += 1

    def state(self, connected: bool, detail: str | None = None) -> None:
        with self._lock:
            self._connected, self._detail = connected, detail

    def reconnect(self) -> None:
        with self._lock:
            self._reconnects += 1

    @property
    def detail(self) -> str | None:
        with self._lock:
            return self._detail

    def snapshot(self) -> CameraStatus:
        with self._lock:
            return CameraStatus(
                connected=self._connected,
                detail=self._detail,
                last_frame_at=self._last_frame_at,
                frames=self._frames,
                errors=self._errors,
                reconnects=self._reconnects,
            )


class Backoff:
    """Exponential delays between reconnection attempts: initial, doubling, capped."""

    def __init__(self, initial_s: float = 0.5, max_s: float = 30.0) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self._delay = initial_s

    def next(self) -> float:
        delay = self._delay
        self._delay = min(self._delay * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._delay = self.initial_s


def mask_url(url: str) -> str:
    """The URL with its user info and secret-looking query values replaced by *** (safe for logs and status)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc, query=_SECRET_QUERY.sub(r"\1***", parts.query)))


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a JPEG's frame header without decoding it; None when it is not a readable JPEG."""
    if not data.startswith(JPEG_MAGIC):
        return None
    i, end = 2, len(data)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        if marker in _SOF_MARKERS:
            if i + 9 > end:
                return None
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return (width, height) if width and height else None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def encode_jpeg(image: np.ndarray[Any, Any], quality: int) -> bytes:
    """JPEG-encode a BGR (or grey) image; CPU-bound, so callers run it off the event loop."""
    import cv2

    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode the image as JPEG")
    return bytes(buffer.tobytes())


def to_jpeg(data: bytes, quality: int) -> tuple[bytes, int, int]:
    """(jpeg, width, height) for encoded image bytes: JPEG kept as-is, anything OpenCV decodes re-encoded.

    Raises ValueError when the bytes are not a decodable image. CPU-bound for non-JPEG input."""
    import cv2
    import numpy as np

    size = jpeg_size(data)
    if size is not None:
        return data, size[0], size[1]
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("the data is not a decodable image")
    height, width = image.shape[:2]
    return encode_jpeg(image, quality), int(width), int(height)
