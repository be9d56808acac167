"""Cameras: the Camera protocol and its status, and one settings class plus implementation per camera kind.

OpenCV and NumPy are imported inside the functions that read frames: station files import these settings
classes, and the dashboard reads station files without either installed."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from edge_orchestrator.cameras.base import Camera, CameraStatus, mask_url
from edge_orchestrator.cameras.picamera import PiCamera, PiCameraSettings
from edge_orchestrator.cameras.replay import ReplayCamera, ReplayCameraSettings
from edge_orchestrator.cameras.snapshot import HttpSnapshotCamera, HttpSnapshotCameraSettings
from edge_orchestrator.cameras.stream import RtspCameraSettings, StreamCamera, UsbCameraSettings

CameraSettings = Annotated[
    ReplayCameraSettings
    | UsbCameraSettings
    | PiCameraSettings
    | RtspCameraSettings
    | HttpSnapshotCameraSettings,
    Field(discriminator="type"),
]

__all__ = [
    "Camera",
    "CameraSettings",
    "CameraStatus",
    "HttpSnapshotCamera",
    "HttpSnapshotCameraSettings",
    "PiCamera",
    "PiCameraSettings",
    "ReplayCamera",
    "ReplayCameraSettings",
    "RtspCameraSettings",
    "StreamCamera",
    "UsbCameraSettings",
    "mask_url",
]
