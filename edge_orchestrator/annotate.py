"""Draw an item's boxes, labels and decision onto a camera's JPEG (for operators; the original stays intact)."""

from __future__ import annotations

import cv2
import numpy as np

from edge_orchestrator.domain import CameraResult, Decision
from edge_orchestrator.errors import ImageNotFoundError

_COLOURS = {Decision.OK: (60, 180, 75), Decision.KO: (40, 40, 230), Decision.NO_DECISION: (0, 165, 255)}


def annotate(jpeg: bytes, camera: CameraResult) -> bytes:
    """Blocking (OpenCV): call through asyncio.to_thread."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageNotFoundError(f"the stored image of camera {camera.camera_id} cannot be decoded")
    height, width = image.shape[:2]
    thickness = max(1, round(min(width, height) / 240))
    scale = max(0.4, min(width, height) / 800)
    prediction = camera.prediction
    colour = _COLOURS[camera.decision]
    if prediction is not None:
        for det in prediction.detections:
            x0, y0, x1, y1 = (
                round(v * s) for v, s in zip(det.box, (width, height, width, height), strict=True)
            )
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, thickness)
            _label(image, f"{det.label} {det.score:.2f}", (x0, max(0, y0)), colour, scale, thickness)
    title = camera.decision.value
    if prediction is not None and prediction.task == "classification" and prediction.label is not None:
        title += f"  {prediction.label} {prediction.score or 0:.2f}"
    _label(image, f"{camera.camera_id}: {title}", (0, 0), colour, scale * 1.2, thickness, below=True)
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ImageNotFoundError(f"the annotated image of camera {camera.camera_id} cannot be encoded")
    return buffer.tobytes()


def _label(
    image: np.ndarray,
    text: str,
    at: tuple[int, int],
    colour: tuple[int, int, int],
    scale: float,
    thickness: int,
    *,
    below: bool = False,
) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x, y = at
    top = y if below else max(0, y - th - base - 4)
    cv2.rectangle(image, (x, top), (x + tw + 6, top + th + base + 4), colour, -1)
    cv2.putText(
        image,
        text,
        (x + 3, top + th + 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        thickness,
        cv2.LINE_AA,
    )
