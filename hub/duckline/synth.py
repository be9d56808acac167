"""Synthetic plastic-duck line: what the top and side cameras see, with exact ground truth.

Randomness comes from separate streams keyed on (seed, index, purpose[, camera]): the duck's
identity, each camera's nuisances (pose, belt, lighting, blur, noise) and the defect. So rendering
one item with and without a defect changes only the defect's pixels, and the defect's box is
measured, not guessed: the scene is painted with and without the defect, and the difference is
pushed through the camera's gains and blur (`optics.visible_change`) to find where it shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from hub.duckline.belt import Stage, side_stage, top_stage
from hub.duckline.duck import (
    DuckLook,
    Pose,
    View,
    duck_extent,
    paint_duck,
    paint_shadow,
    sample_break,
    sample_colours,
    sample_stain,
    sample_wrong_colour,
    silhouette,
)
from hub.duckline.foreign import ForeignObject, drop_object, paint_drop, sample_object
from hub.duckline.optics import develop, grow, sample_optics, visible_change
from hub.duckline.paint import FloatImage, Light, PixelBox, union

DEFECT_KINDS: tuple[str, ...] = ("missing_eye", "stain", "broken_beak", "wrong_colour", "foreign_object")
CAMERAS: tuple[str, ...] = ("top", "side")
FRAME_SIZE: tuple[int, int] = (640, 480)  # width, height
Box = tuple[float, float, float, float]  # x_min, y_min, x_max, y_max normalised to the frame (0..1)

# Stream purposes: changing one stream's draws never shifts another's.
_IDENTITY, _SCENE, _DEFECT, _PLACEMENT = 1, 2, 3, 4
_ON_THE_DUCK = ("missing_eye", "stain", "broken_beak", "wrong_colour")
# How far (duck units) a defect may reach beyond the intact duck's outline: a bent beak's tip.
_REACH = 0.15
# Duck length as a share of the frame width, before the +-20 % scale jitter (top, side).
_DUCK_WIDTH_SHARE = 0.43


@dataclass(frozen=True)
class Defect:
    """One visible defect and its box."""

    kind: str
    box: Box


# eq=False: comparing arrays has no single truth value, so a frame equals only itself.
@dataclass(frozen=True, eq=False)
class Frame:
    """One camera's image of one item, with its ground truth."""

    camera: str
    image: np.ndarray  # HxWx3 BGR uint8
    duck_box: Box
    defects: tuple[Defect, ...]  # the defects visible in this view (empty for an OK part)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong in this view."""
        return not self.defects


@dataclass(frozen=True)
class Item:
    """One duck seen by every camera."""

    index: int
    defect_kind: str | None  # None = OK part
    frames: dict[str, Frame]  # one per camera


def _rng(seed: int, index: int, *purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, *purpose])


def render_item(
    seed: int,
    index: int,
    defect_kind: str | Literal["random"] | None = "random",
    ko_fraction: float = 0.5,
    size: tuple[int, int] = FRAME_SIZE,
) -> Item:
    """Deterministic in (seed, index). "random" draws OK vs KO (ko_fraction) and the kind uniformly.

    An explicit kind (or None) renders the same duck, pose, lighting and noise as any other kind
    for that (seed, index): only the defect's pixels differ.
    """
    if seed < 0 or index < 0:
        raise ValueError("seed and index must be non-negative")
    if defect_kind is not None and defect_kind != "random" and defect_kind not in DEFECT_KINDS:
        raise ValueError(
            f"unknown defect kind {defect_kind!r}; expected one of {DEFECT_KINDS}, None or 'random'"
        )
    if not 0.0 <= ko_fraction <= 1.0:
        raise ValueError("ko_fraction must be within 0..1")
    width, height = size
    if width < 64 or height < 48:
        raise ValueError("frames must be at least 64x48 pixels")

    duck = _identity(seed, index, defect_kind, ko_fraction)
    frames = {camera: _render_frame(seed, index, number, duck, size) for number, camera in enumerate(CAMERAS)}
    return Item(index, duck.kind, frames)


@dataclass(frozen=True)
class _Duck:
    """What both cameras share: the defect, the duck as it should be and as it is, a dropped object."""

    kind: str | None
    good: DuckLook
    actual: DuckLook
    dropped: ForeignObject


def _identity(seed: int, index: int, defect_kind: str | None, ko_fraction: float) -> _Duck:
    identity = _rng(seed, index, _IDENTITY)
    draw_ko, draw_kind = identity.random(), int(identity.integers(len(DEFECT_KINDS)))
    body, beak = sample_colours(identity)
    kind = (
        (DEFECT_KINDS[draw_kind] if draw_ko < ko_fraction else None)
        if defect_kind == "random"
        else defect_kind
    )
    good = DuckLook(body, beak)
    defect = _rng(seed, index, _DEFECT)
    # Every defect's parameters are drawn, in a fixed order, whatever the kind: simple and stable.
    missing_eye = int(defect.integers(2))
    stain, brk, wrong, obj = (
        sample_stain(defect),
        sample_break(defect),
        sample_wrong_colour(defect),
        sample_object(defect),
    )
    actual = {
        "missing_eye": replace(good, missing_eye=missing_eye),
        "stain": replace(good, stain=stain),
        "broken_beak": replace(good, broken_beak=brk),
        "wrong_colour": replace(good, body=wrong),
    }.get(kind or "", good)
    return _Duck(kind, good, actual, obj)


def _render_frame(seed: int, index: int, number: int, duck: _Duck, size: tuple[int, int]) -> Frame:
    """One camera's frame: the nuisances come from this camera's stream, the duck from `duck`."""
    width, height = size
    camera = CAMERAS[number]
    view: View = "top" if camera == "top" else "side"
    scene = _rng(seed, index, _SCENE, number)
    stage = top_stage(scene, width, height) if view == "top" else side_stage(scene, width, height)
    light = _sample_light(scene, view)
    pose = _place_duck(scene, view, stage, width, height)
    optics = sample_optics(scene, height / 480)
    shadow = scene.uniform(0.35, 0.6)
    canvas = stage.canvas

    defect_box: PixelBox | None = None
    if duck.kind == "foreign_object":
        keep_clear = duck_extent(view, pose, width, height) or (0, 0, 0, 0)
        placement = _rng(seed, index, _PLACEMENT, number)
        drop = drop_object(
            duck.dropped, placement, view == "side", stage.floor, keep_clear, pose.scale, light, size
        )
        if drop is not None:
            patch = grow(drop.region, optics, size)
            clean = _crop(canvas, patch).copy()
            paint_drop(canvas, drop, light)
            defect_box = visible_change(clean, _crop(canvas, patch), patch[:2], optics, size)
    paint_shadow(canvas, view, pose, light, shadow)
    extent = duck_extent(view, pose, width, height, _REACH)
    assert extent is not None  # placement keeps the duck inside the frame
    patch = grow(extent, optics, size)
    belt = _crop(canvas, patch).copy()
    # The same duck without its defect, on the same belt: the difference is the defect.
    reference = canvas.copy() if duck.kind in _ON_THE_DUCK else None
    paint_duck(canvas, view, pose, duck.actual, light)
    duck_box = visible_change(belt, _crop(canvas, patch), patch[:2], optics, size) or extent
    if reference is not None:
        paint_duck(reference, view, pose, duck.good, light)
        defect_box = visible_change(_crop(reference, patch), _crop(canvas, patch), patch[:2], optics, size)
        if duck.kind == "wrong_colour":
            defect_box = union(defect_box, duck_box)

    image = develop(canvas, optics, scene)
    found = duck.kind is not None and defect_box is not None
    defects = (Defect(str(duck.kind), _normalise(defect_box, size)),) if found and defect_box else ()
    return Frame(camera, image, _normalise(duck_box, size), defects)


def _crop(canvas: FloatImage, box: PixelBox) -> FloatImage:
    x0, y0, x1, y1 = box
    return canvas[y0 : y1 + 1, x0 : x1 + 1]


def _sample_light(rng: np.random.Generator, view: View) -> Light:
    """Overhead lamps: steep from above for the top camera, from above and in front for the side one."""
    if view == "top":
        elevation, azimuth = math.radians(rng.uniform(50, 78)), rng.uniform(0, 2 * math.pi)
        direction = (
            math.cos(elevation) * math.cos(azimuth),
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
        )
    else:
        x, y, z = rng.uniform(-0.5, 0.5), rng.uniform(-0.9, -0.35), rng.uniform(0.55, 0.95)
        norm = math.sqrt(x * x + y * y + z * z)
        direction = (x / norm, y / norm, z / norm)
    return Light(direction, ambient=rng.uniform(0.36, 0.46), diffuse=0.68)


def _place_duck(rng: np.random.Generator, view: View, stage: Stage, width: int, height: int) -> Pose:
    """Random pose with the whole duck on the belt, a margin away from the frame's edges."""
    if view == "top":
        angle = math.radians(rng.uniform(-35, 35))
        mirror = bool(rng.random() < 0.25)  # now and then a duck travels tail first
    else:
        angle = math.radians(rng.uniform(-10, 10))
        mirror = bool(rng.random() < 0.5)
    jitter, fx, fy, fbase = rng.uniform(0.8, 1.2), rng.random(), rng.random(), rng.random()
    outline = silhouette(view)
    length = float(np.ptp(outline[:, 0]))
    scale = _DUCK_WIDTH_SHARE * width / length * jitter
    margin = 12 * height / 480
    x0, x1, y1 = float(stage.floor[0]), float(stage.floor[2]), float(stage.floor[3])
    # The duck lies on the belt; standing on it (side view) its head may rise in front of the guard.
    y0 = float(stage.floor[1]) if view == "top" else margin
    for _ in range(20):
        pts = Pose(0.0, 0.0, scale, angle, mirror).apply(outline)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        room_x = (x1 - x0 - 2 * margin) - (hi[0] - lo[0])
        room_y = (y1 - y0 - 2 * margin) - (hi[1] - lo[1])
        if room_x >= 0 and room_y >= 0:
            break
        scale *= 0.92
    x = x0 + margin - lo[0] + fx * max(room_x, 0.0)
    if view == "top":
        y = y0 + margin - lo[1] + fy * max(room_y, 0.0)
    else:
        # Stand the duck on the nearer half of the visible belt.
        strip_top, strip_bottom = stage.floor[1], stage.floor[3]
        base = strip_top + (0.5 + 0.38 * fbase) * (strip_bottom - strip_top)
        y = min(base - hi[1], y1 - margin - hi[1])
        y = max(y, y0 + margin - lo[1])
    return Pose(float(x), float(y), float(scale), angle, mirror)


def _normalise(box: PixelBox, size: tuple[int, int]) -> Box:
    """Inclusive pixel box as 0..1 edges (pixel i spans [i, i + 1))."""
    width, height = size
    x0, y0, x1, y1 = box
    return (
        max(0.0, x0 / width),
        max(0.0, y0 / height),
        min(1.0, (x1 + 1) / width),
        min(1.0, (y1 + 1) / height),
    )
