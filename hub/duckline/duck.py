"""The plastic duck: its parts in duck units, its pose in the image, its look, and its defects on the duck.

Duck units: 1.0 is roughly the duck's length. Local axes: x points from tail to beak; y is the duck's
right side in the top view and points down in the side view (image convention). A `Pose` maps
duck units to image pixels, so both cameras share one description of the duck.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, cast

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
    blob_points,
    bounds,
    cast_shadow,
    ellipse_points,
    paint_surface,
)

View = Literal["top", "side"]
BreakMode = Literal["snapped", "chipped", "bent"]

EYE_COLOUR: Colour = (22.0, 20.0, 24.0)
HIGHLIGHT_COLOUR: Colour = (245.0, 245.0, 245.0)
# Wrong-colour defects: real mould mix-ups (BGR), each jittered a little per duck.
WRONG_COLOURS: tuple[Colour, ...] = (
    (30.0, 128.0, 245.0),  # orange
    (80.0, 180.0, 90.0),  # green
    (222.0, 230.0, 235.0),  # pale white
    (190.0, 150.0, 245.0),  # pink
    (225.0, 170.0, 95.0),  # light blue
)
STAIN_COLOURS: tuple[Colour, ...] = (
    (22.0, 40.0, 72.0),  # brown
    (25.0, 25.0, 28.0),  # black
    (35.0, 30.0, 185.0),  # red paint
    (45.0, 60.0, 80.0),  # grease
)


@dataclass(frozen=True)
class Part:
    """An ellipsoid part in duck units; `flat_below` cuts the outline flat (the side view's base)."""

    name: str
    centre: tuple[float, float]
    axes: tuple[float, float]
    angle: float = 0.0  # degrees
    depth: float = 0.2
    flat_below: float | None = None


# Painting order matters: later parts cover earlier ones (the head hides the beak's root).
TOP_PARTS: tuple[Part, ...] = (
    Part("tail", (-0.40, 0.0), (0.17, 0.12), depth=0.12),
    Part("body", (-0.06, 0.0), (0.40, 0.29), depth=0.30),
    Part("wing_left", (-0.14, -0.18), (0.23, 0.085), angle=-7.0, depth=0.035),
    Part("wing_right", (-0.14, 0.18), (0.23, 0.085), angle=7.0, depth=0.035),
    Part("beak", (0.43, 0.0), (0.14, 0.085), depth=0.06),
    Part("head", (0.21, 0.0), (0.175, 0.165), depth=0.19),
)
SIDE_PARTS: tuple[Part, ...] = (
    Part("tail", (-0.38, -0.03), (0.16, 0.075), angle=35.0, depth=0.08),
    Part("body", (-0.04, 0.09), (0.42, 0.22), depth=0.30, flat_below=0.27),
    Part("wing", (-0.10, 0.06), (0.22, 0.10), angle=15.0, depth=0.04),
    Part("beak", (0.40, -0.15), (0.13, 0.055), angle=8.0, depth=0.05),
    Part("head", (0.19, -0.20), (0.18, 0.175), depth=0.18),
)
TOP_EYES: tuple[tuple[float, float], ...] = ((0.29, -0.085), (0.29, 0.085))
SIDE_EYES: tuple[tuple[float, float], ...] = ((0.255, -0.255),)
EYE_RADIUS = 0.034
BODY_GROUP = frozenset({"tail", "body", "wing", "wing_left", "wing_right"})
# Where a stain may sit (duck units): on the back (top) or the flank (side), clear of the head.
STAIN_AREA: dict[View, tuple[float, float, float, float]] = {
    "top": (-0.36, -0.15, -0.04, 0.15),
    "side": (-0.33, 0.0, 0.0, 0.17),
}


@dataclass(frozen=True)
class Stain:
    """A paint or dirt blot: where on the body (0..1 over STAIN_AREA), how big (duck units), what colour."""

    u: float
    v: float
    radius: float
    colour: Colour
    shape_seed: int  # the same blot outline in both views


@dataclass(frozen=True)
class BeakBreak:
    """How the beak is broken; positions along the beak run from -1 (root) to +1 (tip)."""

    mode: BreakMode
    where: float  # snapped: cut position; chipped: bite position; bent: bend angle factor
    side: float  # +1 / -1: which side is chipped, or which way it bends
    shape_seed: int


@dataclass(frozen=True)
class DuckLook:
    """What the duck is, shared by both cameras: colours and the defect painted on it."""

    body: Colour
    beak: Colour
    missing_eye: int | None = None  # top view: which eye is unpainted; the side view shows that one
    stain: Stain | None = None
    broken_beak: BeakBreak | None = None


@dataclass(frozen=True)
class Pose:
    """Duck units to image pixels: mirror (face the other way), rotate, scale, translate."""

    x: float
    y: float
    scale: float  # pixels per duck unit
    angle: float  # radians
    mirror: bool

    def apply(self, pts: Points) -> Points:
        """Map N x 2 duck-unit points to image pixels."""
        sx = -1.0 if self.mirror else 1.0
        c, s = math.cos(self.angle), math.sin(self.angle)
        x, y = pts[:, 0] * sx, pts[:, 1]
        return np.stack(
            [self.x + self.scale * (c * x - s * y), self.y + self.scale * (s * x + c * y)], axis=1
        )

    def ellipsoid(
        self, centre: tuple[float, float], axes: tuple[float, float], angle_deg: float, depth: float
    ) -> Ellipsoid:
        """The image-space ellipsoid of a duck-unit one."""
        (cx, cy) = self.apply(np.array([centre]))[0]
        local = math.radians(-angle_deg if self.mirror else angle_deg)
        return Ellipsoid(
            float(cx),
            float(cy),
            axes[0] * self.scale,
            axes[1] * self.scale,
            self.angle + local,
            depth * self.scale,
        )


def sample_colours(rng: np.random.Generator) -> tuple[Colour, Colour]:
    """A good duck's body yellow and beak orange: moulding batches differ a little."""
    body = (rng.uniform(8, 45), rng.uniform(196, 222), rng.uniform(238, 255))
    beak = (rng.uniform(0, 22), rng.uniform(98, 132), rng.uniform(236, 255))
    return body, beak


def sample_wrong_colour(rng: np.random.Generator) -> Colour:
    """One of the mould mix-up colours, jittered."""
    base = WRONG_COLOURS[int(rng.integers(len(WRONG_COLOURS)))]
    b, g, r = (float(np.clip(c + rng.uniform(-10, 10), 0, 255)) for c in base)
    return b, g, r


def sample_stain(rng: np.random.Generator) -> Stain:
    """A blot 9-16 % of the duck's length across."""
    colour = STAIN_COLOURS[int(rng.integers(len(STAIN_COLOURS)))]
    return Stain(
        rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.045, 0.08), colour, int(rng.integers(2**31))
    )


def sample_break(rng: np.random.Generator) -> BeakBreak:
    """A snapped tip, a chipped side or a bent beak."""
    modes: tuple[BreakMode, ...] = ("snapped", "chipped", "bent")
    mode = modes[int(rng.integers(3))]
    return BeakBreak(mode, rng.uniform(0, 1), 1.0 if rng.random() < 0.5 else -1.0, int(rng.integers(2**31)))


def parts_for(view: View) -> tuple[Part, ...]:
    """The view's parts in painting order."""
    return TOP_PARTS if view == "top" else SIDE_PARTS


def outline(part: Part) -> Points:
    """A part's outline polygon in duck units."""
    pts = ellipse_points(part.centre[0], part.centre[1], part.axes[0], part.axes[1], part.angle)
    if part.flat_below is not None:
        # Clamping a convex outline to a half-plane is exactly their intersection.
        pts[:, 1] = np.minimum(pts[:, 1], part.flat_below)
    return pts


def silhouette(view: View) -> Points:
    """All outline points of an intact duck (duck units), for placement and framing."""
    return np.concatenate([outline(p) for p in parts_for(view)])


def _beak_frame(part: Part) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origin, along-axis and across-axis vectors of the beak, in duck units per unit of s and t."""
    a = math.radians(part.angle)
    along = np.array([math.cos(a), math.sin(a)]) * part.axes[0]
    across = np.array([-math.sin(a), math.cos(a)]) * part.axes[1]
    return np.array(part.centre), along, across


def _in_beak(part: Part, s: np.ndarray, t: np.ndarray) -> Points:
    origin, along, across = _beak_frame(part)
    return cast(Points, origin + s[:, None] * along + t[:, None] * across)


def _broken_beak(part: Part, brk: BeakBreak) -> tuple[Part, list[Points], list[Decoration]]:
    """The broken beak's part, cutouts (duck units) and fracture marks (duck units; pale = stress-whitened)."""
    rng = np.random.default_rng(brk.shape_seed)
    if brk.mode == "bent":
        hinge_s = -0.25
        origin, along, _ = _beak_frame(part)
        hinge = origin + hinge_s * along
        bend = math.radians(brk.side * (28 + 14 * brk.where))
        c, s = math.cos(bend), math.sin(bend)
        offset = np.array(part.centre) - hinge
        centre = hinge + np.array([c * offset[0] - s * offset[1], s * offset[0] + c * offset[1]])
        bent = replace(
            part, centre=(float(centre[0]), float(centre[1])), angle=part.angle + math.degrees(bend)
        )
        crease = _in_beak(bent, np.full(7, hinge_s + 0.08), np.linspace(-0.9, 0.9, 7))
        # Bent plastic whitens along the fold (stress whitening), with a dark kink line in it: a band a
        # line camera resolves, not a hairline the inspection resolution would lose.
        return (
            bent,
            [],
            [
                Decoration((crease,), (150.0, 200.0, 240.0), gloss=0.3, thickness=0.032),
                Decoration((crease,), (60.0, 70.0, 120.0), thickness=0.012),
            ],
        )
    if brk.mode == "snapped":
        cut = 0.5 * brk.where  # break off the outer quarter to half of the beak
        t = np.linspace(-1.4, 1.4, 9)
        jag = cut + rng.uniform(-0.14, 0.14, t.size)
        edge = _in_beak(part, jag, t)
        beyond = _in_beak(part, np.array([3.0, 3.0]), np.array([1.4, -1.4]))
        cutout = np.concatenate([edge, beyond])
        return part, [cutout], [Decoration((edge,), (150.0, 200.0, 240.0), gloss=0.3, thickness=0.014)]
    # chipped: an irregular bite out of one side of the beak, towards the tip
    centre = _in_beak(part, np.array([0.15 + 0.5 * brk.where]), np.array([brk.side * 1.0]))[0]
    bite = blob_points(rng, float(centre[0]), float(centre[1]), 0.06, n=9, roughness=0.15)
    return part, [bite], [Decoration((bite,), (150.0, 200.0, 240.0), gloss=0.3, thickness=0.014, closed=True)]


def duck_surfaces(view: View, pose: Pose, look: DuckLook, light: Light) -> list[Surface]:
    """The duck's surfaces in painting order, in image pixels."""
    px = pose.scale  # pixels per duck unit, for line widths
    stain_decos: tuple[Decoration, ...] = ()
    if look.stain is not None:
        st = look.stain
        x0, y0, x1, y1 = STAIN_AREA[view]
        cx, cy = x0 + st.u * (x1 - x0), y0 + st.v * (y1 - y0)
        srng = np.random.default_rng(st.shape_seed)
        outer = pose.apply(blob_points(srng, cx, cy, st.radius))
        inner = pose.apply(blob_points(srng, cx + 0.2 * st.radius, cy, st.radius * 0.5))
        darker = (st.colour[0] * 0.7, st.colour[1] * 0.7, st.colour[2] * 0.7)
        stain_decos = (Decoration((outer,), st.colour, gloss=0.35), Decoration((inner,), darker, gloss=0.35))

    surfaces: list[Surface] = []
    for part in parts_for(view):
        colour = look.body
        gloss = 0.32
        cutouts: list[Points] = []
        decos: list[Decoration] = []
        shape = part
        if part.name in BODY_GROUP:
            decos.extend(stain_decos)
        if part.name == "beak":
            colour, gloss = look.beak, 0.3
            if look.broken_beak is not None:
                shape, cut_units, mark_units = _broken_beak(part, look.broken_beak)
                cutouts = [pose.apply(c) for c in cut_units]
                decos.extend(
                    replace(d, polygons=tuple(pose.apply(p) for p in d.polygons), thickness=d.thickness * px)
                    for d in mark_units
                )
            if view == "side":
                mouth = _in_beak(
                    shape, np.linspace(-0.3, 0.98, 6), np.array([0.0, 0.03, 0.05, 0.06, 0.05, 0.0])
                )
                decos.append(Decoration((pose.apply(mouth),), (20.0, 60.0, 150.0), thickness=0.009 * px))
        if part.name == "head":
            decos.extend(_eyes(view, pose, look, light))
        surfaces.append(
            Surface(
                outline=pose.apply(outline(shape)),
                shape=pose.ellipsoid(shape.centre, shape.axes, shape.angle, shape.depth),
                colour=colour,
                gloss=gloss,
                cutouts=tuple(cutouts),
                decorations=tuple(decos),
                shininess_doublings=6,
            )
        )
    return surfaces


def _eyes(view: View, pose: Pose, look: DuckLook, light: Light) -> list[Decoration]:
    eyes = TOP_EYES if view == "top" else SIDE_EYES
    decos: list[Decoration] = []
    lx, ly, _ = light.direction
    for i, (ex, ey) in enumerate(eyes):
        missing = look.missing_eye is not None and (view == "side" or look.missing_eye == i)
        if missing:
            continue
        centre = pose.apply(np.array([[ex, ey]]))[0]
        r = EYE_RADIUS * pose.scale
        decos.append(Decoration((ellipse_points(centre[0], centre[1], r, r, n=24),), EYE_COLOUR, gloss=1.3))
        hx, hy = centre[0] + 0.35 * r * lx, centre[1] + 0.35 * r * ly
        decos.append(Decoration((ellipse_points(hx, hy, 0.3 * r, 0.3 * r, n=12),), HIGHLIGHT_COLOUR))
    return decos


def paint_duck(canvas: FloatImage, view: View, pose: Pose, look: DuckLook, light: Light) -> None:
    """Paint the duck's surfaces in order; seen from above, the raised head shades the back below it."""
    for surface, part in zip(duck_surfaces(view, pose, look, light), parts_for(view), strict=True):
        if view == "top" and part.name == "beak":
            _head_shadow(canvas, pose, light)
        paint_surface(canvas, surface, light)


def _head_shadow(canvas: FloatImage, pose: Pose, light: Light) -> None:
    head = next(p for p in TOP_PARTS if p.name == "head")
    lx, ly, lz = light.direction
    lift = 0.12 * pose.scale
    poly = pose.apply(outline(head)) + np.array([-lx / lz * lift, -ly / lz * lift])
    cast_shadow(canvas, (poly,), 0.03 * pose.scale, 0.3)


def paint_shadow(canvas: FloatImage, view: View, pose: Pose, light: Light, strength: float) -> None:
    """Soft shadow on the belt: cast sideways from above (top) or a contact shadow under the duck (side)."""
    if view == "top":
        lx, ly, lz = light.direction
        lift = 0.22 * pose.scale  # how high the duck's mass sits above the belt
        shift = np.array([-lx / lz * lift, -ly / lz * lift])
        polys = tuple(pose.apply(outline(p)) + shift for p in TOP_PARTS if p.name in ("tail", "body", "head"))
        sigma = 0.045 * pose.scale
    else:
        base = pose.apply(silhouette("side"))
        cx = float(base[:, 0].mean()) - light.direction[0] * 0.08 * pose.scale
        bottom = float(base[:, 1].max())
        half = float(np.ptp(base[:, 0])) * 0.48
        polys = (ellipse_points(cx, bottom - 0.01 * pose.scale, half, 0.045 * pose.scale),)
        sigma = 0.03 * pose.scale
    cast_shadow(canvas, polys, sigma, strength)


def duck_extent(view: View, pose: Pose, width: int, height: int, reach: float = 0.0) -> PixelBox | None:
    """Pixel box of the intact duck's outline, grown by `reach` duck units (a bent beak sticks out)."""
    return bounds(pose.apply(silhouette(view)), 1.0 + reach * pose.scale, width, height)
