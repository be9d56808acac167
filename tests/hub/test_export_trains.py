"""An export trains: the model factory's classifier, run for one epoch on a dataset exported by a real hub, writes a
served (int8 LiteRT) model folder. Needs TensorFlow, which lives only in .venv-train (`make test-train`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.hub.test_export import Seeded, export, seeded, unzip

__all__ = ["seeded"]  # the seeded hub of test_export (a fixture used here)

TRAIN_PYTHON = REPO / ".venv-train" / "bin" / "python"

pytestmark = [
    pytest.mark.train,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not TRAIN_PYTHON.exists(), reason="needs .venv-train (make .venv-train/.installed)"),
]


def test_the_classifier_trains_one_epoch_on_an_export(seeded: Seeded, tmp_path: Path) -> None:
    # Given the hub's results exported, and a small synthetic held-out set (the factory's own generator)
    data = unzip(export(seeded.base), tmp_path / "export")
    manifest = json.loads((data / "manifest.json").read_text())
    heldout = tmp_path / "heldout"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hub.duckline",
            "dataset",
            "--out",
            str(heldout),
            "--count",
            "20",
            "--seed",
            "1001",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    # When the classifier is trained from it for one epoch
    out = tmp_path / "models" / "duck-classifier" / "9"
    command = ["-m", "hub.model_factory", "classifier", "--data", str(data), "--heldout", str(heldout)]
    run = subprocess.run(
        [str(TRAIN_PYTHON), *command, "--heldout-seed", "1001", "--out", str(out), "--epochs", "1"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=840,
    )
    # Then it writes a model folder the model server can load, trained on exactly the exported training images
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (out / "model.tflite").stat().st_size > 0
    model = yaml.safe_load((out / "model.yaml").read_text())
    assert model["task"] == "classification" and model["labels"] == ["ok", "ko"]
    summary = json.loads(run.stdout[run.stdout.index("{") :])
    assert 0.0 <= summary["classifier"]["int8_accuracy"] <= 1.0
    card = (out / "README.md").read_text()
    trained_on = sum(manifest["counts"]["per_split"]["train"]["classification"].values())
    assert f"Training: {trained_on} frames" in card, card[:2000]
