"""The bundled duck models: served by the real model server, they meet their quality bar on fresh data.

The check set is generated at test time with a seed used neither for training nor for the model
cards' held-out set, so these figures are an independent confirmation of the cards.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from edge_model_serving.api import create_app
from edge_model_serving.settings import ServingSettings
from hub.duckline.synth import CAMERAS, DEFECT_KINDS, render_item
from hub.model_factory.data import jpeg
from hub.model_factory.evaluate import box_iou, detection_report
from tests.conftest import REPO, wait_ready

MODELS = REPO / "models"
CHECK_SEED = 4242
CHECK_ITEMS = 60  # x 2 cameras


@pytest.fixture(scope="module")
def frames() -> list[tuple[bytes, bool, list[tuple[str, tuple[float, float, float, float]]]]]:
    """(JPEG bytes, ok, [(kind, box)]) for every camera frame of CHECK_ITEMS fresh items."""
    out = []
    for index in range(CHECK_ITEMS):
        item = render_item(CHECK_SEED, index)
        for camera in CAMERAS:
            frame = item.frames[camera]
            out.append((jpeg(frame.image), frame.ok, [(d.kind, d.box) for d in frame.defects]))
    return out


@pytest.fixture(scope="module")
def server() -> Iterator[TestClient]:
    settings = ServingSettings(models_dir=MODELS, watch_interval_s=0)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


def _predict(server: TestClient, model: str, image: bytes) -> dict:  # type: ignore[type-arg]
    response = server.post(
        f"/v1/models/{model}:predict", content=image, headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    return response.json()["prediction"]  # type: ignore[no-any-return]


def test_both_models_are_served_full_int8(server: TestClient) -> None:
    listing = {m["name"]: m for m in server.get("/v1/models").json()["models"]}
    for name in ("duck-classifier", "duck-detector"):
        version = listing[name]["versions"][0]
        assert version["status"] == "ready", version["error"]
        assert version["inputs"][0]["dtype"] in ("int8", "uint8")
        assert all(o["dtype"] in ("int8", "uint8") for o in version["outputs"])
        assert (MODELS / name / "1" / "model.tflite").stat().st_size < 2_000_000  # small enough for a Pi


def test_classifier_accuracy_on_fresh_frames(server: TestClient, frames: list) -> None:  # type: ignore[type-arg]
    correct = sum(
        (_predict(server, "duck-classifier", image)["label"] == ("ok" if ok else "ko"))
        for image, ok, _ in frames
    )
    accuracy = correct / len(frames)
    assert accuracy >= 0.97, f"accuracy {accuracy:.3f} on {len(frames)} fresh frames"


def test_detector_precision_and_recall_on_fresh_frames(server: TestClient, frames: list) -> None:  # type: ignore[type-arg]
    predictions, truths = [], []
    for image, _, defects in frames:
        found = _predict(server, "duck-detector", image)["detections"]
        predictions.append(
            (
                np.asarray([d["box"] for d in found], np.float32).reshape(-1, 4),
                np.asarray([d["class_index"] for d in found], np.int64),
            )
        )
        truths.append(
            (
                np.asarray([box for _, box in defects], np.float32).reshape(-1, 4),
                np.asarray([DEFECT_KINDS.index(kind) for kind, _ in defects], np.int64),
            )
        )
    report = detection_report(predictions, truths, list(DEFECT_KINDS))
    assert report.recall >= 0.90 and report.precision >= 0.90, (
        report.precision,
        report.recall,
        report.per_class(),
    )


def test_a_clean_duck_has_no_defect_box_and_a_stain_is_boxed(server: TestClient) -> None:
    ok_item = render_item(CHECK_SEED + 1, 0, defect_kind=None)
    assert _predict(server, "duck-detector", jpeg(ok_item.frames["top"].image))["detections"] == []
    stained = render_item(CHECK_SEED + 1, 0, defect_kind="stain").frames["top"]
    found = _predict(server, "duck-detector", jpeg(stained.image))["detections"]
    truth = np.asarray([stained.defects[0].box], np.float32)
    assert any(
        d["label"] == "stain" and box_iou(np.asarray([d["box"]], np.float32), truth)[0, 0] >= 0.5
        for d in found
    )


@pytest.mark.parametrize("name", ["duck-classifier", "duck-detector"])
def test_model_cards_describe_the_models_beside_them(name: str) -> None:
    folder = MODELS / name / "1"
    data = json.loads((folder / "card.json").read_text())
    tflite = (folder / "model.tflite").read_bytes()
    assert data["tflite_sha256"] == hashlib.sha256(tflite).hexdigest(), (
        "card.json is not about this model.tflite"
    )
    assert data["tflite_bytes"] == len(tflite)
    readme = (folder / "README.md").read_text()
    assert data["tflite_sha256"][:16] in readme
    assert (folder / "confusion_matrix.png").stat().st_size > 1000
    if data["task"] == "classification":
        assert f"{data['int8_accuracy']:.2%}" in readme
        assert data["int8_accuracy"] >= 0.97
        assert data["float_accuracy"] - data["int8_accuracy"] <= 0.01  # int8 loses at most 1 point
    else:
        assert f"{data['int8_recall']:.2%}" in readme and f"{data['int8_precision']:.2%}" in readme
        assert data["int8_recall"] >= 0.90 and data["int8_precision"] >= 0.90
        assert data["float_recall"] - data["int8_recall"] <= 0.01
        assert data["labels"] == list(DEFECT_KINDS)
