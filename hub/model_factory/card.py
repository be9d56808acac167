"""Model cards: a README.md beside each model (data, training, figures) and its confusion-matrix image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

CARD_DATA = "card.json"  # the figures of the card, machine-readable (the tests check cards against models)


def confusion_image(confusion: list[list[int]], labels: list[str], title: str, path: Path) -> None:
    """A readable confusion matrix drawn with OpenCV (no plotting stack needed on the hub)."""
    n = len(labels)
    font = cv2.FONT_HERSHEY_SIMPLEX
    label_w = max(cv2.getTextSize(label, font, 0.5, 1)[0][0] for label in labels)
    cell = max(110, label_w + 16)
    left, top = 60 + label_w + 12, 90
    width, height = left + n * cell + 30, top + n * cell + 30
    image = np.full((height, width, 3), 255, np.uint8)
    matrix = np.asarray(confusion, np.float64)
    row_sums = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    cv2.putText(image, title, (10, 30), font, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(
        image, "predicted", (left + n * cell // 2 - 45, top - 35), font, 0.55, (60, 60, 60), 1, cv2.LINE_AA
    )
    cv2.putText(image, "truth", (8, top + n * cell // 2), font, 0.55, (60, 60, 60), 1, cv2.LINE_AA)
    for j, label in enumerate(labels):
        cv2.putText(image, label, (left + j * cell + 8, top - 10), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for i, label in enumerate(labels):
        cv2.putText(image, label, (60, top + i * cell + cell // 2 + 5), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        for j in range(n):
            share = matrix[i, j] / row_sums[i, 0]
            good = i == j
            shade = int(255 - 160 * share)
            color = (shade, 255, shade) if good else (shade, shade, 255)
            x0, y0 = left + j * cell, top + i * cell
            cv2.rectangle(image, (x0, y0), (x0 + cell, y0 + cell), color, -1)
            cv2.rectangle(image, (x0, y0), (x0 + cell, y0 + cell), (120, 120, 120), 1)
            text = f"{int(matrix[i, j])}"
            cv2.putText(image, text, (x0 + 20, y0 + cell // 2), font, 0.8, (0, 0, 0), 2, cv2.LINE_AA)
            cv2.putText(
                image, f"{share:.1%}", (x0 + 20, y0 + cell // 2 + 28), font, 0.5, (40, 40, 40), 1, cv2.LINE_AA
            )
    cv2.imwrite(str(path), image)


def write_card(folder: Path, title: str, sections: list[tuple[str, str]], data: dict[str, Any]) -> None:
    lines = [f"# {title}", ""]
    for heading, body in sections:
        lines += [f"## {heading}", "", body.strip(), ""]
    (folder / "README.md").write_text("\n".join(lines))
    (folder / CARD_DATA).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def table(rows: list[list[str]], header: list[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)
