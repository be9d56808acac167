"""Writing rendered ducks to disk: a training dataset in the standard layouts, and demo frames for replay.

Layouts are the ones other tools already read: class folders for classification, YOLO text labels
plus an Ultralytics `data.yaml` for detection, and a `truth.jsonl` with everything in one place.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from hub.duckline.synth import CAMERAS, DEFECT_KINDS, Box, Frame, Item, render_item

SPLITS: tuple[str, ...] = ("train", "val", "test")
JPEG_QUALITY = 92
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_SPLIT_STREAM, _DEMO_STREAM = 11, 12


def split_of(seed: int, index: int, splits: tuple[float, float, float]) -> str:
    """The item's split, from its index alone (so both cameras of an item land together).

    A golden-ratio sequence spreads consecutive indices evenly over 0..1, so even a dozen items
    follow the requested proportions closely; the seed shifts the sequence.
    """
    offset = float(np.random.default_rng([seed, _SPLIT_STREAM]).random())
    u = (offset + index * _GOLDEN) % 1.0
    edge = 0.0
    for name, share in zip(SPLITS, splits, strict=True):
        edge += share
        if u < edge:
            return name
    return SPLITS[-1]


def encode_jpeg(image: npt.NDArray[np.uint8]) -> bytes:
    """JPEG bytes at the project's quality."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _box(box: Box) -> list[float]:
    return [round(v, 6) for v in box]


def _truth(frame: Frame, item: Item, seed: int, file: str) -> dict[str, Any]:
    return {
        "file": file,
        "camera": frame.camera,
        "ok": frame.ok,
        "defect_kind": item.defect_kind,
        "defects": [{"kind": d.kind, "box": _box(d.box)} for d in frame.defects],
        "duck_box": _box(frame.duck_box),
        "seed": seed,
        "index": item.index,
    }


def yolo_lines(frame: Frame) -> str:
    """YOLO label text: `<class_id> <cx> <cy> <w> <h>` per defect, normalised; empty for an OK frame."""
    lines = []
    for d in frame.defects:
        x0, y0, x1, y1 = d.box
        cls = DEFECT_KINDS.index(d.kind)
        lines.append(f"{cls} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}\n")
    return "".join(lines)


def _data_yaml(root: Path) -> str:
    # Written by hand: the format is tiny and fixed, and key order matters to human readers.
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(DEFECT_KINDS))
    return (
        f"path: {json.dumps(str(root.resolve()))}\n"
        "train: images/train\nval: images/val\ntest: images/test\n"
        f"nc: {len(DEFECT_KINDS)}\nnames:\n{names}"
    )


def write_dataset(
    out: Path,
    count: int,
    seed: int,
    ko_fraction: float = 0.5,
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> dict[str, int]:
    """`count` items x 2 cameras in the classification, detection (YOLO) and truth.jsonl layouts.

    out/classification/{split}/{ok,ko}/{index:05d}_{camera}.jpg
    out/detection/images/{split}/{index:05d}_{camera}.jpg and labels/{split}/{index:05d}_{camera}.txt
    out/detection/data.yaml, out/truth.jsonl (one line per image).
    Returns the number of images per "split/class", e.g. {"train/ok": 812, ...}.
    """
    if count < 0:
        raise ValueError("count must be non-negative")
    if any(s < 0 for s in splits) or not math.isclose(sum(splits), 1.0, abs_tol=1e-6):
        raise ValueError("splits must be three non-negative shares adding up to 1")
    detection = out / "detection"
    for split in SPLITS:
        for cls in ("ok", "ko"):
            (out / "classification" / split / cls).mkdir(parents=True, exist_ok=True)
        (detection / "images" / split).mkdir(parents=True, exist_ok=True)
        (detection / "labels" / split).mkdir(parents=True, exist_ok=True)
    (detection / "data.yaml").write_text(_data_yaml(detection))
    counts = {f"{split}/{cls}": 0 for split in SPLITS for cls in ("ok", "ko")}
    with (out / "truth.jsonl").open("w") as truth:
        for index in range(count):
            item = render_item(seed, index, "random", ko_fraction)
            split = split_of(seed, index, splits)
            for camera in CAMERAS:
                frame = item.frames[camera]
                name = f"{index:05d}_{camera}"
                cls = "ok" if frame.ok else "ko"
                data = encode_jpeg(frame.image)
                # Two plain copies rather than links: portable to every filesystem and archive format.
                (out / "classification" / split / cls / f"{name}.jpg").write_bytes(data)
                image_file = f"detection/images/{split}/{name}.jpg"
                (out / image_file).write_bytes(data)
                (detection / "labels" / split / f"{name}.txt").write_text(yolo_lines(frame))
                record = _truth(frame, item, seed, image_file)
                record["split"] = split
                record["classification_file"] = f"classification/{split}/{cls}/{name}.jpg"
                truth.write(json.dumps(record) + "\n")
                counts[f"{split}/{cls}"] += 1
    return counts


def demo_schedule(count: int, seed: int, ko_share: float = 0.3) -> list[str | None]:
    """Which defect each demo item gets: about 70 % OK, every kind at least once when count allows."""
    n_ko = min(count, max(len(DEFECT_KINDS), round(count * ko_share)))
    rng = np.random.default_rng([seed, _DEMO_STREAM])
    kinds: list[str | None] = [DEFECT_KINDS[i % len(DEFECT_KINDS)] for i in range(n_ko)]
    kinds += [None] * (count - n_ko)
    return [kinds[int(i)] for i in rng.permutation(count)]


def write_demo_frames(out: Path, count: int, seed: int) -> None:
    """out/top/{i:04d}.jpg, out/side/{i:04d}.jpg (same i = same duck) and out/truth.jsonl."""
    if count < 0:
        raise ValueError("count must be non-negative")
    for camera in CAMERAS:
        (out / camera).mkdir(parents=True, exist_ok=True)
    with (out / "truth.jsonl").open("w") as truth:
        for i, kind in enumerate(demo_schedule(count, seed)):
            item = render_item(seed, i, kind)
            for camera in CAMERAS:
                frame = item.frames[camera]
                file = f"{camera}/{i:04d}.jpg"
                (out / file).write_bytes(encode_jpeg(frame.image))
                truth.write(json.dumps(_truth(frame, item, seed, file)) + "\n")
