"""Datasets in their standard layouts, turned into arrays exactly as the model server will feed the model.

Training uses the server's own Preprocessor (decode, colour order, resize or letterbox), so a model
never sees at serving time an image prepared differently from the ones it learnt on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge_model_serving.manifest import ModelManifest
from edge_model_serving.processing import InputSpec, Placement, Preprocessor, decode_image

CLASSES = ("ok", "ko")


def make_preprocessor(size: int, task: str, labels: list[str], resize: str) -> Preprocessor:
    """Raw 0..255 RGB float pixels at `size`x`size`: the models rescale inside (see nets.py)."""
    extra = {"decoder": "yolov8"} if task == "detection" else {}
    manifest = ModelManifest.model_validate(
        {"task": task, "labels": labels, "normalization": "raw", "resize": resize, **extra}
    )
    return Preprocessor(InputSpec(size, size, 3, "NHWC", np.float32, 0.0, 0), manifest)


def prepare(path_or_bytes: Path | bytes, pre: Preprocessor) -> tuple[npt.NDArray[np.uint8], Placement]:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    tensor, placement = pre(decode_image(data))
    return tensor[0].astype(np.uint8), placement  # integral values: uint8 halves the memory


@dataclass
class ClassificationSet:
    images: npt.NDArray[np.uint8]  # [N, H, W, 3] RGB
    labels: npt.NDArray[np.int64]  # index into CLASSES
    files: list[Path]


def load_classification(root: Path, split: str, size: int, resize: str = "stretch") -> ClassificationSet:
    """`root/<split>/<class>/*.jpg` (class folders, the usual layout)."""
    pre = make_preprocessor(size, "classification", list(CLASSES), resize)
    images, labels, files = [], [], []
    for class_index, name in enumerate(CLASSES):
        for path in sorted((root / split / name).glob("*.jpg")):
            images.append(prepare(path, pre)[0])
            labels.append(class_index)
            files.append(path)
    if not images:
        raise FileNotFoundError(f"no images under {root / split}/{{{','.join(CLASSES)}}}")
    return ClassificationSet(np.stack(images), np.asarray(labels, np.int64), files)


@dataclass
class DetectionSet:
    images: npt.NDArray[np.uint8]  # [N, S, S, 3] RGB, letterboxed
    boxes: list[npt.NDArray[np.float32]]  # per image [k, 4] xyxy normalised to the MODEL INPUT
    classes: list[npt.NDArray[np.int64]]  # per image [k]
    original_boxes: list[npt.NDArray[np.float32]]  # per image [k, 4] xyxy normalised to the original image
    files: list[Path]
    placements: list[Placement]


def read_yolo_labels(path: Path) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """YOLO txt: `class cx cy w h` normalised; returns classes and xyxy boxes."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
    table = np.asarray(rows, np.float32)
    cx, cy, w, h = table[:, 1], table[:, 2], table[:, 3], table[:, 4]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    return table[:, 0].astype(np.int64), boxes


def to_input_space(boxes: npt.NDArray[np.float32], placement: Placement) -> npt.NDArray[np.float32]:
    """Original-image normalised xyxy -> model-input normalised xyxy (the inverse of Placement.to_original)."""
    out = np.empty_like(boxes)
    out[:, [0, 2]] = (boxes[:, [0, 2]] * placement.orig_width * placement.scale_x + placement.pad_x) / (
        placement.input_width
    )
    out[:, [1, 3]] = (boxes[:, [1, 3]] * placement.orig_height * placement.scale_y + placement.pad_y) / (
        placement.input_height
    )
    return out


def load_detection(root: Path, split: str, size: int, labels: list[str]) -> DetectionSet:
    """`root/images/<split>/*.jpg` + `root/labels/<split>/*.txt` (YOLO format)."""
    pre = make_preprocessor(size, "detection", labels, "letterbox")
    out = DetectionSet(np.zeros((0, size, size, 3), np.uint8), [], [], [], [], [])
    images = []
    for path in sorted((root / "images" / split).glob("*.jpg")):
        image, placement = prepare(path, pre)
        classes, boxes = read_yolo_labels(root / "labels" / split / (path.stem + ".txt"))
        images.append(image)
        out.boxes.append(to_input_space(boxes, placement))
        out.original_boxes.append(boxes)
        out.classes.append(classes)
        out.files.append(path)
        out.placements.append(placement)
    if not images:
        raise FileNotFoundError(f"no images under {root / 'images' / split}")
    out.images = np.stack(images)
    return out


def jpeg(image_bgr: npt.NDArray[np.uint8], quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
