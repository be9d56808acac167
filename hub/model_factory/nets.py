"""The two networks, small enough for a Raspberry Pi: an OK/KO classifier and an anchor-free defect detector.

Both take raw RGB pixels (0..255 floats; they rescale inside), so the int8 input quantisation is
exact (scale 1) and the server's manifest says `normalization: raw`.

The detector is a one-level, anchor-free head at stride 8 (small defects such as a missing eye are
a few cells wide), with a light FPN bringing stride-16/32 context for large boxes (a wrong-colour
duck). Its export emits the YOLOv8 layout `[1, 4 + C, N]` with normalised xywh boxes and sigmoid
class scores, which the model server decodes with its `yolov8` decoder (class-aware NMS included).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf
from tensorflow import keras

layers = keras.layers

DETECTOR_STRIDE = 8
BOX_BASE = 0.1  # w = BOX_BASE * exp(t): the head's neutral box is 10 % of the input


def _conv(x: Any, filters: int, stride: int = 1, kernel: int = 3) -> Any:
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU(max_value=6.0)(x)  # ReLU6: a bounded range quantises well


def build_classifier(size: int, classes: int = 2) -> keras.Model:
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    for filters, stride in [(16, 2), (32, 2), (32, 1), (64, 2), (64, 1), (96, 2), (96, 1), (128, 2)]:
        x = _conv(x, filters, stride)
    # Max pooling keeps a small local defect (a stain, a missing eye) from being averaged away.
    x = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(classes, activation="softmax", name="scores")(x)
    return keras.Model(inputs, outputs, name="duck_classifier")


def build_detector(size: int, num_classes: int) -> keras.Model:
    """Raw head output [B, G*G, 4 + C] (pre-activation), G = size / 8."""
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    x = _conv(x, 16, 2)  # /2
    x = _conv(x, 32, 2)  # /4
    x = _conv(x, 48, 2)  # /8
    p3 = _conv(x, 48)
    x = _conv(p3, 80, 2)  # /16
    p4 = _conv(x, 80)
    x = _conv(p4, 128, 2)  # /32
    p5 = _conv(x, 128)
    up = layers.UpSampling2D(interpolation="nearest")(p5)
    f4 = _conv(layers.Concatenate()([up, p4]), 80, kernel=1)
    f4 = _conv(f4, 80)
    up = layers.UpSampling2D(interpolation="nearest")(f4)
    f3 = _conv(layers.Concatenate()([up, p3]), 64, kernel=1)
    f3 = _conv(f3, 64)
    f3 = _conv(f3, 64)
    head = layers.Conv2D(4 + num_classes, 1, name="head")(f3)
    grid = size // DETECTOR_STRIDE
    outputs = layers.Reshape((grid * grid, 4 + num_classes), name="raw")(head)
    return keras.Model(inputs, outputs, name="duck_detector")


def init_class_bias(model: keras.Model, prior: float = 0.01) -> None:
    """Start class scores near `prior` (focal-loss practice): most cells are background."""
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    bias[4:] = -np.log((1 - prior) / prior)
    head.set_weights([kernel, bias])


def grid_centres(size: int) -> npt.NDArray[np.float32]:
    """[N, 2] cell indices (x, y) in row-major order, the order of the head's outputs."""
    grid = size // DETECTOR_STRIDE
    ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    return np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1).astype(np.float32)


def decode_head(raw: Any, size: int) -> tuple[Any, Any]:
    """Raw head -> (boxes xywh normalised to the input [.., N, 4], class scores [.., N, C]). TF or NumPy in."""
    grid = size // DETECTOR_STRIDE
    cells = tf.constant(grid_centres(size))
    raw = tf.convert_to_tensor(raw)
    xy = (cells + tf.sigmoid(raw[..., 0:2]) * 2.0 - 0.5) / grid
    wh = BOX_BASE * tf.exp(tf.clip_by_value(raw[..., 2:4], -4.0, 2.5))
    return tf.concat([xy, wh], axis=-1), tf.sigmoid(raw[..., 4:])


def detection_targets(
    boxes: npt.NDArray[np.float32], classes: npt.NDArray[np.int64], size: int, num_classes: int
) -> npt.NDArray[np.float32]:
    """Dense targets [N, 4 + C + 1]: box xyxy, one-hot class, positive flag.

    Each object is assigned to the cell holding its centre and the two neighbours nearest to that
    centre (as YOLOv5 does), so even a defect a few pixels wide has three cells learning it.
    Where objects compete for a cell, the smaller one wins: small defects are the hard ones.
    """
    grid = size // DETECTOR_STRIDE
    target = np.zeros((grid * grid, 4 + num_classes + 1), np.float32)
    area_taken = np.full(grid * grid, np.inf, np.float32)
    for box, cls in zip(boxes, classes, strict=True):
        cx, cy = (box[0] + box[2]) / 2 * grid, (box[1] + box[3]) / 2 * grid
        area = float((box[2] - box[0]) * (box[3] - box[1]))
        i, j = int(np.clip(cy, 0, grid - 1)), int(np.clip(cx, 0, grid - 1))
        fx, fy = cx - j, cy - i
        cells = [(i, j), (i, j - 1 if fx < 0.5 else j + 1), (i - 1 if fy < 0.5 else i + 1, j)]
        for ci, cj in cells:
            if not (0 <= ci < grid and 0 <= cj < grid):
                continue
            n = ci * grid + cj
            # the centre must stay reachable by the head's offset range (-0.5 .. 1.5 cells)
            if not (-0.5 <= cx - cj <= 1.5 and -0.5 <= cy - ci <= 1.5) or area > area_taken[n]:
                continue
            area_taken[n] = area
            target[n, :4] = box
            target[n, 4 : 4 + num_classes] = 0.0
            target[n, 4 + int(cls)] = 1.0
            target[n, -1] = 1.0
    return target


def _xywh_to_xyxy(b: Any) -> Any:
    half = b[..., 2:4] / 2
    return tf.concat([b[..., 0:2] - half, b[..., 0:2] + half], axis=-1)


def _giou(a: Any, b: Any) -> Any:
    """Generalised IoU of xyxy boxes (elementwise)."""
    inter_wh = tf.maximum(tf.minimum(a[..., 2:], b[..., 2:]) - tf.maximum(a[..., :2], b[..., :2]), 0.0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter + 1e-9
    hull_wh = tf.maximum(a[..., 2:], b[..., 2:]) - tf.minimum(a[..., :2], b[..., :2])
    hull = hull_wh[..., 0] * hull_wh[..., 1] + 1e-9
    iou = inter / union
    return iou - (hull - union) / hull


def detection_loss(size: int, num_classes: int) -> Any:
    """Focal loss on classes over all cells + (1 - GIoU) on the positive cells' boxes."""

    def loss(y_true: Any, y_pred: Any) -> Any:
        positive = y_true[..., -1]
        n_pos = tf.maximum(tf.reduce_sum(positive), 1.0)
        boxes_xywh, _ = decode_head(y_pred, size)
        giou = _giou(_xywh_to_xyxy(boxes_xywh), y_true[..., :4])
        box_loss = tf.reduce_sum((1.0 - giou) * positive) / n_pos
        logits = y_pred[..., 4:]
        labels = y_true[..., 4 : 4 + num_classes]
        prob = tf.sigmoid(logits)
        ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        p_t = labels * prob + (1 - labels) * (1 - prob)
        alpha = labels * 0.25 + (1 - labels) * 0.75
        cls_loss = tf.reduce_sum(alpha * (1 - p_t) ** 2 * ce) / n_pos
        return cls_loss + 2.0 * box_loss

    return loss


def yolov8_export_fn(model: keras.Model, size: int) -> Any:
    """A tf.function [1, S, S, 3] raw pixels -> [1, 4 + C, N]: the layout the server's yolov8 decoder reads."""

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="image")])
    def serve(image: Any) -> Any:
        boxes, scores = decode_head(model(image, training=False), size)
        return tf.transpose(tf.concat([boxes, scores], axis=-1), [0, 2, 1])

    return serve


def classifier_export_fn(model: keras.Model, size: int) -> Any:
    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="image")])
    def serve(image: Any) -> Any:
        return model(image, training=False)

    return serve


def defect_classifier_export_fn(model: keras.Model, size: int, threshold: float) -> Any:
    """The detector as an OK/KO classifier: [1, 2] = (p_ok, p_ko), p_ko from the strongest defect score.

    The strongest class score over all cells is remapped piecewise-linearly so that the detector's own
    threshold lands on 0.5 (argmax then agrees with the detector), using only ops that run in int8
    (reduce-max, multiply, add, minimum/maximum): no log or division in the graph.
    """
    low, high = 0.5 / threshold, 0.5 / (1.0 - threshold)
    pick = tf.minimum if threshold <= 0.5 else tf.maximum

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="image")])
    def serve(image: Any) -> Any:
        _, scores = decode_head(model(image, training=False), size)
        strongest = tf.reduce_max(scores, axis=[1, 2])
        ko = pick(strongest * low, 0.5 + (strongest - threshold) * high)
        return tf.stack([1.0 - ko, ko], axis=-1)

    return serve
