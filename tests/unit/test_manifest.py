"""Manifest parsing: presets, ranges, legacy metadata.json, and errors that say where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_model_serving.errors import ManifestError
from edge_model_serving.manifest import ModelManifest, load_manifest


@pytest.mark.parametrize(
    ("value", "mean", "std"),
    [
        ("[0,1]", 0.0, 255.0),
        ("[-1,1]", 127.5, 127.5),
        ("raw", 0.0, 1.0),
        ([-1, 1], 127.5, 127.5),
        ([0, 1], 0, 255),
    ],
)
def test_normalisation_presets_and_ranges(value: object, mean: float, std: float) -> None:
    manifest = ModelManifest.model_validate(
        {"task": "classification", "labels": ["a"], "normalization": value}
    )
    assert manifest.normalization.mean == (mean,) * 3
    assert manifest.normalization.std == (std,) * 3


def test_imagenet_and_explicit_mean_std() -> None:
    m = ModelManifest.model_validate({"task": "classification", "labels": ["a"], "normalization": "imagenet"})
    assert m.normalization.mean[0] == pytest.approx(123.675)
    m = ModelManifest.model_validate(
        {"task": "classification", "labels": ["a"], "normalization": {"mean": 127, "std": [1, 2, 3]}}
    )
    assert m.normalization.mean == (127, 127, 127) and m.normalization.std == (1, 2, 3)


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder


def test_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    folder = _write(
        tmp_path, "model.yaml", "task: detection\nlabels: [a]\nnormalization: '[0,2'\ncolour: RGB\n"
    )
    with pytest.raises(ManifestError) as err:
        load_manifest(folder)
    message = err.value.detail
    assert "model.yaml" in message and "normalization" in message and "colour" in message


def test_detection_needs_a_decoder(tmp_path: Path) -> None:
    folder = _write(tmp_path, "model.yaml", "task: detection\nlabels: [a]\n")
    with pytest.raises(ManifestError, match="decoder"):
        load_manifest(folder)


def test_labels_from_labels_txt(tmp_path: Path) -> None:
    folder = _write(tmp_path, "model.yaml", "task: classification\n")
    (folder / "labels.txt").write_text("ok\n\nko\n")
    _, labels, source = load_manifest(folder)
    assert labels == ["ok", "ko"] and source == "model.yaml"


def test_missing_labels_is_an_error(tmp_path: Path) -> None:
    folder = _write(tmp_path, "model.yaml", "task: classification\n")
    with pytest.raises(ManifestError, match="labels"):
        load_manifest(folder)


@pytest.mark.parametrize(
    ("output_type", "task", "decoder"),
    [
        ("classification", "classification", None),
        ("object_detection", "detection", "ssd_postprocess"),
        ("yolo", "detection", "yolo"),
    ],
)
def test_vio_metadata_json_is_understood(
    tmp_path: Path, output_type: str, task: str, decoder: str | None
) -> None:
    meta = {"output_type": output_type, "class_names": ["ok", "ko"], "normalization": "mobilenet"}
    folder = _write(tmp_path, "metadata.json", json.dumps(meta))
    manifest, labels, source = load_manifest(folder)
    assert (manifest.task, manifest.decoder, labels, source) == (task, decoder, ["ok", "ko"], "metadata.json")
    assert manifest.normalization.mean == (127.5,) * 3


def test_bad_metadata_json(tmp_path: Path) -> None:
    folder = _write(
        tmp_path, "metadata.json", json.dumps({"output_type": "segmentation", "class_names": ["a"]})
    )
    with pytest.raises(ManifestError, match="output_type"):
        load_manifest(folder)
