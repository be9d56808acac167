"""Foreign objects that fall onto the belt: nuts, bolts, screws, bottle caps, bits of wire.

Unlike belt clutter they are saturated or metallic, shaded and cast a shadow, so they stand out.
Each is described in object units (1.0 = its length) and placed next to the duck, never on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hub.duckline.paint import (
    Colour,
    Decoration,
    Ellipsoid,
    FloatImage,
    Light,
    PixelBox,
    Points,
    Surface,
    bounds,
    cast_shadow,
    ellipse_points,
    paint_surface,
)

ObjectKind = Literal["nut", "bolt", "screw", "cap", "wire"]
OBJECT_KINDS: tuple[ObjectKind, ...] = ("nut", "bolt", "screw", "cap", "wire")
# Length in duck units, and the colours each kind comes in (BGR).
_SIZES: dict[ObjectKind, tuple[float, float]] = {
    "nut": (0.10, 0.14),
    "bolt": (0.22, 0.30),
    "screw": (0.18, 0.26),
    "cap": (0.12, 0.16),
    "wire": (0.28, 0.40),
}
_COLOURS: dict[ObjectKind, tuple[Colour, ...]] = {
    "nut": ((170.0, 172.0, 175.0), (95.0, 165.0, 200.0)),
    "bolt": ((165.0, 168.0, 172.0), (150.0, 160.0, 175.0)),
    "screw": ((80.0, 160.0, 200.0), (175.0, 178.0, 182.0)),
    "cap": ((200.0, 100.0, 25.0), (40.0, 40.0, 200.0), (225.0, 225.0, 225.0)),
    "wire": ((35.0, 35.0, 205.0), (60.0, 115.0, 205.0), (205.0, 110.0, 30.0)),
}
SIDE_SQUASH = 0.45  # a wire lying flat, seen at a grazing angle, looks this much shallower


@dataclass(frozen=True)
class ForeignObject:
    """Which object fell on the belt; the same object is seen by both cameras."""

    kind: ObjectKind
    length: float  # duck units
    colour: Colour
    shape_seed: int


def sample_object(rng: np.random.Generator) -> ForeignObject:
    """A random object, size and colour."""
    kind = OBJECT_KINDS[int(rng.integers(len(OBJECT_KINDS)))]
    colours = _COLOURS[kind]
    return ForeignObject(
        kind, rng.uniform(*_SIZES[kind]), colours[int(rng.integers(len(colours)))], int(rng.integers(2**31))
    )


def _hexagon(cx: float, cy: float, r: float) -> Points:
    return ellipse_points(cx, cy, r, r, 30.0, n=6)


def _rect(x0: float, y0: float, x1: float, y1: float) -> Points:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _thread(x0: float, x1: float, half: float, pitch: float) -> tuple[Points, ...]:
    return tuple(np.array([[x, -half], [x + pitch * 0.4, half]]) for x in np.arange(x0, x1, pitch))


def _wire(rng: np.random.Generator) -> tuple[Points, Points]:
    """Outline of a bent wire of unit length, and its centre line."""
    t = np.linspace(-0.5, 0.5, 14)
    bend = rng.uniform(0.08, 0.25) * np.sin(math.pi * (t + 0.5) * rng.uniform(1.0, 2.0) + rng.uniform(0, 1))
    centre = np.stack([t, bend], axis=1)
    tangent = np.gradient(centre, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    half = 0.035
    return np.concatenate([centre + half * normal, (centre - half * normal)[::-1]]), centre


def _parts(
    obj: ForeignObject, side_view: bool
) -> list[tuple[Points, Colour, tuple[Points, ...], tuple[Decoration, ...]]]:
    """(outline, colour, cutouts, decorations) in object units, centred on the origin.

    Lying on the belt, a bolt, screw or wire looks much the same from above and from the side;
    a nut or a cap shows its flat profile to the side camera.
    """
    dark = (obj.colour[0] * 0.55, obj.colour[1] * 0.55, obj.colour[2] * 0.55)
    if obj.kind == "nut":
        if side_view:
            profile = np.array(
                [[-0.5, -0.12], [-0.44, -0.2], [0.44, -0.2], [0.5, -0.12], [0.5, 0.2], [-0.5, 0.2]]
            )
            facets = Decoration(
                tuple(np.array([[x, -0.2], [x, 0.2]]) for x in (-0.25, 0.25)), dark, thickness=0.03
            )
            return [(profile, obj.colour, (), (facets,))]
        return [(_hexagon(0, 0, 0.5), obj.colour, (ellipse_points(0, 0, 0.22, 0.22, n=20),), ())]
    if obj.kind == "bolt":
        shank = _rect(-0.28, -0.1, 0.5, 0.1)
        thread = Decoration(_thread(-0.05, 0.48, 0.1, 0.07), dark, thickness=0.02)
        return [(shank, obj.colour, (), (thread,)), (_hexagon(-0.36, 0, 0.17), obj.colour, (), ())]
    if obj.kind == "screw":
        shank = np.array([[-0.3, -0.06], [0.36, -0.06], [0.5, 0.0], [0.36, 0.06], [-0.3, 0.06]])
        thread = Decoration(_thread(-0.2, 0.38, 0.065, 0.06), dark, thickness=0.02)
        head = ellipse_points(-0.38, 0, 0.1, 0.16, n=20)
        slot = Decoration((np.array([[-0.38, -0.12], [-0.38, 0.12]]),), dark, thickness=0.03)
        return [(shank, obj.colour, (), (thread,)), (head, obj.colour, (), (slot,))]
    if obj.kind == "cap":
        if side_view:
            profile = np.array(
                [[-0.5, 0.2], [-0.5, -0.12], [-0.42, -0.2], [0.42, -0.2], [0.5, -0.12], [0.5, 0.2]]
            )
            ridges = Decoration(
                tuple(np.array([[x, -0.14], [x, 0.2]]) for x in np.linspace(-0.4, 0.4, 9)),
                dark,
                thickness=0.02,
            )
            return [(profile, obj.colour, (), (ridges,))]
        ring = Decoration((ellipse_points(0, 0, 0.38, 0.38, n=32),), dark, thickness=0.03, closed=True)
        return [(ellipse_points(0, 0, 0.5, 0.5, n=32), obj.colour, (), (ring,))]
    outline, _ = _wire(np.random.default_rng(obj.shape_seed))
    return [(outline, obj.colour, (), ())]


def _place(
    obj: ForeignObject,
    side_view: bool,
    stretch: tuple[float, float],
    scale: float,
    angle: float,
    x: float,
    y: float,
) -> list[Surface]:
    """The object's surfaces with its centre at (x, y) pixels."""
    length = obj.length * scale
    sx, sy = stretch
    c, s = math.cos(angle), math.sin(angle)

    def to_image(p: Points) -> Points:
        u, v = p[:, 0] * length * sx, p[:, 1] * length
        return np.stack([x + c * u - s * v, y + sy * (s * u + c * v)], axis=1)

    surfaces: list[Surface] = []
    metal = obj.kind in ("nut", "bolt", "screw")
    for outline, colour, cuts, decos in _parts(obj, side_view):
        pts = to_image(outline)
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        # Objects are low and flat: a shallow ellipsoid over the part's extent gives a sheen, not a dome.
        shape = Ellipsoid(
            (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * 0.6 + 1, (y1 - y0) * 0.6 + 1, 0.0, (y1 - y0) * 0.4 + 1
        )
        placed_decos = tuple(
            Decoration(
                tuple(to_image(p) for p in d.polygons), d.colour, d.gloss, d.thickness * length, d.closed
            )
            for d in decos
        )
        surfaces.append(
            Surface(
                pts,
                shape,
                colour,
                gloss=0.9 if metal else 0.5,
                shininess_doublings=4 if metal else 5,
                cutouts=tuple(to_image(p) for p in cuts),
                decorations=placed_decos,
            )
        )
    return surfaces


def _footprint(surfaces: list[Surface]) -> Points:
    return np.concatenate([sf.outline for sf in surfaces])


def _overlaps(a: PixelBox, b: PixelBox) -> bool:
    return not (a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])


@dataclass(frozen=True)
class Drop:
    """An object placed on the belt: what to paint, its shadow, and the pixels both can touch."""

    surfaces: list[Surface]
    shadow: tuple[Points, ...]
    penumbra: float  # shadow softness (pixels)
    region: PixelBox


def drop_object(
    obj: ForeignObject,
    rng: np.random.Generator,
    side_view: bool,
    floor: PixelBox,
    keep_clear: PixelBox,
    scale: float,
    light: Light,
    size: tuple[int, int],
) -> Drop | None:
    """Place the object on the floor, away from `keep_clear` (the duck); None if the belt is too crowded."""
    width, height = size
    if not side_view:
        stretch, angle = (1.0, 1.0), rng.uniform(0, 2 * math.pi)
    elif obj.kind == "wire":
        stretch, angle = (1.0, SIDE_SQUASH), rng.uniform(-math.pi / 6, math.pi / 6)
    elif obj.kind in ("bolt", "screw"):  # lying at some angle to the camera: foreshortened
        stretch, angle = (rng.uniform(0.6, 1.0), 1.0), rng.uniform(-0.12, 0.12)
    else:
        stretch, angle = (1.0, 1.0), rng.uniform(-0.08, 0.08)
    lx, ly, lz = light.direction
    lift = 0.06 * obj.length * scale
    shift = (0.0, 0.05 * obj.length * scale) if side_view else (-lx / lz * lift, -ly / lz * lift)
    sigma = max(0.04 * obj.length * scale, 0.8)
    pad = 3.0 * sigma + 4.0 + max(abs(shift[0]), abs(shift[1]))
    gap = 10
    fx0, fy0, fx1, fy1 = floor
    clear = (keep_clear[0] - gap, keep_clear[1] - gap, keep_clear[2] + gap, keep_clear[3] + gap)
    for attempt in range(60):
        shrink = 0.85 ** (attempt // 20)  # a crowded frame: try a smaller object
        probe = _footprint(_place(obj, side_view, stretch, scale * shrink, angle, 0.0, 0.0))
        lo, hi = probe.min(axis=0) - pad, probe.max(axis=0) + pad
        xmin, xmax = fx0 - lo[0], fx1 - hi[0]
        ymin, ymax = fy0 - lo[1], fy1 - hi[1]
        if side_view:  # lying on the nearer part of the visible belt
            ymin = max(ymin, fy0 + 0.35 * (fy1 - fy0) - lo[1])
        if xmax < xmin or ymax < ymin:
            continue
        x, y = rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)
        box = (int(x + lo[0]), int(y + lo[1]), int(x + hi[0]) + 1, int(y + hi[1]) + 1)
        if _overlaps(box, clear):
            continue
        surfaces = _place(obj, side_view, stretch, scale * shrink, angle, x, y)
        region = bounds(_footprint(surfaces), pad, width, height)
        if region is not None:
            shadow = tuple(sf.outline + np.array(shift) for sf in surfaces)
            return Drop(surfaces, shadow, sigma, region)
    return None


def paint_drop(canvas: FloatImage, drop: Drop, light: Light) -> None:
    """Paint the dropped object's shadow, then the object."""
    cast_shadow(canvas, drop.shadow, drop.penumbra, 0.55)
    for surface in drop.surfaces:
        paint_surface(canvas, surface, light)
