"""Training runs: classifier and detector, from datasets in the standard layouts, to model folders with cards.

Each run: train (fixed seeds, deterministic ops), pick the threshold on the validation split,
quantise to full int8 with a representative sample of the training images, evaluate the float
model and the served int8 model on a held-out set, and write the model folder and its card.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf
from tensorflow import keras

from edge_model_serving.processing import decode_yolo
from hub.model_factory import card, nets
from hub.model_factory.data import (
    CLASSES,
    ClassificationSet,
    DetectionSet,
    load_classification,
    load_detection,
)
from hub.model_factory.evaluate import (
    ClassificationReport,
    classification_report,
    detection_report,
    load_served,
    served_classification,
    served_detections,
    served_detections_with_scores,
    served_latency_ms,
)
from hub.model_factory.export import to_int8_tflite, write_model_folder

REPRESENTATIVE_FRAMES = 400


def set_determinism(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@dataclass(frozen=True)
class HeldOut:
    """A held-out set: the original JPEG bytes (for the served model) and the defect kind of each image."""

    root: Path
    seed: int

    def truth(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.root / "truth.jsonl").read_text().splitlines() if line]


def _representative(images: npt.NDArray[np.uint8], count: int, seed: int) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    return images[rng.choice(len(images), size=min(count, len(images)), replace=False)]


def _environment() -> str:
    return (
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {platform.machine()}, {os.cpu_count()} CPUs"
    )


# --- classifier ---------------------------------------------------------------------------------


def train_classifier(
    data: Path, heldout: HeldOut, out: Path, *, size: int = 224, epochs: int = 14, seed: int = 7
) -> dict[str, Any]:
    set_determinism(seed)
    started = time.perf_counter()
    train = load_classification(data / "classification", "train", size)
    val = load_classification(data / "classification", "val", size)
    test = held_out_classification(heldout, size)
    model = nets.build_classifier(size, len(CLASSES))
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(2e-3, epochs * (len(train.labels) // 32 + 1))
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        train.images.astype(np.float32),
        train.labels,
        batch_size=32,
        epochs=epochs,
        shuffle=True,
        validation_data=(val.images.astype(np.float32), val.labels),
        verbose=2,
    )
    train_seconds = time.perf_counter() - started

    float_pred = np.argmax(model.predict(test.images.astype(np.float32), batch_size=64, verbose=0), axis=1)
    tflite = to_int8_tflite(
        nets.classifier_export_fn(model, size), _representative(train.images, REPRESENTATIVE_FRAMES, seed)
    )
    manifest = {
        "task": "classification",
        "labels": list(CLASSES),
        "color_order": "RGB",
        "normalization": "raw",
        "resize": "stretch",
        "description": "Plastic duck OK/KO classifier (one camera frame in, ok or ko out).",
    }
    write_model_folder(out, tflite, manifest)
    float_report, int8_report, latency = _evaluate_classifier(out, test, float_pred, heldout)
    data_card = {
        "model": "duck-classifier",
        "task": "classification",
        "input": [1, size, size, 3],
        "tflite_bytes": len(tflite),
        "tflite_sha256": _sha256(tflite),
        "train_images": len(train.labels),
        "val_images": len(val.labels),
        "heldout_images": len(test.labels),
        "heldout_seed": heldout.seed,
        "epochs": epochs,
        "train_seconds": round(train_seconds, 1),
        "float_accuracy": round(float_report.accuracy, 4),
        "int8_accuracy": round(int8_report.accuracy, 4),
        "confusion": int8_report.confusion,
        "per_kind_recall": {k: round(v, 4) for k, v in int8_report.per_kind_recall.items()},
        "latency": latency,
        "final_val_accuracy": round(float(history.history["val_accuracy"][-1]), 4),
    }
    _classifier_card(out, data_card, data)
    return data_card


def _evaluate_classifier(
    out: Path, test: ClassificationSet, float_pred: npt.NDArray[np.int64], heldout: HeldOut
) -> tuple[ClassificationReport, ClassificationReport, dict[str, float]]:
    """Float predictions as given; int8 through the model server's code on the JPEG files; confusion image."""
    served = load_served(out)
    files = [f.read_bytes() for f in test.files]
    int8_pred = served_classification(served, files)
    kinds = _kinds(heldout, test.files)
    float_report = classification_report(test.labels, float_pred, list(CLASSES), kinds)
    int8_report = classification_report(test.labels, int8_pred, list(CLASSES), kinds)
    latency = served_latency_ms(served, files[:40])
    card.confusion_image(
        int8_report.confusion, list(CLASSES), "duck-classifier (int8, held-out)", out / "confusion_matrix.png"
    )
    return float_report, int8_report, latency


def _merge(sets: list[ClassificationSet]) -> ClassificationSet:
    return ClassificationSet(
        np.concatenate([s.images for s in sets]),
        np.concatenate([s.labels for s in sets]),
        [f for s in sets for f in s.files],
    )


def _kinds(heldout: HeldOut, files: list[Path]) -> list[str]:
    by_name = {Path(t["file"]).name: (t.get("defect_kind") or "ok") for t in heldout.truth()}
    return [by_name.get(f.name, "ok") for f in files]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _classifier_training_text(d: dict[str, Any]) -> str:
    if d.get("architecture") == "detector trunk + strongest-defect head":
        return (
            "The trunk of the duck-detector (trained with the defect boxes as supervision, see its card: "
            f"{d['epochs']} epochs, {d['train_seconds']} s on {_environment()}) with a classification head: the "
            "strongest defect score over the frame, remapped so that the detector's threshold "
            f"({d['decision_threshold']}) is the 0.5 decision point, gives p(ko). Box supervision finds a "
            "missing eye a few pixels wide far faster than OK/KO labels alone; for datasets with verdicts only, "
            "`python -m hub.model_factory classifier` trains a plain image-level CNN instead. Quantised to full "
            f"int8 (int8 input and output) with {REPRESENTATIVE_FRAMES} training frames as the representative dataset."
        )
    return (
        f"A {d['input'][1]}-pixel ReLU6 CNN (8 conv layers, average + max pooling), Adam with cosine decay, "
        f"{d['epochs']} epochs, fixed seeds and deterministic ops; {d['train_seconds']} s on {_environment()}. "
        f"Quantised to full int8 (int8 input and output) with {REPRESENTATIVE_FRAMES} training frames as the "
        "representative dataset."
    )


def _classifier_card(out: Path, d: dict[str, Any], data: Path) -> None:
    rows = [[k, f"{v:.1%}"] for k, v in sorted(d["per_kind_recall"].items())]
    sections = [
        (
            "What it does",
            "Says whether one camera frame of a plastic duck shows a good part (`ok`) or a defect "
            f"(`ko`). Input: a frame of any size ({d.get('resize', 'stretch')}ed to "
            f"{d['input'][1]}x{d['input'][2]} RGB), output: the probability of each label.",
        ),
        (
            "Data",
            f"Synthetic duck line (`python -m hub.duckline`), top and side cameras, half the parts with one "
            f"of five defects. Training: {d['train_images']} frames, validation {d['val_images']} "
            f"(dataset `{data.name}`). Held-out evaluation: {d['heldout_images']} frames generated with a "
            f"different seed ({d['heldout_seed']}).",
        ),
        ("Training", _classifier_training_text(d)),
        (
            "Accuracy on the held-out set",
            card.table(
                [
                    ["float (Keras)", f"{d['float_accuracy']:.2%}"],
                    ["int8 (served, .tflite)", f"{d['int8_accuracy']:.2%}"],
                ],
                ["model", "accuracy"],
            )
            + "\n\nThe int8 figures are measured through the model server's own code on the JPEG files.\n\n"
            "Recall per kind (share of frames of that kind given the right answer):\n\n"
            + card.table(rows, ["kind", "recall"]),
        ),
        (
            "Confusion matrix (int8, held-out)",
            "![confusion matrix](confusion_matrix.png)\n\n"
            + card.table(
                [[CLASSES[i], *[str(v) for v in row]] for i, row in enumerate(d["confusion"])],
                ["truth \\ predicted", *CLASSES],
            ),
        ),
        (
            "Latency",
            f"Served path in process (decode a 640x480 JPEG, preprocess, invoke, decode), one thread, "
            f"median: {d['latency']['total_p50_ms']} ms, of which inference {d['latency']['inference_p50_ms']} ms "
            f"({_environment()}). A Raspberry Pi 4 is roughly 10-20x slower per core.",
        ),
        (
            "Files",
            f"`model.tflite` ({d['tflite_bytes']} bytes, sha256 `{d['tflite_sha256'][:16]}...`), `model.yaml` "
            "(how the server feeds it), `card.json` (these figures), `confusion_matrix.png`.",
        ),
    ]
    card.write_card(out, "duck-classifier", sections, d)


# --- detector -----------------------------------------------------------------------------------


def _float_detections(
    model: keras.Model, data: DetectionSet, size: int, labels: list[str], threshold: float, iou: float
) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]:
    """The float model decoded exactly as the server decodes the int8 one (same NMS, same box mapping)."""
    raw = model.predict(data.images.astype(np.float32), batch_size=32, verbose=0)
    boxes, scores = nets.decode_head(raw, size)
    table = np.concatenate([boxes.numpy(), scores.numpy()], axis=-1)
    out = []
    for i in range(len(table)):
        found = decode_yolo(
            table[i].T[None], "yolov8", len(labels), (size, size), "normalized", threshold, iou, 100
        )
        out.append((data.placements[i].to_original(found.boxes), found.classes))
    return out


@dataclass
class TrainedDetector:
    card: dict[str, Any]
    model: keras.Model
    size: int
    threshold: float
    representative: npt.NDArray[np.uint8]
    val: DetectionSet


def train_detector(
    data: Path,
    heldout: HeldOut,
    out: Path,
    labels: list[str],
    *,
    size: int = 320,
    epochs: int = 30,
    seed: int = 11,
) -> TrainedDetector:
    set_determinism(seed)
    started = time.perf_counter()
    root = data / "detection"
    train = load_detection(root, "train", size, labels)
    val = load_detection(root, "val", size, labels)
    test = _merge_det(
        [load_detection(heldout.root / "detection", s, size, labels) for s in ("train", "val", "test")]
    )
    targets = np.stack(
        [
            nets.detection_targets(b, c, size, len(labels))
            for b, c in zip(train.boxes, train.classes, strict=True)
        ]
    )
    model = nets.build_detector(size, len(labels))
    nets.init_class_bias(model)
    steps = epochs * (len(train.images) // 16 + 1)
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(2e-3, steps, warmup_target=None)
        ),
        loss=nets.detection_loss(size, len(labels)),
    )
    model.fit(train.images.astype(np.float32), targets, batch_size=16, epochs=epochs, shuffle=True, verbose=2)
    train_seconds = time.perf_counter() - started

    iou = 0.45
    float_threshold = _pick_threshold(model, val, size, labels, iou)
    float_report = detection_report(
        _float_detections(model, test, size, labels, float_threshold, iou),
        list(zip(test.original_boxes, test.classes, strict=True)),
        labels,
    )
    # Calibrate with both KO and OK frames, more than a few hundred gains nothing measurable.
    representative = _representative(train.images, REPRESENTATIVE_FRAMES, seed)
    tflite = to_int8_tflite(nets.yolov8_export_fn(model, size), representative)
    manifest = {
        "task": "detection",
        "labels": labels,
        "color_order": "RGB",
        "normalization": "raw",
        "resize": "letterbox",
        "decoder": "yolov8",
        "box_format": "normalized",
        "score_threshold": float_threshold,
        "iou_threshold": iou,
        "max_detections": 20,
        "description": "Plastic duck defect detector: boxes each defect (one camera frame in).",
    }
    write_model_folder(out, tflite, manifest)
    served = load_served(out)
    # The deployed model's own operating point: int8 scores sit slightly apart from the float ones.
    threshold = _pick_served_threshold(served, val, labels)
    manifest["score_threshold"] = threshold
    write_model_folder(out, tflite, manifest)
    served = load_served(out)
    files = [f.read_bytes() for f in test.files]
    int8_report = detection_report(
        served_detections(served, files), list(zip(test.original_boxes, test.classes, strict=True)), labels
    )
    latency = served_latency_ms(served, files[:40])
    d = {
        "model": "duck-detector",
        "task": "detection",
        "labels": labels,
        "input": [1, size, size, 3],
        "tflite_bytes": len(tflite),
        "tflite_sha256": _sha256(tflite),
        "train_images": len(train.images),
        "val_images": len(val.images),
        "heldout_images": len(test.images),
        "heldout_seed": heldout.seed,
        "epochs": epochs,
        "train_seconds": round(train_seconds, 1),
        "score_threshold": threshold,
        "float_score_threshold": float_threshold,
        "float_precision": round(float_report.precision, 4),
        "float_recall": round(float_report.recall, 4),
        "int8_precision": round(int8_report.precision, 4),
        "int8_recall": round(int8_report.recall, 4),
        "per_class": {k: [round(p, 4), round(r, 4)] for k, (p, r) in int8_report.per_class().items()},
        "counts": {
            "tp": int8_report.true_positives,
            "fp": int8_report.false_positives,
            "fn": int8_report.false_negatives,
        },
        "latency": latency,
    }
    confusion = _detection_confusion(int8_report, labels)
    card.confusion_image(
        confusion, [*labels, "none"], "duck-detector (int8, held-out)", out / "confusion_matrix.png"
    )
    d["confusion"] = confusion
    _detector_card(out, d, data)
    return TrainedDetector(d, model, size, threshold, representative, val)


def _pick_decision_threshold(detector: TrainedDetector) -> float:
    """The strongest-defect score above which a frame is KO, chosen for accuracy on the validation split.

    Not the detector's threshold: a frame is KO when any defect is seen, even one whose box is poor.
    """
    raw = detector.model.predict(detector.val.images.astype(np.float32), batch_size=32, verbose=0)
    strongest = nets.decode_head(raw, detector.size)[1].numpy().max(axis=(1, 2))
    ko = np.asarray([len(b) > 0 for b in detector.val.boxes])
    candidates = np.round(np.arange(0.05, 0.8, 0.025), 3)
    accuracy = [float(np.mean((strongest >= t) == ko)) for t in candidates]
    best = max(accuracy)
    # among equally accurate thresholds, the middle one: the widest margin on both sides
    tied = [float(t) for t, a in zip(candidates, accuracy, strict=True) if a == best]
    return tied[len(tied) // 2]


def classifier_from_detector(
    detector: TrainedDetector, data: Path, heldout: HeldOut, out: Path
) -> dict[str, Any]:
    """The OK/KO classifier as the detector's trunk with a 'strongest defect' head (see nets.py).

    Box-level supervision teaches a network to find a missing eye a few pixels wide far faster than
    OK/KO verdicts alone; the pure image-level classifier (`train_classifier`) remains for datasets
    that only have verdicts. This model is evaluated as a classifier, on its own, like any other.
    """
    size = detector.size
    threshold = _pick_decision_threshold(detector)
    serve = nets.defect_classifier_export_fn(detector.model, size, threshold)
    tflite = to_int8_tflite(serve, detector.representative)
    manifest = {
        "task": "classification",
        "labels": list(CLASSES),
        "color_order": "RGB",
        "normalization": "raw",
        "resize": "letterbox",
        "description": "Plastic duck OK/KO classifier (one camera frame in, ok or ko out).",
    }
    write_model_folder(out, tflite, manifest)
    test = held_out_classification(heldout, size, resize="letterbox")
    float_scores = np.concatenate([serve(tf.constant(img[None], tf.float32)).numpy() for img in test.images])
    float_pred = np.argmax(float_scores, axis=1)
    float_report, int8_report, latency = _evaluate_classifier(out, test, float_pred, heldout)
    d = {
        "model": "duck-classifier",
        "task": "classification",
        "input": [1, size, size, 3],
        "tflite_bytes": len(tflite),
        "tflite_sha256": _sha256(tflite),
        "train_images": detector.card["train_images"],
        "val_images": detector.card["val_images"],
        "heldout_images": len(test.labels),
        "heldout_seed": heldout.seed,
        "epochs": detector.card["epochs"],
        "train_seconds": detector.card["train_seconds"],
        "decision_threshold": threshold,
        "float_accuracy": round(float_report.accuracy, 4),
        "int8_accuracy": round(int8_report.accuracy, 4),
        "confusion": int8_report.confusion,
        "per_kind_recall": {k: round(v, 4) for k, v in int8_report.per_kind_recall.items()},
        "latency": latency,
        "architecture": "detector trunk + strongest-defect head",
        "resize": "letterbox",
    }
    _classifier_card(out, d, data)
    return d


def _merge_det(sets: list[DetectionSet]) -> DetectionSet:
    return DetectionSet(
        np.concatenate([s.images for s in sets]),
        [b for s in sets for b in s.boxes],
        [c for s in sets for c in s.classes],
        [b for s in sets for b in s.original_boxes],
        [f for s in sets for f in s.files],
        [p for s in sets for p in s.placements],
    )


_THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)


def _best_f1(reports: dict[float, Any]) -> float:
    """The threshold with the best F1 (ties: the higher one, fewer false alarms)."""
    best, best_f1 = 0.25, -1.0
    for threshold, report in sorted(reports.items()):
        f1 = 2 * report.precision * report.recall / max(report.precision + report.recall, 1e-9)
        if f1 >= best_f1:
            best, best_f1 = threshold, f1
    return best


def _pick_served_threshold(served: Any, val: DetectionSet, labels: list[str]) -> float:
    """Best-F1 threshold of the served int8 model on the validation split (one pass, filtered per threshold)."""
    truths = list(zip(val.original_boxes, val.classes, strict=True))
    files = [f.read_bytes() for f in val.files]
    low = min(_THRESHOLDS)
    raw = [(b, c, s) for b, c, s in served_detections_with_scores(served, files, low)]
    reports = {
        t: detection_report([(b[s >= t], c[s >= t]) for b, c, s in raw], truths, labels) for t in _THRESHOLDS
    }
    return _best_f1(reports)


def _pick_threshold(model: keras.Model, val: DetectionSet, size: int, labels: list[str], iou: float) -> float:
    """The score threshold with the best F1 on the validation split (ties: the higher, fewer false alarms)."""
    truths = list(zip(val.original_boxes, val.classes, strict=True))
    reports = {
        t: detection_report(_float_detections(model, val, size, labels, t, iou), truths, labels)
        for t in _THRESHOLDS
    }
    return _best_f1(reports)


def _detection_confusion(report: Any, labels: list[str]) -> list[list[int]]:
    """A detection 'confusion matrix': per class, found / missed, plus false alarms in the 'none' row."""
    n = len(labels)
    matrix = [[0] * (n + 1) for _ in range(n + 1)]
    for i, label in enumerate(labels):
        matrix[i][i] = report.true_positives[label]
        matrix[i][n] = report.false_negatives[label]
        matrix[n][i] = report.false_positives[label]
    return matrix


def _detector_card(out: Path, d: dict[str, Any], data: Path) -> None:
    rows = [[k, f"{p:.1%}", f"{r:.1%}"] for k, (p, r) in d["per_class"].items()]
    sections = [
        (
            "What it does",
            f"Boxes each defect on a plastic duck in one camera frame: {', '.join(d['labels'])}. "
            f"Input: a frame of any size, letterboxed to {d['input'][1]}x{d['input'][2]} RGB. Output: the YOLOv8 layout "
            "`[1, 4 + C, N]` (normalised xywh, sigmoid class scores), decoded by the model server (class-aware NMS), "
            "boxes given in the original frame's coordinates.",
        ),
        (
            "Data",
            f"Synthetic duck line (`python -m hub.duckline`), top and side cameras, half the parts with one "
            f"of five defects, YOLO-format labels. Training: {d['train_images']} frames, validation {d['val_images']} "
            f"(dataset `{data.name}`). Held-out evaluation: {d['heldout_images']} frames generated with a different "
            f"seed ({d['heldout_seed']}).",
        ),
        (
            "Training",
            f"Anchor-free one-level head at stride 8 with a light FPN (stride 16/32 context), focal loss on "
            f"classes, GIoU loss on boxes, three cells per object; Adam with cosine decay, {d['epochs']} epochs, fixed "
            f"seeds and deterministic ops; {d['train_seconds']} s on {_environment()}. Score threshold "
            f"{d['score_threshold']} chosen for the best F1 of the int8 model on the validation split (the float "
            f"model's own best, used for its figures below: {d.get('float_score_threshold', d['score_threshold'])}). "
            f"Quantised to full int8 (int8 input and output) with {REPRESENTATIVE_FRAMES} training frames as the "
            "representative dataset.",
        ),
        (
            "Precision and recall at IoU 0.5 on the held-out set",
            card.table(
                [
                    ["float (Keras)", f"{d['float_precision']:.2%}", f"{d['float_recall']:.2%}"],
                    ["int8 (served, .tflite)", f"{d['int8_precision']:.2%}", f"{d['int8_recall']:.2%}"],
                ],
                ["model", "precision", "recall"],
            )
            + "\n\nThe int8 figures are measured through the model server's own code on the JPEG files.\n\n"
            + card.table(rows, ["class", "precision", "recall"]),
        ),
        (
            "Confusion matrix (int8, held-out)",
            "![confusion matrix](confusion_matrix.png)\n\nRows: true defects "
            "(last row: false alarms); columns: what was found (last column: missed).",
        ),
        (
            "Latency",
            f"Served path in process (decode a 640x480 JPEG, letterbox, invoke, NMS), one thread, median: "
            f"{d['latency']['total_p50_ms']} ms, of which inference {d['latency']['inference_p50_ms']} ms "
            f"({_environment()}). A Raspberry Pi 4 is roughly 10-20x slower per core.",
        ),
        (
            "Files",
            f"`model.tflite` ({d['tflite_bytes']} bytes, sha256 `{d['tflite_sha256'][:16]}...`), `model.yaml`, "
            "`card.json` (these figures), `confusion_matrix.png`.",
        ),
    ]
    card.write_card(out, "duck-detector", sections, d)


def held_out_classification(heldout: HeldOut, size: int, resize: str = "stretch") -> ClassificationSet:
    splits = ("train", "val", "test")
    return _merge([load_classification(heldout.root / "classification", s, size, resize) for s in splits])
