"""The conveyor seen by each camera: rubber belt, rails, moving seams, dust and harmless scuffs.

Clutter here is deliberately low-contrast, flat and colourless, so that it never looks like a
foreign object: a detector must learn that scuffs and dust are part of a good line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from hub.duckline.paint import FloatImage, PixelBox

Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Stage:
    """The empty scene: the canvas and the belt area where the duck and anything dropped may lie."""

    canvas: FloatImage
    floor: PixelBox  # top: the belt between the rails; side: the visible strip of belt surface


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cell: int) -> Floats:
    """Unit-ish noise varying over `cell` pixels: random values on a coarse grid, upscaled."""
    coarse = rng.standard_normal((height // cell + 2, width // cell + 2)).astype(np.float32)
    return cast(Floats, cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC))


def _colourise(brightness: Floats, colour: Floats) -> FloatImage:
    """H x W brightness times a BGR colour (OpenCV: several times faster than NumPy broadcasting)."""
    grey = cv2.cvtColor(brightness, cv2.COLOR_GRAY2BGR)
    return cast(FloatImage, cv2.transform(grey, np.diag(colour).astype(np.float32), dst=grey))


def _row_profile(rng: np.random.Generator, n: int, sigma: float) -> Floats:
    """1-D noise smoothed over `sigma` rows: belt striations, brushed metal."""
    raw = rng.standard_normal((n, 1)).astype(np.float32)
    return cast(Floats, cv2.GaussianBlur(raw, (1, 0), sigmaX=0.1, sigmaY=sigma)[:, 0])


def _belt_colour(rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Dark grey to dark green rubber (BGR)."""
    grey = rng.uniform(46, 68)
    green = rng.uniform(0.0, 0.14)
    return np.array([grey * (1 - green * 0.6), grey * (1 + green * 0.5), grey * (1 - green)], np.float32)


def _belt_texture(rng: np.random.Generator, width: int, height: int, squash: float) -> Floats:
    """Relative brightness of the rubber: mottling, striations along the travel, scuffs."""
    quarter = (max(width // 4, 2), max(height // 4, 2))
    low = _smooth_noise(rng, quarter[0], quarter[1], 12) * np.float32(0.05)
    # Scuffs: soft, low-contrast, grey streaks, drawn at quarter resolution so they come out blurred.
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.uniform(0, quarter[0]), rng.uniform(0, quarter[1])
        axes = (int(rng.uniform(4, 14)), max(int(rng.uniform(1, 3) * squash), 1))
        angle = rng.uniform(-25, 25)
        shade = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.10))
        cv2.ellipse(low, (int(cx), int(cy)), axes, angle, 0, 360, shade, -1)
    texture = cast(Floats, cv2.resize(low, (width, height), interpolation=cv2.INTER_LINEAR))
    texture += (_row_profile(rng, height, 1.2 * squash + 0.3) * np.float32(0.03) + np.float32(1.0))[:, None]
    return texture


def _seams_and_specks(
    rng: np.random.Generator, canvas: FloatImage, colour: Floats, area: PixelBox, slant: float, unit: float
) -> None:
    """Belt joints (they move with the belt) and light dust specks, drawn onto the belt area."""
    x0, y0, x1, y1 = area
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        x = rng.uniform(x0, x1)
        lean = rng.uniform(-0.12, 0.12) * (y1 - y0) + slant
        top, bottom = (int(x), y0), (int(x + lean), y1)
        thick = max(round(rng.uniform(2, 4) * unit), 1)
        cv2.line(canvas, top, bottom, (colour * 0.62).tolist(), thick)
        edge = max(round(thick * 0.8), 1)
        cv2.line(
            canvas, (top[0] + thick, top[1]), (bottom[0] + thick, bottom[1]), (colour * 1.18).tolist(), edge
        )
    count = int(rng.integers(30, 140))
    xs = rng.uniform(x0, x1, count).astype(int)
    ys = rng.uniform(y0, y1, count).astype(int)
    levels = rng.uniform(1.3, 2.2, count)
    levels[rng.random(count) < 0.2] = 0.7  # a few dark grains among the light dust
    radii = (rng.random(count) < 0.25).astype(int) + 1
    for x, y, level, r in zip(xs, ys, levels, radii, strict=True):
        cv2.circle(canvas, (int(x), int(y)), max(int(r * unit), 1) - 1, (colour * level).tolist(), -1)


def _metal_band(rng: np.random.Generator, rows: int, width: int, flip: bool) -> FloatImage:
    """A horizontal steel rail: bright lip, darker face, brushed along its length."""
    t = np.linspace(0.0, 1.0, max(rows, 1), dtype=np.float32)
    if flip:
        t = t[::-1]
    base = rng.uniform(120, 165)
    profile = base * (0.72 + 0.45 * np.exp(-(((t - 0.25) / 0.18) ** 2)) - 0.15 * t)
    profile = profile * (1 + 0.04 * _row_profile(rng, t.size, 0.6))
    tint = np.array([1.03, 1.0, 0.96], np.float32)
    band = np.empty((t.size, width, 3), np.float32)
    band[:] = (profile[:, None] * tint)[:, None, :]
    return band


def top_stage(rng: np.random.Generator, width: int, height: int) -> Stage:
    """Looking down at the belt: rails along the top and bottom edges, travel from left to right."""
    unit = height / 480
    rail_top = int(rng.uniform(24, 44) * unit)
    rail_bottom = int(rng.uniform(24, 44) * unit)
    colour = _belt_colour(rng)
    texture = _belt_texture(rng, width, height, 1.0)
    canvas = _colourise(texture, colour)
    _seams_and_specks(rng, canvas, colour, (0, rail_top, width - 1, height - rail_bottom), 0.0, unit)
    canvas[:rail_top] = _metal_band(rng, rail_top, width, flip=True)
    canvas[height - rail_bottom :] = _metal_band(rng, rail_bottom, width, flip=False)
    # The rail lips shade the belt edge.
    lip = max(int(5 * unit), 2)
    fade = np.linspace(0.45, 1.0, lip, dtype=np.float32)[:, None, None]
    canvas[rail_top : rail_top + lip] *= fade
    canvas[height - rail_bottom - lip : height - rail_bottom] *= fade[::-1]
    margin = lip + 2
    return Stage(canvas, (0, rail_top + margin, width - 1, height - rail_bottom - margin))


def side_stage(rng: np.random.Generator, width: int, height: int) -> Stage:
    """Looking across the belt: guard panel behind, far rail, the belt's top surface, front frame."""
    unit = height / 480
    far = int(rng.uniform(0.50, 0.58) * height)
    near = int(rng.uniform(0.84, 0.90) * height)
    rail = int(rng.uniform(12, 22) * unit)
    panels = ((118.0, 108.0, 98.0), (150.0, 150.0, 146.0), (112.0, 126.0, 114.0), (92.0, 92.0, 96.0))
    panel = np.array(panels[int(rng.integers(len(panels)))], np.float32) * np.float32(rng.uniform(0.85, 1.1))
    canvas = np.empty((height, width, 3), np.float32)
    wall = np.linspace(1.12, 0.88, far, dtype=np.float32)[:, None] + _smooth_noise(
        rng, width, far, 96
    ) * np.float32(0.02)
    canvas[:far] = _colourise(wall, panel)
    joint = int(rng.uniform(0.15, 0.8) * (far - rail))
    canvas[joint : joint + max(int(2 * unit), 1), :] *= np.float32(0.7)
    canvas[far - rail : far] = _metal_band(rng, rail, width, flip=False)

    colour = _belt_colour(rng)
    strip = near - far
    texture = _belt_texture(rng, width, strip, 0.4)
    depth = np.linspace(0.85, 1.08, strip, dtype=np.float32)[:, None]  # the near belt catches more light
    belt = _colourise(texture * depth, colour)
    slant = math.tan(math.radians(rng.uniform(-20, 20))) * strip
    _seams_and_specks(rng, belt, colour, (0, 0, width - 1, strip - 1), slant, unit * 0.7)
    canvas[far:near] = belt
    frame = np.array([rng.uniform(60, 90)] * 3, np.float32) * np.array([1.08, 1.0, 0.95], np.float32)
    canvas[near:] = frame
    lip = max(int(3 * unit), 1)
    canvas[near : near + lip] = frame * np.float32(1.9)
    return Stage(canvas, (0, far, width - 1, near - 1))
