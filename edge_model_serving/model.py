"""A loaded model version: its checked manifest, its interpreter pool, and predict / raw infer.

`predict_async` / `infer_tensors_async` run on the pool's interpreter threads (never on the event
loop); `predict` runs the very same code in the calling thread, for in-process use and benchmarks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from ai_edge_litert.interpreter import Interpreter

from edge_model_serving.errors import InvalidTensorError, ManifestError
from edge_model_serving.manifest import ModelManifest
from edge_model_serving.processing import (
    Detections,
    InputSpec,
    Placement,
    Preprocessor,
    classification_scores,
    decode_image,
    decode_ssd,
    decode_yolo,
    dequantize,
    yolo_head_layout,
)
from edge_model_serving.runtime import InterpreterPool
from edge_model_serving.schemas import (
    ClassificationPrediction,
    Detection,
    DetectionPrediction,
    ImageSize,
    PredictResponse,
    TensorInfo,
    Timings,
)

_SUPPORTED_INPUT_DTYPES: frozenset[type[np.generic]] = frozenset({np.float32, np.uint8, np.int8})


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000.0, 3)


@dataclass(frozen=True)
class PreparedImage:
    """An image decoded and turned into the model's input tensor, ready for the interpreter."""

    tensor: npt.NDArray[np.generic]
    placement: Placement
    decode_ms: float
    preprocess_ms: float


def _tensor_info(detail: dict[str, Any]) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(
        name=str(detail["name"]),
        shape=[int(d) for d in detail["shape"]],
        dtype=np.dtype(detail["dtype"]).name,
        quantization=(float(scale), int(zero_point)) if scale else None,
    )


def _input_spec(detail: dict[str, Any]) -> InputSpec:
    shape = [int(d) for d in detail["shape"]]
    dtype = np.dtype(detail["dtype"]).type
    if dtype not in _SUPPORTED_INPUT_DTYPES:
        raise ManifestError(
            f"the model's input is {np.dtype(dtype).name}; only float32, uint8 and int8 are served"
        )
    if len(shape) != 4 or shape[0] != 1:
        raise ManifestError(
            f"the model's input has shape {shape}; an image input [1,H,W,C] or [1,C,H,W] is needed"
        )
    if shape[3] in (1, 3):
        layout: Literal["NHWC", "NCHW"] = "NHWC"
        height, width, channels = shape[1], shape[2], shape[3]
    elif shape[1] in (1, 3):
        layout, channels, height, width = "NCHW", shape[1], shape[2], shape[3]
    else:
        raise ManifestError(f"the model's input has shape {shape}; 1 or 3 colour channels are needed")
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = dtype is not np.float32 and scale != 0.0
    return InputSpec(
        height, width, channels, layout, dtype, float(scale) if quantized else 0.0, int(zero_point)
    )


class LoadedModel:
    """A model version that passed its checks and is ready to serve."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        manifest: ModelManifest,
        labels: list[str],
        num_threads: int,
        pool_size: int,
    ) -> None:
        self.name, self.version, self.manifest, self.labels = name, version, manifest, labels
        self.pool = InterpreterPool(path, num_threads, pool_size, name=f"{name}-v{version}")
        with self.pool.blocking() as interpreter:
            self.input_details: list[dict[str, Any]] = interpreter.get_input_details()
            self.output_details: list[dict[str, Any]] = interpreter.get_output_details()
            ops = interpreter._get_ops_details()  # the only way to find which output is which for SSD
        if len(self.input_details) != 1:
            raise ManifestError(f"the model has {len(self.input_details)} inputs; one image input is needed")
        self.input_spec = _input_spec(self.input_details[0])
        self.preprocess = Preprocessor(self.input_spec, manifest)
        self.decoder: Literal["classification", "yolov5", "yolov8", "ssd_postprocess"] = self._check_outputs(
            ops
        )
        self._ssd_order = self._ssd_outputs(ops) if self.decoder == "ssd_postprocess" else None

    # --- checks: the manifest must agree with the model file ----------------------------------------

    def _check_outputs(
        self, ops: list[dict[str, Any]]
    ) -> Literal["classification", "yolov5", "yolov8", "ssd_postprocess"]:
        outputs = [tuple(int(d) for d in o["shape"]) for o in self.output_details]
        n_labels = len(self.labels)
        has_ssd_op = any(op.get("op_name") == "TFLite_Detection_PostProcess" for op in ops)
        manifest = self.manifest
        if manifest.task == "classification":
            if has_ssd_op or len(outputs) != 1:
                raise ManifestError(
                    f"the manifest says classification, but the model has {len(outputs)} outputs "
                    f"{list(outputs)}{' ending in TFLite_Detection_PostProcess' if has_ssd_op else ''}: "
                    "that is a detection model"
                )
            shape = outputs[0]
            if sum(1 for d in shape if d > 1) > 1:
                raise ManifestError(
                    f"the manifest says classification, but the model's output has shape {list(shape)}, "
                    "which is a detection head, not one score per label"
                )
            size = int(np.prod(shape))
            if size != n_labels:
                raise ManifestError(
                    f"the manifest lists {n_labels} labels but the model outputs {size} scores (shape {list(shape)})"
                )
            return "classification"
        if manifest.decoder == "ssd_postprocess":
            if not has_ssd_op or len(outputs) < 4:
                raise ManifestError(
                    f"decoder ssd_postprocess needs a model ending in TFLite_Detection_PostProcess with 4 outputs; "
                    f"this model has outputs {list(outputs)}"
                )
            return "ssd_postprocess"
        if has_ssd_op:
            raise ManifestError(
                f"the model ends in TFLite_Detection_PostProcess: use decoder ssd_postprocess, not {manifest.decoder}"
            )
        if len(outputs) != 1:
            raise ManifestError(f"a YOLO head has one output; this model has {len(outputs)}: {list(outputs)}")
        found = yolo_head_layout(outputs[0], n_labels)
        if found is None:
            raise ManifestError(
                f"the output shape {list(outputs[0])} fits neither yolov8 [1,{n_labels + 4},N] nor "
                f"yolov5 [1,N,{n_labels + 5}] for the manifest's {n_labels} labels"
            )
        if manifest.decoder in ("yolov5", "yolov8") and found != manifest.decoder:
            raise ManifestError(
                f"the manifest says {manifest.decoder}, but the output shape {list(outputs[0])} is a {found} head "
                f"for {n_labels} labels"
            )
        return found

    def _ssd_outputs(self, ops: list[dict[str, Any]]) -> tuple[int, int, int, int]:
        """Output tensor indices (boxes, classes, scores, count): exporters list them in varying orders."""
        op = next(op for op in ops if op.get("op_name") == "TFLite_Detection_PostProcess")
        outs = [int(i) for i in op["outputs"]]
        return outs[0], outs[1], outs[2], outs[3]

    # --- description ---------------------------------------------------------------------------------

    def inputs_info(self) -> list[TensorInfo]:
        return [_tensor_info(d) for d in self.input_details]

    def outputs_info(self) -> list[TensorInfo]:
        return [_tensor_info(d) for d in self.output_details]

    # --- inference -----------------------------------------------------------------------------------

    def prepare(self, image_bytes: bytes) -> PreparedImage:
        t0 = time.perf_counter()
        image = decode_image(image_bytes)
        t1 = time.perf_counter()
        tensor, placement = self.preprocess(image)
        t2 = time.perf_counter()
        return PreparedImage(tensor, placement, _ms(t0, t1), _ms(t1, t2))

    def infer(
        self,
        interpreter: Interpreter,
        prepared: PreparedImage,
        score_threshold: float | None = None,
        max_detections: int | None = None,
    ) -> PredictResponse:
        t0 = time.perf_counter()
        interpreter.set_tensor(self.input_details[0]["index"], prepared.tensor)
        interpreter.invoke()
        if self._ssd_order is not None:
            raw = [interpreter.get_tensor(i) for i in self._ssd_order]
            quant = [(0.0, 0)] * 4
        else:
            raw = [interpreter.get_tensor(d["index"]) for d in self.output_details]
            quant = [d["quantization"] for d in self.output_details]
        t1 = time.perf_counter()
        outputs = [dequantize(r, float(q[0]), int(q[1])) for r, q in zip(raw, quant, strict=True)]
        prediction = self._decode(outputs, prepared.placement, score_threshold, max_detections)
        t2 = time.perf_counter()
        timings = Timings(
            decode=prepared.decode_ms,
            preprocess=prepared.preprocess_ms,
            inference=_ms(t0, t1),
            postprocess=_ms(t1, t2),
            total=round(prepared.decode_ms + prepared.preprocess_ms + _ms(t0, t2), 3),
        )
        placement = prepared.placement
        return PredictResponse(
            model_name=self.name,
            model_version=self.version,
            task=self.manifest.task,
            image=ImageSize(width=placement.orig_width, height=placement.orig_height),
            prediction=prediction,
            timings_ms=timings,
        )

    def _predict_on(
        self,
        interpreter: Interpreter,
        image_bytes: bytes,
        score_threshold: float | None,
        max_detections: int | None,
    ) -> PredictResponse:
        return self.infer(interpreter, self.prepare(image_bytes), score_threshold, max_detections)

    def predict(
        self, image_bytes: bytes, score_threshold: float | None = None, max_detections: int | None = None
    ) -> PredictResponse:
        """Decode, preprocess, invoke and decode the output, in the calling thread (blocking)."""
        with self.pool.blocking() as interpreter:
            return self._predict_on(interpreter, image_bytes, score_threshold, max_detections)

    async def predict_async(
        self, image_bytes: bytes, score_threshold: float | None = None, max_detections: int | None = None
    ) -> PredictResponse:
        """The same path on an interpreter's own thread: the whole request is one thread hop."""
        return await self.pool.run(
            lambda interpreter: self._predict_on(interpreter, image_bytes, score_threshold, max_detections)
        )

    def _decode(
        self,
        outputs: list[npt.NDArray[np.float32]],
        placement: Placement,
        score_threshold: float | None,
        max_detections: int | None,
    ) -> ClassificationPrediction | DetectionPrediction:
        manifest = self.manifest
        if self.decoder == "classification":
            scores = classification_scores(outputs[0], manifest.activation)
            best = int(np.argmax(scores))
            return ClassificationPrediction(
                label=self.labels[best],
                score=float(scores[best]),
                scores={label: float(s) for label, s in zip(self.labels, scores, strict=True)},
            )
        threshold = manifest.score_threshold if score_threshold is None else score_threshold
        limit = manifest.max_detections if max_detections is None else max_detections
        size = (self.input_spec.width, self.input_spec.height)
        if self.decoder == "ssd_postprocess":
            found: Detections = decode_ssd(
                outputs[0],
                outputs[1],
                outputs[2],
                outputs[3],
                input_size=size,
                score_threshold=threshold,
                max_detections=limit,
            )
        else:
            found = decode_yolo(
                outputs[0],
                self.decoder,
                len(self.labels),
                size,
                manifest.box_format,
                threshold,
                manifest.iou_threshold,
                limit,
            )
        boxes = placement.to_original(found.boxes)
        return DetectionPrediction(
            detections=[
                Detection(
                    label=self._label(int(c)),
                    class_index=int(c),
                    score=float(s),
                    box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                )
                for b, s, c in zip(boxes, found.scores, found.classes, strict=True)
            ]
        )

    def _label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class_{index}"

    def _check_tensors(self, inputs: dict[str, npt.NDArray[Any]]) -> None:
        by_name = {d["name"] for d in self.input_details}
        unknown = set(inputs) - by_name
        if unknown:
            raise InvalidTensorError(
                f"unknown input {sorted(unknown)}; the model's input is {sorted(by_name)}"
            )
        missing = by_name - set(inputs)
        if missing:
            raise InvalidTensorError(f"missing input {sorted(missing)}")

    def _invoke_raw(
        self, interpreter: Interpreter, inputs: dict[str, npt.NDArray[Any]]
    ) -> dict[str, npt.NDArray[Any]]:
        index = {d["name"]: d["index"] for d in self.input_details}
        for name, array in inputs.items():
            interpreter.set_tensor(index[name], array)
        interpreter.invoke()
        return {d["name"]: interpreter.get_tensor(d["index"]) for d in self.output_details}

    async def infer_tensors_async(self, inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Raw tensors in, raw tensors out (for the Open Inference Protocol): no pre/post-processing."""
        self._check_tensors(inputs)
        return await self.pool.run(lambda interpreter: self._invoke_raw(interpreter, inputs))

    def warm_up(self) -> None:
        """One inference per pooled interpreter so the first real request doesn't pay XNNPACK's setup."""
        zeros = np.zeros(self.input_details[0]["shape"], dtype=self.input_details[0]["dtype"])
        for interpreter in self.pool.each():
            self._invoke_raw(interpreter, {self.input_details[0]["name"]: zeros})
