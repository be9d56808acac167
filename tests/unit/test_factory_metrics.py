"""The model factory's metrics on hand-made cases: they decide what the model cards claim."""

from __future__ import annotations

import numpy as np

from edge_model_serving.processing import Placement
from hub.model_factory.data import read_yolo_labels, to_input_space
from hub.model_factory.evaluate import box_iou, classification_report, detection_report

LABELS = ["stain", "beak"]


def _boxes(*rows: list[float]) -> np.ndarray:
    return np.asarray(rows, np.float32).reshape(-1, 4)


def test_iou() -> None:
    iou = box_iou(_boxes([0, 0, 2, 2]), _boxes([1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]))
    np.testing.assert_allclose(iou, [[1 / 7, 1.0, 0.0]], atol=1e-6)


def test_detection_matching_counts_each_truth_once_and_needs_the_right_class() -> None:
    truths = [(_boxes([0, 0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7]), np.asarray([0, 1]))]
    predictions = [
        (
            _boxes([0, 0, 0.2, 0.2], [0.01, 0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7], [0.9, 0.9, 1, 1]),
            np.asarray([0, 0, 0, 1]),  # a hit, a duplicate, the right box with the wrong class, a false alarm
        )
    ]
    report = detection_report(predictions, truths, LABELS)
    assert report.true_positives == {"stain": 1, "beak": 0}
    assert report.false_positives == {"stain": 2, "beak": 1}
    assert report.false_negatives == {"stain": 0, "beak": 1}
    assert report.precision == 1 / 4 and report.recall == 1 / 2


def test_a_box_below_iou_half_is_a_miss() -> None:
    truths = [(_boxes([0, 0, 0.1, 0.1]), np.asarray([0]))]
    predictions = [(_boxes([0.05, 0, 0.15, 0.1]), np.asarray([0]))]  # IoU 1/3
    report = detection_report(predictions, truths, LABELS)
    assert (report.precision, report.recall) == (0.0, 0.0)


def test_classification_report_with_per_kind_recall() -> None:
    truth = np.asarray([0, 0, 1, 1, 1])
    predicted = np.asarray([0, 1, 1, 0, 1])
    report = classification_report(truth, predicted, ["ok", "ko"], ["ok", "ok", "stain", "beak", "stain"])
    assert report.confusion == [[1, 1], [1, 2]]
    assert report.accuracy == 3 / 5
    assert report.per_kind_recall == {"beak": 0.0, "ok": 0.5, "stain": 1.0}


def test_yolo_labels_and_letterbox_mapping(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "a.txt"
    path.write_text("1 0.5 0.5 0.2 0.4\n")
    classes, boxes = read_yolo_labels(path)
    assert classes.tolist() == [1]
    np.testing.assert_allclose(boxes, [[0.4, 0.3, 0.6, 0.7]], atol=1e-6)
    assert read_yolo_labels(tmp_path / "missing.txt")[1].shape == (0, 4)  # OK image: no label file
    # 640x480 letterboxed into 320x320: scale 0.5, 40 px bands above and below
    placement = Placement(640, 480, 320, 320, 0.5, 0.5, 0, 40)
    inside = to_input_space(boxes, placement)
    np.testing.assert_allclose(
        inside, [[0.4, (0.3 * 240 + 40) / 320, 0.6, (0.7 * 240 + 40) / 320]], atol=1e-6
    )
    np.testing.assert_allclose(placement.to_original(inside * 320), boxes, atol=1e-5)
