"""Metrics for the model cards and the tests: accuracy and confusion, detection precision / recall at IoU 0.5.

The int8 models are evaluated through the model server's own code (`LoadedModel.predict` on JPEG
bytes): the figures in a model card are what the line will get, not what the training graph gets.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge_model_serving.model import LoadedModel
from edge_model_serving.registry import load_version
from edge_model_serving.schemas import ClassificationPrediction, DetectionPrediction


def load_served(folder: Path, name: str = "candidate") -> LoadedModel:
    return load_version(folder, name, 1, num_threads=1, pool_size=1)[0]


@dataclass
class ClassificationReport:
    labels: list[str]
    confusion: list[list[int]]  # rows: truth, columns: prediction
    per_kind_recall: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(np.sum(self.confusion))

    @property
    def accuracy(self) -> float:
        return float(np.trace(np.asarray(self.confusion)) / max(self.total, 1))


def classification_report(
    truth: npt.NDArray[np.int64],
    predicted: npt.NDArray[np.int64],
    labels: list[str],
    kinds: list[str] | None = None,
) -> ClassificationReport:
    confusion = np.zeros((len(labels), len(labels)), np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    report = ClassificationReport(labels, confusion.tolist())
    if kinds is not None:  # recall per defect kind (what share of each kind is caught)
        for kind in sorted(set(kinds)):
            idx = [i for i, k in enumerate(kinds) if k == kind]
            report.per_kind_recall[kind] = float(np.mean(truth[idx] == predicted[idx]))
    return report


def served_classification(model: LoadedModel, images: list[bytes]) -> npt.NDArray[np.int64]:
    out = []
    for image in images:
        prediction = model.predict(image).prediction
        assert isinstance(prediction, ClassificationPrediction)
        out.append(model.labels.index(prediction.label))
    return np.asarray(out, np.int64)


def box_iou(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """IoU matrix of xyxy boxes a [n, 4] x b [m, 4]."""
    if a.size == 0 or b.size == 0:
        return np.zeros((a.shape[0], b.shape[0]), np.float32)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    result: npt.NDArray[np.float32] = (inter / (area_a[:, None] + area_b[None, :] - inter + 1e-12)).astype(
        np.float32
    )
    return result


@dataclass
class DetectionReport:
    labels: list[str]
    true_positives: dict[str, int]
    false_positives: dict[str, int]
    false_negatives: dict[str, int]
    iou_threshold: float = 0.5

    def _sum(self, counts: dict[str, int]) -> int:
        return sum(counts.values())

    @property
    def precision(self) -> float:
        tp, fp = self._sum(self.true_positives), self._sum(self.false_positives)
        return tp / max(tp + fp, 1)

    @property
    def recall(self) -> float:
        tp, fn = self._sum(self.true_positives), self._sum(self.false_negatives)
        return tp / max(tp + fn, 1)

    def per_class(self) -> dict[str, tuple[float, float]]:
        out = {}
        for label in self.labels:
            tp, fp, fn = self.true_positives[label], self.false_positives[label], self.false_negatives[label]
            out[label] = (tp / max(tp + fp, 1), tp / max(tp + fn, 1))
        return out


def detection_report(
    predictions: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
    truths: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
    labels: list[str],
    iou_threshold: float = 0.5,
) -> DetectionReport:
    """Greedy one-to-one matching per image and class, best IoU first (the usual P/R at IoU 0.5)."""
    tp = dict.fromkeys(labels, 0)
    fp = dict.fromkeys(labels, 0)
    fn = dict.fromkeys(labels, 0)
    for (p_boxes, p_classes), (t_boxes, t_classes) in zip(predictions, truths, strict=True):
        for c, label in enumerate(labels):
            p, t = p_boxes[p_classes == c], t_boxes[t_classes == c]
            iou = box_iou(p, t)
            matched = 0
            while iou.size and iou.max() >= iou_threshold:
                i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
                iou[i, :], iou[:, j] = -1, -1
                matched += 1
            tp[label] += matched
            fp[label] += len(p) - matched
            fn[label] += len(t) - matched
    return DetectionReport(labels, tp, fp, fn, iou_threshold)


def served_detections(
    model: LoadedModel, images: list[bytes], score_threshold: float | None = None
) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]:
    return [
        (boxes, classes)
        for boxes, classes, _ in served_detections_with_scores(model, images, score_threshold)
    ]


def served_detections_with_scores(
    model: LoadedModel, images: list[bytes], score_threshold: float | None = None
) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
    out = []
    for image in images:
        prediction = model.predict(image, score_threshold=score_threshold).prediction
        assert isinstance(prediction, DetectionPrediction)
        boxes = np.asarray([d.box for d in prediction.detections], np.float32).reshape(-1, 4)
        classes = np.asarray([d.class_index for d in prediction.detections], np.int64)
        scores = np.asarray([d.score for d in prediction.detections], np.float32)
        out.append((boxes, classes, scores))
    return out


def served_latency_ms(model: LoadedModel, images: list[bytes], repeats: int = 3) -> dict[str, float]:
    """Median in-process latency of the served path (decode + preprocess + invoke + decode), one thread."""
    for image in images[:3]:
        model.predict(image)
    totals, inference = [], []
    for _ in range(repeats):
        for image in images:
            t0 = time.perf_counter()
            result = model.predict(image)
            totals.append((time.perf_counter() - t0) * 1000)
            inference.append(result.timings_ms.inference)
    return {
        "total_p50_ms": round(statistics.median(totals), 2),
        "inference_p50_ms": round(statistics.median(inference), 2),
    }
