"""The real app on the real .tflite fixture models: known answers, listings and every bad input."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import BLUE, FIXTURE_MODELS, GREEN, PNG_HEADERS, RED, ClientFactory, encode, solid

JPEG = {"content-type": "image/jpeg"}

DETECTORS = [p.name for p in sorted(FIXTURE_MODELS.glob("grid-detector-*"))]


def _predict(client: TestClient, path: str, image: np.ndarray, ext: str = ".png", **params: object) -> dict:  # type: ignore[type-arg]
    response = client.post(
        path, content=encode(image, ext), headers=JPEG if ext == ".jpg" else PNG_HEADERS, params=params
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _square(
    cell_row: int, cell_col: int, bgr: tuple[int, int, int] = RED, size: int = 64, cell: int = 8
) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[cell_row * cell : (cell_row + 1) * cell, cell_col * cell : (cell_col + 1) * cell] = bgr
    return image


# --- listing -----------------------------------------------------------------------------------


def test_every_fixture_model_is_listed_ready_with_its_tensors(client: TestClient) -> None:
    listing = client.get("/v1/models").json()["models"]
    by_name = {m["name"]: m for m in listing}
    assert {"color-classifier", "legacy-color", *DETECTORS} <= set(by_name)
    colour = by_name["color-classifier"]
    assert colour["latest_version"] == 3
    assert [v["status"] for v in colour["versions"]] == ["ready"] * 3
    v1 = colour["versions"][0]
    assert v1["task"] == "classification" and v1["labels"] == ["red", "green", "blue"]
    assert v1["inputs"][0]["shape"] == [1, 32, 32, 3] and v1["inputs"][0]["dtype"] == "uint8"
    legacy = by_name["legacy-color"]["versions"]
    assert [(v["version"], v["source"]) for v in legacy] == [(1, "metadata.json")]


def test_one_model_can_be_described(client: TestClient) -> None:
    body = client.get("/v1/models/grid-detector-v8").json()
    assert body["versions"][0]["decoder"] == "yolov8"
    assert body["versions"][0]["inputs"][0]["dtype"] == "int8"


# --- classification known answers --------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/color-classifier:predict",
        "/v1/models/color-classifier/versions/1:predict",
        "/v1/models/color-classifier/versions/2:predict",
        "/v1/models/color-classifier/versions/3:predict",
        "/v1/models/color-classifier/versions/latest:predict",
        "/v1/models/legacy-color:predict",
    ],
)
@pytest.mark.parametrize(("colour", "label"), [(RED, "red"), (GREEN, "green"), (BLUE, "blue")])
def test_classifiers_name_the_colour_with_a_probability(
    client: TestClient, path: str, colour: tuple[int, int, int], label: str
) -> None:
    body = _predict(client, path, solid(colour, 50, 40))
    prediction = body["prediction"]
    assert body["task"] == prediction["task"] == "classification"
    assert prediction["label"] == label
    assert prediction["score"] > 0.9
    assert list(prediction["scores"]) == ["red", "green", "blue"]
    assert sum(prediction["scores"].values()) == pytest.approx(1.0, abs=0.02)  # logits (v2) got a softmax
    assert set(body["timings_ms"]) == {"decode", "preprocess", "inference", "postprocess", "total"}


def test_versions_are_reported(client: TestClient) -> None:
    latest = _predict(client, "/v1/models/color-classifier:predict", solid(RED))
    pinned = _predict(client, "/v1/models/color-classifier/versions/2:predict", solid(RED))
    assert (latest["model_name"], latest["model_version"], pinned["model_version"]) == (
        "color-classifier",
        3,
        2,
    )


def test_any_size_jpeg_greyscale_and_rgba(client: TestClient) -> None:
    big = _predict(client, "/v1/models/color-classifier:predict", solid(BLUE, 1280, 720), ext=".jpg")
    assert big["prediction"]["label"] == "blue" and big["image"] == {"width": 1280, "height": 720}
    grey = client.post(
        "/v1/models/color-classifier:predict",
        content=encode(np.full((10, 10), 90, np.uint8)),
        headers=PNG_HEADERS,
    )
    assert grey.status_code == 200
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 255, 255
    assert _predict(client, "/v1/models/color-classifier:predict", rgba)["prediction"]["label"] == "green"


# --- detection known answers -------------------------------------------------------------------


@pytest.mark.parametrize("model", DETECTORS)
def test_detector_boxes_the_square_in_original_image_coordinates(client: TestClient, model: str) -> None:
    body = _predict(client, f"/v1/models/{model}:predict", _square(2, 3))
    detections = body["prediction"]["detections"]
    assert len(detections) == 1, detections
    found = detections[0]
    assert found["label"] == "red" and found["score"] > 0.8
    assert found["box"] == pytest.approx([3 / 8, 2 / 8, 4 / 8, 3 / 8], abs=0.02)


@pytest.mark.parametrize("model", DETECTORS)
def test_letterboxing_is_undone(client: TestClient, model: str) -> None:
    # 128x64 image -> 64x32 inside the 64x64 input, 16 px bands above and below; the square lands on cell (3, 3)
    image = np.zeros((64, 128, 3), np.uint8)
    image[16:32, 48:64] = GREEN
    detections = _predict(client, f"/v1/models/{model}:predict", image)["prediction"]["detections"]
    assert [d["label"] for d in detections] == ["green"]
    assert detections[0]["box"] == pytest.approx([48 / 128, 16 / 64, 64 / 128, 32 / 64], abs=0.02)


def test_score_threshold_and_max_detections_can_be_overridden(client: TestClient) -> None:
    image = _square(1, 1, (0, 0, 140)) | _square(5, 5) | _square(6, 1, GREEN)  # a dim red, a red, a green
    path = "/v1/models/grid-detector-v8:predict"
    everything = _predict(client, path, image)["prediction"]["detections"]
    assert len(everything) == 3
    assert everything[0]["score"] >= everything[-1]["score"]
    strict = _predict(client, path, image, score_threshold=0.8)["prediction"]["detections"]
    assert len(strict) == 2 and min(d["score"] for d in strict) >= 0.8
    one = _predict(client, path, image, max_detections=1)["prediction"]["detections"]
    assert len(one) == 1 and one[0]["score"] == everything[0]["score"]


def test_black_image_has_no_detection(client: TestClient) -> None:
    body = _predict(client, "/v1/models/grid-detector-v8:predict", np.zeros((64, 64, 3), np.uint8))
    assert body["prediction"]["detections"] == []


# --- bad input ---------------------------------------------------------------------------------


def _error(response: object, status: int, code: str) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["code"] == code
    assert isinstance(body["detail"], str) and "Traceback" not in body["detail"]
    return body  # type: ignore[no-any-return]


def test_not_an_image_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/models/color-classifier:predict", content=b"definitely not a picture", headers=PNG_HEADERS
    )
    _error(response, 400, "invalid_image")


def test_empty_body_is_400(client: TestClient) -> None:
    _error(
        client.post("/v1/models/color-classifier:predict", content=b"", headers=PNG_HEADERS),
        400,
        "invalid_image",
    )


def test_unknown_model_and_version_are_404(client: TestClient) -> None:
    image = encode(solid(RED))
    _error(client.post("/v1/models/nope:predict", content=image, headers=PNG_HEADERS), 404, "model_not_found")
    _error(client.get("/v1/models/nope"), 404, "model_not_found")
    _error(
        client.post("/v1/models/color-classifier/versions/9:predict", content=image, headers=PNG_HEADERS),
        404,
        "version_not_found",
    )
    _error(
        client.post("/v1/models/color-classifier/versions/abc:predict", content=image, headers=PNG_HEADERS),
        404,
        "version_not_found",
    )
    _error(client.get("/v1/nothing-here"), 404, "not_found")


def test_wrong_content_type_is_415(client: TestClient) -> None:
    response = client.post(
        "/v1/models/color-classifier:predict",
        content=encode(solid(RED)),
        headers={"content-type": "application/json"},
    )
    body = _error(response, 415, "unsupported_media_type")
    assert "image/jpeg" in body["detail"]


def test_body_over_the_limit_is_413(make_client: ClientFactory) -> None:
    client = make_client(max_body_bytes=4096)
    big = encode(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    assert len(big) > 4096
    _error(
        client.post("/v1/models/color-classifier:predict", content=big, headers=PNG_HEADERS),
        413,
        "body_too_large",
    )

    def chunked() -> object:  # no Content-Length: the limit is enforced while streaming
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    _error(
        client.post("/v1/models/color-classifier:predict", content=chunked(), headers=PNG_HEADERS),
        413,
        "body_too_large",
    )


def test_out_of_range_parameters_are_422_with_the_field(client: TestClient) -> None:
    response = client.post(
        "/v1/models/grid-detector-v8:predict",
        content=encode(solid(RED)),
        headers=PNG_HEADERS,
        params={"score_threshold": 2},
    )
    body = _error(response, 422, "validation_error")
    assert "score_threshold" in body["detail"]
    assert body["errors"][0]["loc"] == ["query", "score_threshold"]


# --- health and metrics ------------------------------------------------------------------------


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready").json()
    assert ready["status"] == "ready" and ready["models"]["ready"] >= 5
    _predict(client, "/v1/models/color-classifier:predict", solid(RED))
    client.post("/v1/models/color-classifier:predict", content=b"junk", headers=PNG_HEADERS)
    text = client.get("/metrics").text
    assert (
        'edge_serving_requests_total{api="v1",model="color-classifier",outcome="ok",version="3"} 1.0' in text
    )
    assert 'outcome="invalid_image"' in text
    assert 'edge_serving_stage_seconds_count{model="color-classifier",stage="inference"} 1.0' in text
    assert 'edge_serving_model_versions{status="ready"}' in text


def test_openapi_documents_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/models/{name}:predict" in paths and "/v2/models/{name}/infer" in paths
