"""Contact sheets: many rendered items on one image, ground-truth boxes drawn, for humans to check."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from hub.duckline.synth import CAMERAS, DEFECT_KINDS, Box, Frame, render_item

Image = npt.NDArray[np.uint8]
_LABEL_HEIGHT = 22
_DUCK_COLOUR = (80, 220, 80)
_DEFECT_COLOUR = (40, 40, 255)


def _rect(image: Image, box: Box, colour: tuple[int, int, int]) -> tuple[int, int]:
    h, w = image.shape[:2]
    x0, y0 = round(box[0] * w), round(box[1] * h)
    cv2.rectangle(image, (x0, y0), (round(box[2] * w) - 1, round(box[3] * h) - 1), colour, 1)
    return x0, y0


def annotate(frame: Frame, scale: float) -> Image:
    """The frame resized by `scale`, duck box in green, defect boxes in red with their kind."""
    image = cast(Image, cv2.resize(frame.image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    _rect(image, frame.duck_box, _DUCK_COLOUR)
    for defect in frame.defects:
        x0, y0 = _rect(image, defect.box, _DEFECT_COLOUR)
        cv2.putText(
            image,
            defect.kind,
            (x0, max(y0 - 3, 10)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            _DEFECT_COLOUR,
            1,
            cv2.LINE_AA,
        )
    return image


def contact_sheet(seed: int, count: int, columns: int = 2, scale: float = 0.5) -> Image:
    """`count` items (indices 0..count-1) cycling through OK and every defect kind; top and side side by side."""
    schedule: list[str | None] = [None, *DEFECT_KINDS]
    cells = []
    for index in range(count):
        kind = schedule[index % len(schedule)]
        item = render_item(seed, index, kind)
        row = np.hstack([annotate(item.frames[c], scale) for c in CAMERAS])
        label = np.full((_LABEL_HEIGHT, row.shape[1], 3), 32, np.uint8)
        text = f"#{index}  {'OK' if kind is None else 'KO ' + kind}   (top | side)"
        cv2.putText(label, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (235, 235, 235), 1, cv2.LINE_AA)
        cells.append(
            cv2.copyMakeBorder(
                np.vstack([label, row]), 0, 4, 0, 4, cv2.BORDER_CONSTANT, value=(255, 255, 255)
            )
        )
    if not cells:
        raise ValueError("count must be at least 1")
    blank = np.full_like(cells[0], 255)
    cells += [blank] * (-len(cells) % columns)
    rows = [np.hstack(cells[i : i + columns]) for i in range(0, len(cells), columns)]
    return np.vstack(rows)


def write_sheet(out: Path, seed: int, count: int, columns: int = 2) -> None:
    """Write the contact sheet as PNG (or any format OpenCV infers from the suffix)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), contact_sheet(seed, count, columns)):
        raise RuntimeError(f"could not write {out}")
