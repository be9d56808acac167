"""Full-integer quantisation to .tflite with a representative dataset, and the model folder it lands in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf
import yaml


def to_int8_tflite(serve: Any, representative: npt.NDArray[np.uint8], io_type: str = "int8") -> bytes:
    """Convert a tf.function to a fully int8 model (weights, activations, input and output).

    `representative` are real input images (raw 0..255 pixels): the calibration that sets every
    activation range. The graph is frozen first: Keras 3 variables would otherwise survive as
    resource variables that LiteRT cannot run.
    """
    from tensorflow.python.framework.convert_to_constants import (  # noqa: PLC0415 (private but stable)
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])

    def samples() -> Iterator[list[npt.NDArray[np.float32]]]:
        for image in representative:
            yield [image[None].astype(np.float32)]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = getattr(tf, io_type)
    converter.inference_output_type = getattr(tf, io_type)
    return bytes(converter.convert())


def write_model_folder(folder: Path, tflite: bytes, manifest: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tflite").write_bytes(tflite)
    header = "# Written by `python -m hub.model_factory`; see README.md (the model card) beside it.\n"
    (folder / "model.yaml").write_text(header + yaml.safe_dump(manifest, sort_keys=False, width=100))
