"""Image decoding, preprocessing (resize, normalise, quantise) and output decoding (classes, SSD, YOLO, NMS).

Everything here is pure NumPy/OpenCV on arrays, so it is unit-testable on crafted tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

from edge_model_serving.errors import InvalidImageError
from edge_model_serving.manifest import ModelManifest

FloatArray = npt.NDArray[np.float32]

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Decoded size cap: a tiny compressed file can claim a gigantic canvas (decompression bomb).
MAX_IMAGE_PIXELS = 100_000_000


def decode_image(data: bytes) -> npt.NDArray[np.uint8]:
    """Decode JPEG or PNG bytes to an HxWx3 BGR uint8 array (greyscale, RGBA and 16-bit converted)."""
    if not data:
        raise InvalidImageError("the request body is empty; send the image bytes (JPEG or PNG)")
    if not (data.startswith(_JPEG_MAGIC) or data.startswith(_PNG_MAGIC)):
        raise InvalidImageError("the body is not a JPEG or PNG image")
    if data.startswith(_PNG_MAGIC) and len(data) >= 24:
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if width * height > MAX_IMAGE_PIXELS:
            raise InvalidImageError(f"the image is {width}x{height}, larger than {MAX_IMAGE_PIXELS} pixels")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InvalidImageError("the image could not be decoded (truncated or corrupt JPEG/PNG)")
    if image.dtype == np.uint16:
        image = np.right_shift(image, 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise InvalidImageError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return cast(npt.NDArray[np.uint8], image)


@dataclass(frozen=True)
class InputSpec:
    """The model's image input, read from the interpreter's tensor details."""

    height: int
    width: int
    channels: int
    layout: Literal["NHWC", "NCHW"]
    dtype: type[np.generic]
    scale: float  # quantisation scale, 0.0 for float inputs
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0


@dataclass(frozen=True)
class Placement:
    """Where the original image landed inside the model input (to undo stretch or letterbox)."""

    orig_width: int
    orig_height: int
    input_width: int
    input_height: int
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def to_original(self, boxes_input_px: FloatArray) -> FloatArray:
        """Map xyxy boxes in model-input pixels to xyxy normalised to the original image, clipped to 0..1."""
        out = np.empty_like(boxes_input_px, dtype=np.float32)
        out[:, [0, 2]] = (boxes_input_px[:, [0, 2]] - self.pad_x) / self.scale_x / self.orig_width
        out[:, [1, 3]] = (boxes_input_px[:, [1, 3]] - self.pad_y) / self.scale_y / self.orig_height
        return np.clip(out, 0.0, 1.0)


class Preprocessor:
    """Turns a decoded BGR image into the model's input tensor: colour, resize, normalise, quantise.

    Normalisation and quantisation fold into one per-channel affine map `q = pixel * a + b`,
    computed once per model, so each request pays for a single multiply-add (or nothing at all
    when the map is the identity on uint8 pixels).
    """

    def __init__(self, spec: InputSpec, manifest: ModelManifest) -> None:
        self.spec = spec
        self.manifest = manifest
        self._a, self._b = self._affine()
        self._identity = spec.dtype is np.uint8 and np.all(self._a == 1.0) and np.all(self._b == 0.0)
        self._lut = self._lookup_table()

    def _lookup_table(self) -> npt.NDArray[Any]:
        """The affine map evaluated on all 256 pixel values, per channel: one cv2.LUT call per image.

        Quantised inputs get an 8-bit table (int8 stored as its uint8 bit pattern, viewed back after),
        float inputs a float32 table; either way the values equal the float formula, rounded and clipped.
        """
        pixels = np.arange(256, dtype=np.float32)[:, None]
        values = pixels * self._a[None, :] + self._b[None, :]  # [256, channels]
        spec = self.spec
        if spec.quantized:
            info = np.iinfo(spec.dtype)  # type: ignore[type-var]
            values = np.clip(np.rint(values), info.min, info.max).astype(spec.dtype).view(np.uint8)
        else:
            values = values.astype(np.float32)
        return np.ascontiguousarray(values.reshape(1, 256, -1))

    def _affine(self) -> tuple[FloatArray, FloatArray]:
        spec, norm = self.spec, self.manifest.normalization
        channels = 3 if spec.channels == 3 else 1
        if norm.auto and spec.quantized:
            info = np.iinfo(spec.dtype)  # type: ignore[type-var]
            step = (float(info.max) - float(info.min)) / 255.0
            return np.full(channels, step, np.float32), np.full(channels, float(info.min), np.float32)
        if norm.auto:  # float input: the usual [0, 1]
            mean, std = np.zeros(3, np.float32), np.full(3, 255.0, np.float32)
        else:
            # mean/std are listed in the manifest's colour order, which is also the tensor's channel order
            mean, std = np.asarray(norm.mean, np.float32), np.asarray(norm.std, np.float32)
        if channels == 1:
            mean, std = mean[:1].copy(), std[:1].copy()
        a: FloatArray = (1.0 / std).astype(np.float32)
        b: FloatArray = (-mean / std).astype(np.float32)
        if spec.quantized:
            a = (a / np.float32(spec.scale)).astype(np.float32)
            b = (b / np.float32(spec.scale) + np.float32(spec.zero_point)).astype(np.float32)
        return a, b

    def place(self, width: int, height: int) -> Placement:
        spec = self.spec
        if self.manifest.resize == "letterbox":
            ratio = min(spec.width / width, spec.height / height)
            new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
            pad_x, pad_y = (spec.width - new_w) // 2, (spec.height - new_h) // 2
            return Placement(
                width, height, spec.width, spec.height, new_w / width, new_h / height, pad_x, pad_y
            )
        return Placement(
            width, height, spec.width, spec.height, spec.width / width, spec.height / height, 0, 0
        )

    def __call__(self, image_bgr: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[Any], Placement]:
        spec = self.spec
        height, width = image_bgr.shape[:2]
        placement = self.place(width, height)
        new_w = round(width * placement.scale_x)
        new_h = round(height * placement.scale_y)
        resized: npt.NDArray[Any] = image_bgr
        if (new_w, new_h) != (width, height):
            resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if (new_w, new_h) != (spec.width, spec.height):
            left, top = int(placement.pad_x), int(placement.pad_y)
            fill = self.manifest.letterbox_fill
            resized = cv2.copyMakeBorder(
                resized,
                top,
                spec.height - new_h - top,
                left,
                spec.width - new_w - left,
                cv2.BORDER_CONSTANT,
                value=(fill, fill, fill),
            )
        pixels: npt.NDArray[Any]
        if spec.channels == 1:
            pixels = cv2.cvtColor(resized, cv2.COLOR_BGR2GRAY)[:, :, None]
        elif self.manifest.color_order == "RGB":
            pixels = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        else:
            pixels = resized
        tensor = self._to_tensor(pixels)
        if spec.layout == "NCHW":
            tensor = np.ascontiguousarray(tensor.transpose(2, 0, 1))
        return tensor[None, ...], placement

    def _to_tensor(self, pixels: npt.NDArray[Any]) -> npt.NDArray[Any]:
        if self._identity:
            return pixels
        out: npt.NDArray[Any]
        if pixels.shape[2] == 1:
            out = cv2.LUT(pixels[:, :, 0], self._lut[0, :, 0])[:, :, None]
        else:
            out = cv2.LUT(pixels, self._lut)
        if self.spec.quantized and self.spec.dtype is np.int8:
            out = out.view(np.int8)
        return out


def dequantize(tensor: npt.NDArray[np.generic], scale: float, zero_point: int) -> FloatArray:
    """Quantised output -> float; float outputs pass through as float32."""
    if scale == 0.0:
        return tensor.astype(np.float32, copy=False)
    return (tensor.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


# --- classification ----------------------------------------------------------------------------


def _softmax(x: FloatArray) -> FloatArray:
    e = np.exp(x - np.max(x))
    out: FloatArray = (e / np.sum(e)).astype(np.float32)
    return out


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    return out


def looks_like_probabilities(values: FloatArray) -> bool:
    """True when the vector is already a distribution (0..1 and summing to 1, within quantisation error)."""
    tolerance = 0.02 + 0.5 / 255 * values.size  # a uint8 softmax loses up to half a step per class
    return bool(
        np.all(values >= -1e-3) and np.all(values <= 1 + 1e-3) and abs(values.sum() - 1.0) <= tolerance
    )


def classification_scores(raw: FloatArray, activation: str) -> FloatArray:
    """Scores as probabilities; softmax is applied only to logits (or when the manifest asks)."""
    values = raw.reshape(-1).astype(np.float32)
    if activation == "softmax" or (activation == "auto" and not _in_unit_range(values)):
        return _softmax(values)
    if activation == "sigmoid":
        return _sigmoid(values)
    return np.clip(values, 0.0, 1.0)


def _in_unit_range(values: FloatArray) -> bool:
    return bool(np.all(values >= -1e-3) and np.all(values <= 1 + 1e-3))


# --- detection -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detections:
    """Detections after NMS: boxes xyxy in model-input pixels, scores, class indices; best first."""

    boxes: FloatArray
    scores: FloatArray
    classes: npt.NDArray[np.int64]

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def xywh_to_xyxy(boxes: FloatArray) -> FloatArray:
    half = boxes[:, 2:4] / 2
    return np.concatenate([boxes[:, 0:2] - half, boxes[:, 0:2] + half], axis=1)


def nms(
    boxes: FloatArray, scores: FloatArray, classes: npt.NDArray[np.int64], iou_threshold: float, max_out: int
) -> npt.NDArray[np.int64]:
    """Class-aware greedy NMS; returns kept indices, best score first.

    Boxes of different classes are shifted apart (the batched-NMS offset trick) so one pass over
    all classes never suppresses across classes. The loop runs once per *kept* box, bounded by max_out.
    """
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    span = float(np.max(boxes) - np.min(boxes)) + 1.0
    shifted = boxes.astype(np.float64) + (classes.astype(np.float64) * span)[:, None]
    x1, y1, x2, y2 = shifted.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_out:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        inter_w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        inter_h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = inter_w * inter_h
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


# Bound the NMS input: random or badly calibrated heads can put thousands of anchors over threshold.
MAX_NMS_CANDIDATES = 4096


def _select_and_nms(
    boxes_xywh: FloatArray,
    scores_all: FloatArray,
    box_scale: tuple[float, float],
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
) -> Detections:
    classes = np.argmax(scores_all, axis=1)
    scores = scores_all[np.arange(scores_all.shape[0]), classes]
    mask = scores >= score_threshold
    if not np.any(mask):
        return Detections.empty()
    boxes_xywh, scores, classes = boxes_xywh[mask], scores[mask], classes[mask]
    if scores.size > MAX_NMS_CANDIDATES:
        top = np.argpartition(-scores, MAX_NMS_CANDIDATES)[:MAX_NMS_CANDIDATES]
        boxes_xywh, scores, classes = boxes_xywh[top], scores[top], classes[top]
    boxes = xywh_to_xyxy(boxes_xywh) * np.asarray([*box_scale, *box_scale], np.float32)
    keep = nms(boxes, scores, classes.astype(np.int64), iou_threshold, max_detections)
    return Detections(
        boxes[keep].astype(np.float32), scores[keep].astype(np.float32), classes[keep].astype(np.int64)
    )


def _box_scale(boxes_xywh: FloatArray, box_format: str, input_size: tuple[int, int]) -> tuple[float, float]:
    """Multiplier that brings YOLO boxes to input pixels: exports differ (normalised or pixels)."""
    normalized = box_format == "normalized" or (
        box_format == "auto" and (boxes_xywh.size == 0 or float(np.max(np.abs(boxes_xywh))) <= 2.0)
    )
    return (float(input_size[0]), float(input_size[1])) if normalized else (1.0, 1.0)


def yolo_head_layout(shape: tuple[int, ...], num_classes: int) -> Literal["yolov5", "yolov8"] | None:
    """Which YOLO layout an output shape is for `num_classes` classes, or None if neither."""
    dims = [d for d in shape if d != 1] if len(shape) > 2 else list(shape)
    if len(dims) != 2:
        return None
    if num_classes + 4 in dims:
        return "yolov8"
    if num_classes + 5 in dims:
        return "yolov5"
    return None


def decode_yolo(
    output: FloatArray,
    layout: Literal["yolov5", "yolov8"],
    num_classes: int,
    input_size: tuple[int, int],
    box_format: str,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
) -> Detections:
    """Decode a YOLOv5 `[1,N,5+C]` or YOLOv8/11 `[1,4+C,N]` head (either axis order accepted)."""
    width = num_classes + (5 if layout == "yolov5" else 4)
    table = output.reshape(output.shape[-2:]) if output.ndim == 3 else output
    if table.shape[1] != width:
        table = table.T  # YOLOv8 exports are channel-first: [4+C, N]
    if table.shape[1] != width:
        raise ValueError(f"output {output.shape} does not fit {layout} with {num_classes} classes")
    boxes = np.ascontiguousarray(table[:, :4])
    # YOLOv5 scores are objectness x class probability; YOLOv8/11 have no objectness
    scores = table[:, 5:] * table[:, 4:5] if layout == "yolov5" else table[:, 4:]
    scale = _box_scale(boxes, box_format, input_size)
    return _select_and_nms(boxes, scores, scale, score_threshold, iou_threshold, max_detections)


def decode_ssd(
    boxes: FloatArray,
    classes: FloatArray,
    scores: FloatArray,
    count: FloatArray,
    input_size: tuple[int, int],
    score_threshold: float,
    max_detections: int,
) -> Detections:
    """Decode TFLite_Detection_PostProcess outputs (boxes are ymin, xmin, ymax, xmax normalised)."""
    n = int(np.clip(np.round(count.reshape(-1)[0]), 0, boxes.reshape(-1, 4).shape[0]))
    b = boxes.reshape(-1, 4)[:n]
    s = scores.reshape(-1)[:n]
    c = np.round(classes.reshape(-1)[:n]).astype(np.int64)
    keep = np.nonzero(s >= score_threshold)[0]
    keep = keep[np.argsort(-s[keep], kind="stable")][:max_detections]
    width, height = input_size
    xyxy = np.stack(
        [b[keep, 1] * width, b[keep, 0] * height, b[keep, 3] * width, b[keep, 2] * height], axis=1
    )
    return Detections(xyxy.astype(np.float32).reshape(-1, 4), s[keep].astype(np.float32), c[keep])
