"""Painting shaded, anti-aliased surfaces and soft shadows onto a float canvas.

Every visible thing (duck parts, foreign objects) is a `Surface`: an outline polygon in image pixels,
a flat albedo with painted decorations (eyes, stains), and the normals of an ellipsoid for shading.
The ellipsoid gives plastic its rounded look for a handful of array operations, far cheaper than
blurring height maps, which matters at 6000 frames a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

FloatImage = npt.NDArray[np.float32]
Points = npt.NDArray[np.float64]  # N x 2, image pixels (x, y)
Colour = tuple[float, float, float]  # BGR, 0..255
PixelBox = tuple[int, int, int, int]  # x_min, y_min, x_max, y_max, inclusive pixel indices

_SHIFT = 4  # cv2 sub-pixel bits: outlines keep 1/16 px precision, so small parts don't jitter
_SCALE = float(1 << _SHIFT)


@dataclass(frozen=True)
class Light:
    """One directional light (towards the light, camera looks down -z) plus ambient and gloss."""

    direction: tuple[float, float, float]
    ambient: float = 0.38
    diffuse: float = 0.72
    colour: Colour = (255.0, 255.0, 255.0)

    @property
    def half_vector(self) -> tuple[float, float, float]:
        """Blinn-Phong half vector between the light and the viewer (0, 0, 1)."""
        x, y, z = self.direction
        z += 1.0
        norm = math.sqrt(x * x + y * y + z * z)
        return x / norm, y / norm, z / norm


@dataclass(frozen=True)
class Ellipsoid:
    """Shading shape in image pixels: centre, semi-axes, rotation (radians) and depth (pixels)."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float
    depth: float


@dataclass(frozen=True)
class Decoration:
    """Paint applied to a surface's albedo: filled polygons, or a polyline when `thickness` > 0."""

    polygons: tuple[Points, ...]
    colour: Colour
    gloss: float = 1.0  # relative specular strength where painted (matte paint < 1)
    thickness: float = 0.0
    closed: bool = False


@dataclass(frozen=True)
class Surface:
    """A painted, shaded region of the image."""

    outline: Points
    shape: Ellipsoid
    colour: Colour
    gloss: float = 0.55
    shininess_doublings: int = 5  # specular exponent 2**n; squaring is cheaper than np.power
    cutouts: tuple[Points, ...] = ()
    decorations: tuple[Decoration, ...] = field(default_factory=tuple)


def ellipse_points(cx: float, cy: float, a: float, b: float, angle_deg: float = 0.0, n: int = 48) -> Points:
    """Polygon approximating an ellipse (local units or pixels alike)."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    x, y = a * np.cos(t), b * np.sin(t)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def blob_points(
    rng: np.random.Generator, cx: float, cy: float, radius: float, n: int = 36, roughness: float = 0.04
) -> Points:
    """Irregular closed blob: a circle whose radius wobbles with random harmonics, plus per-vertex jitter."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    r = np.ones(n)
    for k in (2, 3, 5, 7):
        r += rng.uniform(0.03, 0.16) * np.cos(k * t + rng.uniform(0, 2 * math.pi))
    r *= radius * rng.uniform(1.0 - roughness, 1.0 + roughness, n)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def bounds(points: Points, pad: float, width: int, height: int) -> PixelBox | None:
    """Integer pixel box around points plus `pad`, clipped to the canvas; None if entirely outside."""
    lo, hi = points.min(axis=0) - pad, points.max(axis=0) + pad
    x0, y0 = max(math.floor(lo[0]), 0), max(math.floor(lo[1]), 0)
    x1, y1 = min(math.ceil(hi[0]), width - 1), min(math.ceil(hi[1]), height - 1)
    return None if x1 < x0 or y1 < y0 else (x0, y0, x1, y1)


def fill_mask(
    shape: tuple[int, int], polygons: tuple[Points, ...], origin: tuple[int, int]
) -> npt.NDArray[np.uint8]:
    """Anti-aliased 0..255 mask of filled polygons on a canvas of `shape` whose (0, 0) is `origin`."""
    mask = np.zeros(shape, np.uint8)
    offset = np.array(origin, np.float64)
    pts = [np.round((p - offset) * _SCALE).astype(np.int32) for p in polygons]
    cv2.fillPoly(mask, pts, 255, cv2.LINE_AA, _SHIFT)
    return mask


def _decoration_alpha(deco: Decoration, shape: tuple[int, int], origin: tuple[int, int]) -> FloatImage:
    if deco.thickness <= 0:
        mask = fill_mask(shape, deco.polygons, origin)
    else:
        mask = np.zeros(shape, np.uint8)
        offset = np.array(origin, np.float64)
        pts = [np.round((p - offset) * _SCALE).astype(np.int32) for p in deco.polygons]
        cv2.polylines(mask, pts, deco.closed, 255, max(1, round(deco.thickness)), cv2.LINE_AA, _SHIFT)
    return mask.astype(np.float32) * np.float32(1 / 255)


def _shading(s: Surface, light: Light, box: PixelBox) -> tuple[FloatImage, FloatImage]:
    """Diffuse factor and specular intensity of the surface's ellipsoid over `box`."""
    e = s.shape
    x0, y0, x1, y1 = box
    c, si = math.cos(e.angle), math.sin(e.angle)
    dx = (np.arange(x0, x1 + 1, dtype=np.float32) - np.float32(e.cx))[None, :]
    dy = (np.arange(y0, y1 + 1, dtype=np.float32) - np.float32(e.cy))[:, None]
    # Normalised ellipse coordinates in the ellipsoid's own frame.
    u = (dx * np.float32(c) + dy * np.float32(si)) * np.float32(1 / e.a)
    v = (dy * np.float32(c) - dx * np.float32(si)) * np.float32(1 / e.b)
    w = np.sqrt(np.maximum(np.float32(1) - u * u - v * v, np.float32(0.0)))
    # Gradient of the ellipsoid, scaled by depth: (u * d/a, v * d/b, w).
    nu = u * np.float32(e.depth / e.a)
    nv = v * np.float32(e.depth / e.b)
    inv_norm = np.float32(1) / np.sqrt(nu * nu + nv * nv + w * w + np.float32(1e-6))

    def facing(vec: tuple[float, float, float]) -> FloatImage:
        # Rotate the vector into the ellipsoid's frame instead of rotating every normal out of it.
        lu, lv = vec[0] * c + vec[1] * si, vec[1] * c - vec[0] * si
        dot = (nu * np.float32(lu) + nv * np.float32(lv) + w * np.float32(vec[2])) * inv_norm
        return cast(FloatImage, np.maximum(dot, np.float32(0)))

    diffuse = np.float32(light.ambient) + np.float32(light.diffuse) * facing(light.direction)
    spec = facing(light.half_vector)
    for _ in range(s.shininess_doublings):
        spec = spec * spec
    return diffuse, spec


def paint_surface(canvas: FloatImage, s: Surface, light: Light) -> None:
    """Composite the shaded surface onto the canvas in place (anti-aliased edges)."""
    height, width = canvas.shape[:2]
    box = bounds(s.outline, 2.0, width, height)
    if box is None:
        return
    x0, y0, x1, y1 = box
    shape = (y1 - y0 + 1, x1 - x0 + 1)
    mask = fill_mask(shape, (s.outline,), (x0, y0))
    if s.cutouts:
        offset = np.array((x0, y0), np.float64)
        cuts = [np.round((p - offset) * _SCALE).astype(np.int32) for p in s.cutouts]
        cv2.fillPoly(mask, cuts, 0, cv2.LINE_AA, _SHIFT)
    alpha = mask.astype(np.float32) * np.float32(1 / 255)

    albedo = np.empty((*shape, 3), np.float32)
    albedo[:] = s.colour
    gloss: FloatImage | float = s.gloss
    for deco in s.decorations:
        a = _decoration_alpha(deco, shape, (x0, y0))
        albedo += (np.asarray(deco.colour, np.float32) - albedo) * a[..., None]
        if deco.gloss != 1.0:
            gloss = gloss * (np.float32(1) + np.float32(deco.gloss - 1.0) * a)

    diffuse, spec = _shading(s, light, box)
    shaded = albedo * diffuse[..., None] + (spec * gloss)[..., None] * np.asarray(light.colour, np.float32)
    region = canvas[y0 : y1 + 1, x0 : x1 + 1]
    region += (shaded - region) * alpha[..., None]


def cast_shadow(canvas: FloatImage, polygons: tuple[Points, ...], sigma: float, strength: float) -> None:
    """Darken the canvas under the polygons, softened by a Gaussian penumbra of `sigma` pixels.

    Wide penumbrae are blurred at reduced resolution and scaled back up: the result is just as
    smooth and an order of magnitude cheaper than a full-resolution blur with a huge kernel.
    """
    height, width = canvas.shape[:2]
    box = bounds(np.concatenate(polygons), 3.0 * sigma + 2.0, width, height)
    if box is None:
        return
    x0, y0, x1, y1 = box
    w, h = x1 - x0 + 1, y1 - y0 + 1
    step = max(1, int(sigma / 2.5))
    small = (max(h // step, 1), max(w // step, 1))
    scaled = tuple((p - np.array([x0, y0])) / step for p in polygons)
    mask = cv2.GaussianBlur(fill_mask(small, scaled, (0, 0)), (0, 0), sigma / step)
    if step > 1:
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR)
    shade = np.float32(1) - mask.astype(np.float32) * np.float32(strength / 255)
    region = canvas[y0 : y1 + 1, x0 : x1 + 1]
    region *= shade[..., None]


def union(a: PixelBox | None, b: PixelBox | None) -> PixelBox | None:
    """Smallest box holding both (None is the empty box)."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])
