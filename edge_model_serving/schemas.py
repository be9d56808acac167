"""Typed results and listings shared by the runtime and the HTTP layer (plain pydantic, no FastAPI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Timings(BaseModel):
    decode: float = Field(description="Image decoding, ms.")
    preprocess: float = Field(description="Resize, colour, normalisation and quantisation, ms.")
    inference: float = Field(description="Interpreter invoke (with tensor copies), ms.")
    postprocess: float = Field(description="Dequantisation and decoding (softmax, NMS...), ms.")
    total: float = Field(description="Sum of the stages, ms (excludes HTTP and queueing).")


class ImageSize(BaseModel):
    width: int
    height: int


class ClassificationPrediction(BaseModel):
    task: Literal["classification"] = "classification"
    label: str = Field(description="The most probable label.")
    score: float = Field(description="Its probability, 0..1.")
    scores: dict[str, float] = Field(description="Probability of every label, in the model's label order.")


class Detection(BaseModel):
    label: str
    class_index: int = Field(description="Index of the label in the model's label list.")
    score: float = Field(description="Detection confidence, 0..1.")
    box: tuple[float, float, float, float] = Field(
        description="[x_min, y_min, x_max, y_max] normalised to the original image (0..1)."
    )


class DetectionPrediction(BaseModel):
    task: Literal["detection"] = "detection"
    detections: list[Detection] = Field(description="Best score first, after class-aware NMS.")


class PredictResponse(BaseModel):
    model_name: str
    model_version: int
    task: Literal["classification", "detection"]
    image: ImageSize = Field(description="Size of the image that was sent.")
    prediction: ClassificationPrediction | DetectionPrediction = Field(discriminator="task")
    timings_ms: Timings


class TensorInfo(BaseModel):
    name: str
    shape: list[int]
    dtype: str
    quantization: tuple[float, int] | None = Field(
        default=None, description="(scale, zero_point) when the tensor is quantised."
    )


class VersionInfo(BaseModel):
    version: int
    status: Literal["loading", "ready", "failed"]
    error: str | None = Field(default=None, description="Why the version failed to load.")
    path: str
    source: str | None = Field(default=None, description="model.yaml or metadata.json.")
    task: Literal["classification", "detection"] | None = None
    decoder: str | None = None
    labels: list[str] = []
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    loaded_at: float | None = Field(default=None, description="Unix time the version became ready.")


class ModelInfo(BaseModel):
    name: str
    latest_version: int | None = Field(description="Highest ready version: what unversioned calls use.")
    versions: list[VersionInfo]


class ModelList(BaseModel):
    models: list[ModelInfo]
