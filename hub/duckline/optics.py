"""What the camera does to the scene: lighting drift, colour temperature, blur and sensor noise.

Also measures where a change to the scene shows in the final frame (`visible_change`). Every step
of `develop` except rounding, clipping and noise is linear, so pushing the *difference* of two scenes
through the same gains and blur kernels says exactly how far a defect bleeds into its surroundings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import TypeVar, cast

import cv2
import numpy as np
import numpy.typing as npt

from hub.duckline.paint import FloatImage, PixelBox

# Inverse normal CDF at byte midpoints: random bytes through this table are Gaussian noise for
# a tenth of the cost of drawing normals (which dominates a 640x480 frame otherwise).
_GAUSS_TABLE = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)], np.float32)
# A change counts as visible where it moves a pixel by more than this many grey levels. Rounding in
# `develop` adds at most ~2 levels, so anything differing by > 8 in the frame lies inside the box.
VISIBLE_LEVELS = 6.0

ImageT = TypeVar("ImageT", npt.NDArray[np.uint8], npt.NDArray[np.float32])


@dataclass(frozen=True)
class Optics:
    """One frame's camera and lighting conditions."""

    gain: float  # global brightness
    contrast: float
    gradient: tuple[float, float]  # relative brightness change across the frame (x, y), edge to edge
    vignette: float
    temperature: float  # -1 cool (bluish) .. +1 warm (reddish)
    sigma: float  # Gaussian blur (pixels): focus and optics
    motion: int  # horizontal box blur length (pixels, odd, 1 = none): the belt moves during exposure
    noise: float  # sensor noise standard deviation (grey levels)

    @property
    def kernel(self) -> int:
        """Gaussian kernel size, fixed here so the frame and the measurement blur identically."""
        return round(self.sigma * 6 + 1) | 1

    @property
    def reach(self) -> tuple[int, int]:
        """How far (x, y pixels) the blur carries anything at all."""
        radius = self.kernel // 2 + 1
        return radius + self.motion // 2, radius


def sample_optics(rng: np.random.Generator, unit: float) -> Optics:
    """Plausible conditions on a factory line (unit: frame height / 480)."""
    angle = rng.uniform(0, 2 * math.pi)
    strength = rng.uniform(0.0, 0.16)
    motion = int(rng.choice([3, 5, 7])) if rng.random() < 0.3 else 1
    return Optics(
        gain=rng.uniform(0.85, 1.18),
        contrast=rng.uniform(0.88, 1.12),
        gradient=(strength * math.cos(angle), strength * math.sin(angle)),
        vignette=rng.uniform(0.0, 0.18),
        temperature=rng.uniform(-1.0, 1.0),
        sigma=rng.uniform(0.35, 1.15) * unit,
        motion=motion if unit >= 0.75 else 1,
        noise=rng.uniform(1.2, 3.5),
    )


def _falloff(optics: Optics, size: tuple[int, int], box: PixelBox) -> FloatImage:
    """Brightness gradient times vignetting over `box` of a frame of `size` (width, height)."""
    width, height = size
    x0, y0, x1, y1 = box
    gx, gy = optics.gradient
    xs = np.linspace(-1.0, 1.0, width, dtype=np.float32)[x0 : x1 + 1]
    ys = np.linspace(-1.0, 1.0, height, dtype=np.float32)[y0 : y1 + 1]
    ramp = np.float32(1.0) + (np.float32(gx / 2) * xs)[None, :] + (np.float32(gy / 2) * ys)[:, None]
    fall = np.float32(1.0) - np.float32(optics.vignette / 2) * ((xs * xs)[None, :] + (ys * ys)[:, None])
    return ramp * fall  # type: ignore[no-any-return]


def _tone(optics: Optics) -> npt.NDArray[np.float32]:
    """Colour temperature, gain and contrast as one 3x4 affine map of the BGR channels."""
    warm = 0.07 * optics.temperature
    scale = optics.gain * optics.contrast
    offset = (1.0 - optics.contrast) * 110.0
    return np.array(
        [[(1.0 - warm) * scale, 0, 0, offset], [0, scale, 0, offset], [0, 0, (1.0 + warm) * scale, offset]],
        np.float32,
    )


def _blur(image: ImageT, optics: Optics) -> ImageT:
    k = optics.kernel
    blurred = cv2.GaussianBlur(image, (k, k), optics.sigma)
    if optics.motion > 1:
        blurred = cv2.blur(blurred, (optics.motion, 1))
    return cast(ImageT, blurred)


def develop(canvas: FloatImage, optics: Optics, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Turn the scene's radiance into the camera's 8-bit BGR frame (overwrites the canvas).

    OpenCV calls rather than NumPy broadcasting, and few fresh whole-frame arrays: both are several
    times slower than the arithmetic itself (broadcasting loops, page faults on new memory).
    """
    height, width = canvas.shape[:2]
    falloff = _falloff(optics, (width, height), (0, 0, width - 1, height - 1))
    toned = cv2.transform(canvas, _tone(optics), dst=canvas)  # in place: the canvas is spent anyway
    exposed = cv2.multiply(toned, cv2.cvtColor(falloff, cv2.COLOR_GRAY2BGR), dtype=cv2.CV_8U)  # saturating
    image = _blur(cast(npt.NDArray[np.uint8], exposed), optics)
    raw = np.frombuffer(rng.bytes(image.size), np.uint8).reshape(image.shape)
    noise = cv2.LUT(raw, np.round(_GAUSS_TABLE * np.float32(optics.noise)).astype(np.int16))
    return cast(npt.NDArray[np.uint8], cv2.add(image, noise, dtype=cv2.CV_8U))


def visible_change(
    before: FloatImage,
    after: FloatImage,
    origin: tuple[int, int],
    optics: Optics,
    size: tuple[int, int],
    threshold: float = VISIBLE_LEVELS,
) -> PixelBox | None:
    """Pixel box where the frame developed from `after` differs visibly from the one from `before`.

    `before` and `after` are patches at `origin` of frames of `size` (width, height); they must hold
    every change plus the blur's `reach` around it (or stop at the frame's edge, as the frame does).
    """
    h, w = before.shape[:2]
    x0, y0 = origin
    diff = after - before
    diff *= _falloff(optics, size, (x0, y0, x0 + w - 1, y0 + h - 1))[..., None]
    diff *= _tone(optics)[:, :3].diagonal()
    seen = (np.abs(_blur(diff, optics)) > threshold).reshape(h, w * 3)  # rows of B, G, R triplets
    rows = np.flatnonzero(seen.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(seen.any(axis=0).reshape(w, 3).any(axis=1))
    return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]), y0 + int(rows[-1])


def grow(box: PixelBox, optics: Optics, size: tuple[int, int]) -> PixelBox:
    """`box` grown by the blur's reach, clipped to the frame: the patch `visible_change` needs."""
    rx, ry = optics.reach
    width, height = size
    return max(box[0] - rx, 0), max(box[1] - ry, 0), min(box[2] + rx, width - 1), min(box[3] + ry, height - 1)
