"""The model repository on disk: bad models are listed with their error, new versions load live."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import GREEN, PNG_HEADERS, RED, ClientFactory, encode, solid


def _version(client: TestClient, name: str, version: int) -> dict:  # type: ignore[type-arg]
    versions = client.get(f"/v1/models/{name}").json()["versions"]
    return next(v for v in versions if v["version"] == version)


def _add_model(models_dir: Path, name: str, source: str, yaml_text: str) -> None:
    folder = models_dir / name / "1"
    folder.mkdir(parents=True)
    shutil.copy(models_dir / source / "model.tflite", folder / "model.tflite")
    (folder / "model.yaml").write_text(yaml_text)


def test_contradicting_manifests_are_rejected_with_what_disagrees(
    models_dir: Path, make_client: ClientFactory
) -> None:
    _add_model(models_dir, "two-labels", "color-classifier/1", "task: classification\nlabels: [red, green]\n")
    _add_model(
        models_dir,
        "detector-as-classifier",
        "grid-detector-v8/1",
        "task: classification\nlabels: [red, green]\n",
    )
    _add_model(
        models_dir,
        "wrong-yolo",
        "grid-detector-v8/1",
        "task: detection\nlabels: [red, green]\ndecoder: yolov5\n",
    )
    _add_model(
        models_dir,
        "classifier-as-detector",
        "color-classifier/1",
        "task: detection\nlabels: [red, green, blue]\ndecoder: yolov8\n",
    )
    broken = models_dir / "corrupt" / "1"
    broken.mkdir(parents=True)
    (broken / "model.tflite").write_bytes(b"TFL3 this is not a flatbuffer" * 10)
    (broken / "model.yaml").write_text("task: classification\nlabels: [a]\n")

    client = make_client()

    errors = {
        name: _version(client, name, 1)
        for name in [
            "two-labels",
            "detector-as-classifier",
            "wrong-yolo",
            "classifier-as-detector",
            "corrupt",
        ]
    }
    assert all(v["status"] == "failed" for v in errors.values())
    assert "2 labels" in errors["two-labels"]["error"] and "3 scores" in errors["two-labels"]["error"]
    assert "detection head" in errors["detector-as-classifier"]["error"]
    assert "yolov5" in errors["wrong-yolo"]["error"] and "yolov8" in errors["wrong-yolo"]["error"]
    assert "[1, 3]" in errors["classifier-as-detector"]["error"]
    assert "LiteRT" in errors["corrupt"]["error"]
    # a failed model answers 503 with its reason; the others keep serving
    response = client.post("/v1/models/two-labels:predict", content=encode(solid(RED)), headers=PNG_HEADERS)
    assert response.status_code == 503 and response.json()["code"] == "model_not_ready"
    assert "3 scores" in response.json()["detail"]
    ok = client.post("/v1/models/color-classifier:predict", content=encode(solid(RED)), headers=PNG_HEADERS)
    assert ok.status_code == 200
    assert client.get("/health/ready").status_code == 200  # failures don't hold readiness back


def test_reload_endpoint_loads_a_new_version_without_restart(
    models_dir: Path, make_client: ClientFactory
) -> None:
    client = make_client()
    assert client.get("/v1/models/color-classifier").json()["latest_version"] == 3
    shutil.copytree(models_dir / "color-classifier" / "2", models_dir / "color-classifier" / "7")

    info = client.post("/v1/models/color-classifier:reload").json()

    assert info["latest_version"] == 7
    body = client.post(
        "/v1/models/color-classifier:predict", content=encode(solid(GREEN)), headers=PNG_HEADERS
    )
    assert body.json()["model_version"] == 7 and body.json()["prediction"]["label"] == "green"
    assert client.post("/v1/models/unknown:reload").status_code == 404


def test_watcher_picks_up_new_and_removed_versions(models_dir: Path, make_client: ClientFactory) -> None:
    client = make_client(watch_interval_s=0.1)
    shutil.copytree(models_dir / "color-classifier" / "1", models_dir / "color-classifier" / "4")
    deadline = time.monotonic() + 15
    while client.get("/v1/models/color-classifier").json()["latest_version"] != 4:
        assert time.monotonic() < deadline, "new version never loaded"
        time.sleep(0.1)
    shutil.rmtree(models_dir / "color-classifier" / "4")
    while client.get("/v1/models/color-classifier").json()["latest_version"] != 3:
        assert time.monotonic() < deadline, "removed version still served"
        time.sleep(0.1)


def test_the_loaded_version_keeps_serving_during_a_reload(
    models_dir: Path, make_client: ClientFactory
) -> None:
    client = make_client()
    failures: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        image = encode(solid(RED))
        while not stop.is_set():
            status = client.post(
                "/v1/models/color-classifier:predict", content=image, headers=PNG_HEADERS
            ).status_code
            if status != 200:
                failures.append(status)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for _ in range(3):
            assert client.post("/v1/models/color-classifier:reload").status_code == 200
    finally:
        stop.set()
        thread.join(timeout=10)
    assert failures == []


def test_a_broken_update_keeps_the_previous_file_serving(
    models_dir: Path, make_client: ClientFactory
) -> None:
    client = make_client()
    (models_dir / "color-classifier" / "3" / "model.tflite").write_bytes(b"garbage")
    info = client.post("/v1/models/color-classifier:reload").json()
    v3 = next(v for v in info["versions"] if v["version"] == 3)
    assert v3["status"] == "ready" and "still serving the previous file" in v3["error"]
    response = client.post(
        "/v1/models/color-classifier:predict", content=encode(solid(RED)), headers=PNG_HEADERS
    )
    assert response.status_code == 200 and response.json()["model_version"] == 3
