"""Model manifests: `model.yaml` (our format) and `metadata.json` (the layout common among VIO users)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from edge_model_serving.errors import ManifestError

Task = Literal["classification", "detection"]
Decoder = Literal["ssd_postprocess", "yolov5", "yolov8", "yolo"]

# Pixel values arrive as 0..255; each preset is the (mean, std) that maps them to the model's float domain.
NORMALIZATION_PRESETS: dict[str, tuple[float, float]] = {
    "[0,1]": (0.0, 255.0),
    "0..1": (0.0, 255.0),
    "[-1,1]": (127.5, 127.5),
    "-1..1": (127.5, 127.5),
    "raw": (0.0, 1.0),
    "0..255": (0.0, 1.0),
}
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class Normalization(BaseModel):
    """Per-channel `(pixel - mean) / std`, pixels in 0..255 and in the manifest's colour order.

    `auto` maps the full 0..255 pixel range onto the range a quantised input covers (so uint8 pixels
    reach the model unchanged), and means `[0,1]` for float inputs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    auto: bool = Field(default=False, description="Derive the mapping from the input's quantisation.")
    mean: tuple[float, float, float] = Field(default=(0.0, 0.0, 0.0), description="Per-channel mean.")
    std: tuple[float, float, float] = Field(default=(255.0, 255.0, 255.0), description="Per-channel std.")

    @model_validator(mode="after")
    def _positive_std(self) -> Normalization:
        if any(s == 0 for s in self.std):
            raise ValueError("std must not contain 0")
        return self


def _parse_normalization(value: Any) -> Any:
    """Accept a preset name, a `[low, high]` float range, or `{mean: [...], std: [...]}`."""
    if isinstance(value, Normalization):
        return value
    if isinstance(value, str):
        key = value.replace(" ", "").lower()
        if key == "auto":
            return Normalization(auto=True)
        if key == "imagenet":
            return Normalization(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        if key not in NORMALIZATION_PRESETS:
            names = ", ".join(sorted({*NORMALIZATION_PRESETS, "auto", "imagenet"}))
            raise ValueError(f"unknown normalization preset {value!r}; use one of {names}, or mean/std")
        mean, std = NORMALIZATION_PRESETS[key]
        return Normalization(mean=(mean,) * 3, std=(std,) * 3)
    if isinstance(value, list | tuple) and len(value) == 2:
        low, high = float(value[0]), float(value[1])
        if high <= low:
            raise ValueError("a normalization range [low, high] needs high > low")
        std = 255.0 / (high - low)
        return Normalization(mean=(-low * std,) * 3, std=(std,) * 3)
    if isinstance(value, dict):
        out = dict(value)
        for key in ("mean", "std"):
            if isinstance(out.get(key), int | float):
                out[key] = (float(out[key]),) * 3
        return out
    raise ValueError("normalization must be a preset name, a [low, high] range or {mean, std}")


class ModelManifest(BaseModel):
    """What the model file cannot tell about itself: its task, labels, and how to feed and decode it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Task = Field(description="`classification` (one label per image) or `detection` (boxes).")
    labels: list[str] | None = Field(
        default=None, min_length=1, description="Class labels in output order; or give `labels_file`."
    )
    labels_file: str | None = Field(
        default=None, description="A text file beside the model, one label per line (default labels.txt)."
    )
    color_order: Literal["RGB", "BGR"] = Field(default="RGB", description="Channel order the model expects.")
    normalization: Annotated[Normalization, BeforeValidator(_parse_normalization)] = Field(
        default=Normalization(auto=True),
        description="`auto`, a preset (`[0,1]`, `[-1,1]`, `raw`/`0..255`, `imagenet`), a [low, high] range, "
        "or {mean, std} per channel, applied to 0..255 pixels before the input's own quantisation.",
    )
    resize: Literal["stretch", "letterbox"] = Field(
        default="stretch", description="`stretch` to the input size, or `letterbox` (keep aspect, pad)."
    )
    letterbox_fill: int = Field(default=114, ge=0, le=255, description="Padding grey level for letterbox.")
    activation: Literal["auto", "softmax", "sigmoid", "none"] = Field(
        default="auto",
        description="Classification output activation to apply; `auto` applies softmax only to logits "
        "(outputs that are not already probabilities).",
    )
    decoder: Decoder | None = Field(
        default=None,
        description="Detection head: `ssd_postprocess` (TFLite_Detection_PostProcess), `yolov5` [1,N,5+C], "
        "`yolov8` [1,4+C,N] (also YOLO11), or `yolo` to pick v5/v8 from the output shape.",
    )
    box_format: Literal["auto", "normalized", "pixels"] = Field(
        default="auto", description="YOLO boxes: normalised to the input, or in input pixels; auto detects."
    )
    score_threshold: float = Field(default=0.25, ge=0.0, le=1.0, description="Minimum detection score.")
    iou_threshold: float = Field(default=0.45, gt=0.0, le=1.0, description="Class-aware NMS IoU threshold.")
    max_detections: int = Field(default=100, ge=1, le=1000, description="Most detections returned.")
    description: str = Field(default="", description="Free text shown in the model listing.")

    @model_validator(mode="after")
    def _task_fits_decoder(self) -> ModelManifest:
        if self.task == "detection" and self.decoder is None:
            raise ValueError("a detection model needs a decoder: ssd_postprocess, yolov5, yolov8 or yolo")
        if self.task == "classification" and self.decoder is not None:
            raise ValueError(f"decoder {self.decoder!r} is for detection, but task is classification")
        if self.labels is not None and self.labels_file is not None:
            raise ValueError("give labels or labels_file, not both")
        return self


class LegacyMetadata(BaseModel):
    """`metadata.json` as VIO users already write it next to a single `*.tflite`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    output_type: Literal["classification", "object_detection", "yolo"]
    class_names: list[str] = Field(min_length=1)
    normalization: Literal["mobilenet", "yolo", "uint8"] = "uint8"

    def to_manifest(self) -> ModelManifest:
        normalization = {"mobilenet": "[-1,1]", "yolo": "[0,1]", "uint8": "auto"}[self.normalization]
        if self.output_type == "classification":
            return ModelManifest(task="classification", labels=self.class_names, normalization=normalization)
        decoder: Decoder = "ssd_postprocess" if self.output_type == "object_detection" else "yolo"
        resize: Literal["stretch", "letterbox"] = "letterbox" if decoder == "yolo" else "stretch"
        return ModelManifest(
            task="detection",
            labels=self.class_names,
            normalization=normalization,
            decoder=decoder,
            resize=resize,
        )


def _format_validation_error(source: Path, error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        parts.append(f"{where}: {item['msg']}")
    return f"{source.name}: " + "; ".join(parts)


def load_manifest(folder: Path) -> tuple[ModelManifest, list[str], str]:
    """Read a version folder's manifest. Returns (manifest, labels, source file name).

    Raises ManifestError with the file and field that are wrong.
    """
    yaml_path, json_path = folder / "model.yaml", folder / "metadata.json"
    if yaml_path.is_file():
        try:
            raw = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ManifestError(f"model.yaml is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ManifestError("model.yaml must be a mapping of fields (task, labels, ...)")
        try:
            manifest = ModelManifest.model_validate(raw)
        except ValidationError as exc:
            raise ManifestError(_format_validation_error(yaml_path, exc)) from exc
        source = yaml_path.name
    elif json_path.is_file():
        try:
            legacy = LegacyMetadata.model_validate(json.loads(json_path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"metadata.json is not valid JSON: {exc}") from exc
        except ValidationError as exc:
            raise ManifestError(_format_validation_error(json_path, exc)) from exc
        manifest, source = legacy.to_manifest(), json_path.name
    else:
        raise ManifestError("no model.yaml or metadata.json beside the model")
    return manifest, _resolve_labels(folder, manifest), source


def _resolve_labels(folder: Path, manifest: ModelManifest) -> list[str]:
    if manifest.labels is not None:
        return list(manifest.labels)
    labels_path = folder / (manifest.labels_file or "labels.txt")
    if not labels_path.is_file():
        raise ManifestError(f"no labels: set `labels` in the manifest or provide {labels_path.name}")
    labels = [line.strip() for line in labels_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not labels:
        raise ManifestError(f"{labels_path.name} is empty")
    return labels
