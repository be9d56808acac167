"""The HTTP snapshot camera: one GET per capture on a camera's still-image URL (IP cameras, ESP32-CAM, ...)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from edge_orchestrator.cameras.base import CameraStatus, Health, jpeg_size, mask_url, to_jpeg
from edge_orchestrator.domain import Frame, utcnow
from edge_orchestrator.errors import CameraError, CameraTimeoutError

# A snapshot is a few MB at most; a larger answer is a misconfigured URL (a video stream, a download).
MAX_SNAPSHOT_BYTES = 32 * 1024 * 1024


class HttpSnapshotCameraSettings(BaseModel):
    """A camera that serves one still image per HTTP GET."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["http"] = Field(description="Fetch one still image per capture over HTTP.")
    url: str = Field(
        pattern=r"^https?://",
        description="The snapshot URL (http:// or https://), e.g. http://10.0.0.5/snapshot.jpg.",
    )
    username: str | None = Field(default=None, description="User for HTTP basic authentication.")
    password: SecretStr | None = Field(default=None, description="Password for HTTP basic authentication.")
    timeout_s: float = Field(default=2.0, gt=0, le=60, description="Longest wait for one snapshot.")
    verify_tls: bool = Field(
        default=True,
        description="Check the camera's TLS certificate (turn off only for self-signed cameras).",
    )
    jpeg_quality: int = Field(
        default=90, ge=1, le=100, description="JPEG quality when a PNG answer is re-encoded."
    )

    def build(self, camera_id: str, base_dir: Path) -> HttpSnapshotCamera:
        return HttpSnapshotCamera(camera_id, self)


class HttpSnapshotCamera:
    """Each capture is a fresh GET, so the image is always taken after not_before (the request follows it)."""

    def __init__(self, camera_id: str, settings: HttpSnapshotCameraSettings) -> None:
        self.camera_id = camera_id
        self.settings = settings
        self.source = mask_url(settings.url)
        self._health = Health()
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"HttpSnapshotCamera({self.camera_id!r}, {self.source!r})"

    async def open(self) -> None:
        if self._client is not None:
            return
        s = self.settings
        auth = None
        if s.username is not None:
            auth = httpx.BasicAuth(s.username, s.password.get_secret_value() if s.password else "")
        self._client = httpx.AsyncClient(
            auth=auth, timeout=s.timeout_s, verify=s.verify_tls, follow_redirects=True
        )
        self._health.state(False, "no snapshot taken yet")

    async def capture(self, not_before: datetime | None = None) -> Frame:
        if self._client is None:
            raise CameraError(f"camera {self.camera_id!r} is not open")
        try:
            jpeg, width, height = await self._fetch(self._client)
        except CameraError as exc:
            self._health.error(exc.detail)
            raise
        at = utcnow()
        self._health.frame(at)
        return Frame(self.camera_id, jpeg, width, height, at)

    async def _fetch(self, client: httpx.AsyncClient) -> tuple[bytes, int, int]:
        name, url = self.camera_id, self.settings.url
        try:
            async with client.stream("GET", url) as response:
                if not response.is_success:
                    raise CameraError(
                        f"camera {name!r} answered HTTP {response.status_code} at {self.source}"
                    )
                content_type = response.headers.get("content-type", "")
                if content_type.startswith("multipart/"):
                    raise CameraError(
                        f"camera {name!r} sends a video stream at {self.source}, not a snapshot "
                        "(use the rtsp camera type for MJPEG streams)"
                    )
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_SNAPSHOT_BYTES:
                        raise CameraError(
                            f"camera {name!r} sent more than {MAX_SNAPSHOT_BYTES} bytes at {self.source}"
                        )
        except httpx.TimeoutException as exc:
            raise CameraTimeoutError(
                f"camera {name!r} did not answer within {self.settings.timeout_s:g} s at {self.source}"
            ) from exc
        except httpx.HTTPError as exc:
            # httpx messages can quote the URL: mask it.
            reason = str(exc).replace(url, self.source) or type(exc).__name__
            raise CameraError(f"camera {name!r} cannot be reached at {self.source}: {reason}") from exc
        body = bytes(data)
        size = jpeg_size(body)
        if size is not None:  # the common case, kept off the thread pool: bytes as sent
            return body, size[0], size[1]
        try:
            return await asyncio.to_thread(to_jpeg, body, self.settings.jpeg_quality)
        except ValueError as exc:
            raise CameraError(
                f"camera {name!r} did not send an image at {self.source} "
                f"({content_type or 'no content type'}, {len(body)} bytes)"
            ) from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
            self._health.state(False, "closed")

    def status(self) -> CameraStatus:
        return self._health.snapshot()
