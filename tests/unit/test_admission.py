"""Admission control: beyond max_pending requests in flight, new ones are refused, not queued."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_model_serving.deps import ServingRuntime
from edge_model_serving.errors import OverloadedError
from edge_model_serving.metrics import ServingMetrics
from edge_model_serving.registry import ModelRegistry
from edge_model_serving.settings import ServingSettings


def test_requests_beyond_max_pending_are_refused_until_one_finishes(tmp_path: Path) -> None:
    settings = ServingSettings(models_dir=tmp_path, max_pending=2)
    runtime = ServingRuntime(settings, ModelRegistry(tmp_path, 1, 1), ServingMetrics())
    runtime.admit()
    runtime.admit()
    with pytest.raises(OverloadedError, match="2 requests in flight"):
        runtime.admit()
    runtime.release()
    runtime.admit()  # room again
