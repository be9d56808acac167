"""Inline SVG charts drawn in Python: bars, stacked bars, line series and a donut, readable and accessible.

The line has no internet and nothing third-party is committed, so charts are plain SVG text. Each is an
<svg role="img"> whose aria-label states the figures, so a screen reader (or a test) needs no picture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# Decision colours: white text on green and red, dark text on amber, all above 4.5:1 contrast. The words are
# always written too, so nobody depends on telling the colours apart.
OK_COLOR = "#15803d"
KO_COLOR = "#b91c1c"
ND_COLOR = "#f59e0b"
ACCENT = "#1d4ed8"
MUTED = "#94a3b8"
INK = "#1f2937"
GRID = "#d5dbe3"
TRACK = "#e5e7eb"
DECISION_COLORS = {"OK": OK_COLOR, "KO": KO_COLOR, "NO_DECISION": ND_COLOR}


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    color: str = ACCENT
    text: str | None = None  # the figure written beside the bar; default: the value formatted


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per category; None leaves a gap (no data there)
    color: str = ACCENT


def fmt(value: float, unit: str = "") -> str:
    """A figure as an operator reads it: no needless decimals, a thin space before the unit."""
    if value == 0 or abs(value) >= 100 or float(value).is_integer():
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{text}\u2009{unit}" if unit else text


def nice_ticks(top: float, count: int = 4, *, integer: bool = False) -> list[float]:
    """Round axis ticks from 0 to at least `top` (steps of 1, 2, 2.5 or 5 times a power of ten).

    `integer`: for counts (parts), whole steps only: 1, 2 or 5 times a power of ten, at least 1."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    multiples = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * power for m in multiples if m * power >= raw)
    if integer:
        step = max(round(step), 1)
    ticks = [0.0]
    while ticks[-1] < top - 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _open(width: int, height: int, label: str, testid: str | None, css: str) -> str:
    test = f' data-testid="{escape(testid)}"' if testid else ""
    return (
        f'<svg class="chart {css}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}"'
        # Charts follow their card's width, but never grow past 1.4 times their design size: text stays in
        # proportion to the page's own text.
        f'{test} style="max-width: {round(width * 1.4)}px" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(label)}</title>"
    )


def _text(
    x: float,
    y: float,
    content: str,
    *,
    anchor: str = "start",
    size: int = 14,
    fill: str = INK,
    weight: str = "normal",
    css: str = "",
) -> str:
    cls = f' class="{css}"' if css else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{fill}"'
        f' font-weight="{weight}"{cls}>{escape(content)}</text>'
    )


def _ink_on(color: str) -> str:
    return INK if color in (ND_COLOR, TRACK, MUTED) else "#ffffff"


def empty_chart(
    title: str, message: str, *, testid: str | None = None, width: int = 480, height: int = 160
) -> Markup:
    """A chart with nothing to draw says so in words, at the size the chart would have had."""
    body = _text(width / 2, height / 2 + 6, message, anchor="middle", size=18, fill="#475569")
    return Markup(_open(width, height, f"{title}: {message}", testid, "chart-empty") + body + "</svg>")


def _legend(series: Sequence[Series], x: float, y: float) -> str:
    parts = []
    for s in series:
        parts.append(f'<rect x="{x:.1f}" y="{y - 12:.1f}" width="14" height="14" rx="3" fill="{s.color}"/>')
        parts.append(_text(x + 20, y, s.name, size=14))
        x += 34 + 8.5 * len(s.name)
    return "".join(parts)


def bar_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    testid: str | None = None,
    unit: str = "",
    width: int = 480,
    height: int = 260,
    integer: bool = False,
) -> Markup:
    """Vertical bars, one per category, each with its figure on top and its name underneath.

    `integer`: the values are counts, so the axis shows whole numbers only."""
    label = f"{title}: " + ", ".join(f"{b.label} {b.text or fmt(b.value, unit)}" for b in bars)
    if not bars:
        return empty_chart(title, "No data", testid=testid, width=width, height=height)
    left, right, top, bottom = 48, 12, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    ticks = nice_ticks(max(b.value for b in bars), integer=integer)
    scale = plot_h / ticks[-1]
    parts = [_open(width, height, label, testid, "chart-bars")]
    parts.append(_grid(ticks, left, width - right, top + plot_h, scale))
    slot = plot_w / len(bars)
    bar_w = min(slot * 0.6, 110)
    for i, bar in enumerate(bars):
        h = bar.value * scale
        x = left + slot * i + (slot - bar_w) / 2
        y = top + plot_h - h
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" rx="4" fill="{bar.color}"/>'
        )
        parts.append(
            _text(
                x + bar_w / 2,
                y - 8,
                bar.text or fmt(bar.value, unit),
                anchor="middle",
                size=17,
                weight="bold",
            )
        )
        parts.append(_text(x + bar_w / 2, height - 14, bar.label, anchor="middle", size=15))
    parts.append("</svg>")
    return Markup("".join(parts))


def horizontal_bars(
    bars: Sequence[Bar],
    *,
    title: str,
    testid: str | None = None,
    unit: str = "",
    max_value: float | None = None,
    width: int = 480,
    empty: str = "No data",
) -> Markup:
    """One row per category: name on the left, bar, figure at its end. Long names stay readable."""
    label = f"{title}: " + ", ".join(f"{b.label} {b.text or fmt(b.value, unit)}" for b in bars)
    if not bars:
        return empty_chart(title, empty, testid=testid, width=width, height=120)
    row, top = 34, 6
    height = top * 2 + row * len(bars)
    # Text widths estimated from the font size (about 0.6 em per character), so labels are never clipped.
    name_w = min(max(len(b.label) for b in bars) * 9.2 + 14, width * 0.42)
    figure_w = max(len(b.text or fmt(b.value, unit)) for b in bars) * 9.6 + 16
    plot_w = width - name_w - figure_w
    top_value = max_value if max_value else max([b.value for b in bars] + [1e-9])
    parts = [_open(width, height, label, testid, "chart-hbars")]
    for i, bar in enumerate(bars):
        y = top + i * row
        w = max(plot_w * min(bar.value / top_value, 1.0), 0.0)
        parts.append(_text(name_w - 10, y + row / 2 + 5, bar.label, anchor="end", size=15))
        if max_value:
            parts.append(
                f'<rect x="{name_w:.1f}" y="{y + 7}" width="{plot_w:.1f}" height="{row - 14}" rx="4" fill="{TRACK}"/>'
            )
        parts.append(
            f'<rect x="{name_w:.1f}" y="{y + 7}" width="{w:.1f}" height="{row - 14}" rx="4" fill="{bar.color}"/>'
        )
        end = name_w + (plot_w if max_value else w)
        parts.append(
            _text(end + 8, y + row / 2 + 5, bar.text or fmt(bar.value, unit), size=15, weight="bold")
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _grid(
    ticks: Sequence[float], left: float, right_x: float, base_y: float, scale: float, unit: str = ""
) -> str:
    """Horizontal grid lines at the ticks, each with its figure on the left axis."""
    parts = []
    for tick in ticks:
        y = base_y - tick * scale
        parts.append(f'<line x1="{left}" x2="{right_x}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(_text(left - 8, y + 5, fmt(tick, unit), anchor="end", size=13, fill="#475569"))
    return "".join(parts)


def _x_labels(categories: Sequence[str], left: float, slot: float, y: float) -> str:
    every = max(1, math.ceil(len(categories) / 8))  # at most ~8 labels, so they never overlap
    return "".join(
        _text(left + slot * (i + 0.5), y, c, anchor="middle", size=13, fill="#475569")
        for i, c in enumerate(categories)
        if i % every == 0
    )


def stacked_bars(
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    testid: str | None = None,
    unit: str = "",
    width: int = 640,
    height: int = 280,
    integer: bool = False,
) -> Markup:
    """One bar per category made of each series' share (e.g. OK, KO and NO_DECISION parts per period).

    `integer`: the values are counts, so the axis shows whole numbers only."""
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(categories))]
    label = f"{title}: " + ", ".join(f"{c} {fmt(t, unit)}" for c, t in zip(categories, totals, strict=True))
    if not categories or not any(totals):
        return empty_chart(
            title, "Nothing inspected in this window", testid=testid, width=width, height=height
        )
    left, right, top, bottom = 48, 12, 36, 32
    plot_w, plot_h = width - left - right, height - top - bottom
    ticks = nice_ticks(max(totals), integer=integer)
    scale = plot_h / ticks[-1]
    parts = [_open(width, height, label, testid, "chart-stacked"), _legend(series, left, 18)]
    parts.append(_grid(ticks, left, width - right, top + plot_h, scale))
    slot = plot_w / len(categories)
    bar_w = max(slot * 0.72, 2)
    for i, category in enumerate(categories):
        y = float(top + plot_h)
        for s in series:
            h = (s.values[i] or 0) * scale
            if h <= 0:
                continue
            y -= h
            parts.append(
                f'<rect x="{left + slot * i + (slot - bar_w) / 2:.1f}" y="{y:.1f}" width="{bar_w:.1f}"'
                f' height="{h:.1f}" fill="{s.color}"><title>{escape(f"{category} {s.name}: {fmt(s.values[i] or 0, unit)}")}</title></rect>'
            )
    parts.append(_x_labels(categories, left, slot, height - 10))
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    testid: str | None = None,
    unit: str = "",
    step: bool = False,
    width: int = 640,
    height: int = 280,
) -> Markup:
    """One line per series across the categories; None values leave a gap; `step` draws a step series."""
    values = [v for s in series for v in s.values if v is not None]
    label = f"{title}: " + "; ".join(
        f"{s.name} "
        + ", ".join(f"{c} {fmt(v, unit)}" for c, v in zip(categories, s.values, strict=True) if v is not None)
        for s in series
    )
    if not categories or not values:
        return empty_chart(title, "No data in this window", testid=testid, width=width, height=height)
    left, right, top, bottom = 56, 12, 36, 32
    plot_w, plot_h = width - left - right, height - top - bottom
    ticks = nice_ticks(max(values))
    scale = plot_h / ticks[-1]
    slot = plot_w / len(categories)
    parts = [_open(width, height, label, testid, "chart-line"), _legend(series, left, 18)]
    parts.append(_grid(ticks, left, width - right, top + plot_h, scale, unit))
    for s in series:
        path: list[str] = []
        previous: tuple[float, float] | None = None
        for i, value in enumerate(s.values):
            if value is None:
                previous = None
                continue
            x, y = left + slot * (i + 0.5), top + plot_h - value * scale
            if previous is None:
                path.append(f"M{x:.1f},{y:.1f}")
            elif step:
                path.append(f"H{(previous[0] + x) / 2:.1f}V{y:.1f}H{x:.1f}")
            else:
                path.append(f"L{x:.1f},{y:.1f}")
            previous = (x, y)
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{s.color}">'
                f"<title>{escape(f'{categories[i]} {s.name}: {fmt(value, unit)}')}</title></circle>"
            )
        if path:
            parts.append(
                f'<path d="{"".join(path)}" fill="none" stroke="{s.color}" stroke-width="3" stroke-linejoin="round"/>'
            )
    parts.append(_x_labels(categories, left, slot, height - 10))
    parts.append("</svg>")
    return Markup("".join(parts))


def donut(
    segments: Sequence[Bar],
    *,
    title: str,
    center: str,
    caption: str = "",
    testid: str | None = None,
    size: int = 220,
    draw_center: bool = True,  # False when the page lays its own (selectable) text over the ring
) -> Markup:
    """A ring split by the segments' shares (e.g. OK / KO / NO_DECISION) with the headline figure inside."""
    total = sum(max(s.value, 0) for s in segments)
    shares = ", ".join(f"{s.label} {s.text or fmt(s.value)}" for s in segments)
    label = f"{title}: {center}" + (f" ({shares})" if total else " (nothing decided)")
    r, stroke = size / 2 - 18, 30
    c = size / 2
    circumference = 2 * math.pi * r
    parts = [
        _open(size, size, label, testid, "chart-donut"),
        f'<circle cx="{c}" cy="{c}" r="{r:.1f}" fill="none" stroke="{TRACK}" stroke-width="{stroke}"/>',
    ]
    offset = 0.0
    for segment in segments:
        if total <= 0 or segment.value <= 0:
            continue
        length = circumference * segment.value / total
        # Each arc starts where the previous ended; the ring starts at 12 o'clock and turns clockwise.
        parts.append(
            f'<circle cx="{c}" cy="{c}" r="{r:.1f}" fill="none" stroke="{segment.color}" stroke-width="{stroke}"'
            f' stroke-dasharray="{length:.2f} {circumference - length:.2f}" stroke-dashoffset="{-offset:.2f}"'
            f' transform="rotate(-90 {c} {c})"><title>{escape(f"{segment.label}: {segment.text or fmt(segment.value)}")}</title></circle>'
        )
        offset += length
    if draw_center:
        parts.append(_text(c, c + (4 if caption else 12), center, anchor="middle", size=36, weight="bold"))
        if caption:
            parts.append(_text(c, c + 30, caption, anchor="middle", size=16, fill="#475569"))
    parts.append("</svg>")
    return Markup("".join(parts))
