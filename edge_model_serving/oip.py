"""KServe Open Inference Protocol v2 (REST) under /v2, binary tensor extension included.

Raw tensors in and out, as Triton and KServe serve them, so standard clients (tritonclient[http])
work unchanged. Pre- and post-processing are the client's business here; /v1 does them for you.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_model_serving import __version__
from edge_model_serving.deps import RuntimeDep, ServingRuntime, read_body
from edge_model_serving.errors import InvalidTensorError, ModelNotReadyError, ServingError
from edge_model_serving.model import LoadedModel

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

_HEADER_LENGTH = "Inference-Header-Content-Length"
_DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_NAMES = {dtype: name for name, dtype in _DATATYPES.items()}


def datatype_of(dtype: Any) -> str:
    return _NAMES.get(np.dtype(dtype), "BYTES")


class _TensorParameters(BaseModel):
    model_config = ConfigDict(extra="allow")
    binary_data_size: int | None = Field(default=None, ge=0)
    binary_data: bool | None = None


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    shape: list[int] = Field(description="Tensor shape.")
    datatype: str
    parameters: _TensorParameters | None = None
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    parameters: _TensorParameters | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


def _tensor_metadata(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"name": d["name"], "datatype": datatype_of(d["dtype"]), "shape": [int(x) for x in d["shape"]]}
        for d in details
    ]


def _model(runtime: ServingRuntime, name: str, version: str | None) -> LoadedModel:
    if version is not None and not version.isdigit():
        raise InvalidTensorError(f"version must be an integer, not {version!r}")
    return runtime.registry.get(name, int(version) if version else None)


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": "edge_model_serving", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def server_ready(runtime: RuntimeDep) -> JSONResponse:
    ready = runtime.registry.ready
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(name: str, runtime: RuntimeDep, version: str | None = None) -> dict[str, Any]:
    model = _model(runtime, name, version)
    info = runtime.registry.info(name)
    return {
        "name": name,
        "versions": [str(v.version) for v in info.versions if v.status == "ready"],
        "platform": "tflite",
        "inputs": _tensor_metadata(model.input_details),
        "outputs": _tensor_metadata(model.output_details),
    }


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(name: str, runtime: RuntimeDep, version: str | None = None) -> JSONResponse:
    try:
        model = _model(runtime, name, version)
    except ModelNotReadyError:
        return JSONResponse({"name": name, "ready": False}, status_code=400)
    return JSONResponse({"name": name, "version": str(model.version), "ready": True})


def _parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidTensorError(
                f"{_HEADER_LENGTH} {header_length!r} does not fit a body of {len(body)} bytes"
            )
        json_part, binary = body[: int(header_length)], body[int(header_length) :]
    else:
        json_part, binary = body, b""
    try:
        return InferenceRequest.model_validate_json(json_part), binary
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidTensorError(f"invalid inference request: {where}") from exc


def _from_json_data(
    name: str, data: list[Any], dtype: np.dtype[Any], datatype: str, shape: list[int]
) -> npt.NDArray[Any]:
    """JSON tensor data -> array, refusing values the datatype cannot hold instead of wrapping them."""
    try:
        values = np.asarray(data, dtype=np.float64 if dtype.kind != "b" else np.bool_).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidTensorError(
            f"input {name!r}: data must be a flat or nested list of numbers ({exc})"
        ) from exc
    count = int(np.prod(shape))
    if values.size != count:
        raise InvalidTensorError(f"input {name!r}: {values.size} values given, {shape} needs {count}")
    if dtype.kind in "iu" and values.size:
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise InvalidTensorError(
                f"input {name!r}: values outside the {datatype} range {info.min}..{info.max}"
            )
        if np.any(values != np.round(values.astype(np.float64))):
            raise InvalidTensorError(f"input {name!r}: {datatype} values must be integers")
    return values.astype(dtype).reshape(shape)


def _decode_inputs(
    request: InferenceRequest, binary: bytes, model: LoadedModel
) -> dict[str, npt.NDArray[Any]]:
    expected = {d["name"]: d for d in model.input_details}
    arrays: dict[str, npt.NDArray[Any]] = {}
    offset = 0
    for tensor in request.inputs:
        detail = expected.get(tensor.name)
        if detail is None:
            raise InvalidTensorError(
                f"unknown input {tensor.name!r}; the model's inputs are {sorted(expected)}"
            )
        want_type, want_shape = datatype_of(detail["dtype"]), [int(x) for x in detail["shape"]]
        if tensor.datatype != want_type or tensor.shape != want_shape:
            raise InvalidTensorError(
                f"input {tensor.name!r} must be {want_type} {want_shape}, got {tensor.datatype} {tensor.shape}"
            )
        dtype = _DATATYPES[want_type]
        count = int(np.prod(want_shape))
        size = tensor.parameters.binary_data_size if tensor.parameters else None
        if size is not None:
            if size != count * dtype.itemsize or offset + size > len(binary):
                raise InvalidTensorError(
                    f"input {tensor.name!r}: binary_data_size {size} but {want_type} {want_shape} "
                    f"takes {count * dtype.itemsize} bytes ({len(binary) - offset} available)"
                )
            array = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(want_shape)
            offset += size
        elif tensor.data is not None:
            array = _from_json_data(tensor.name, tensor.data, dtype, want_type, want_shape)
        else:
            raise InvalidTensorError(f"input {tensor.name!r} has neither data nor binary_data_size")
        arrays[tensor.name] = array
    return arrays


def _encode_outputs(
    request: InferenceRequest, outputs: dict[str, npt.NDArray[Any]]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    all_binary = bool((request.parameters or {}).get("binary_data_output", False))
    wanted: dict[str, bool] = {}
    if request.outputs:
        for out in request.outputs:
            if out.name not in outputs:
                raise InvalidTensorError(
                    f"unknown output {out.name!r}; the model's outputs are {sorted(outputs)}"
                )
            wanted[out.name] = bool(out.parameters and out.parameters.binary_data) or all_binary
    else:
        wanted = dict.fromkeys(outputs, all_binary)
    tensors, chunks = [], []
    for name, binary in wanted.items():
        array = outputs[name]
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(array.dtype),
            "shape": list(array.shape),
        }
        if binary:
            raw = np.ascontiguousarray(array).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = array.reshape(-1).tolist()
        tensors.append(tensor)
    return tensors, chunks


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(name: str, request: Request, runtime: RuntimeDep, version: str | None = None) -> Response:
    model = _model(runtime, name, version)
    runtime.admit()
    outcome: Literal["ok"] | str = "ok"
    try:
        body = await read_body(request, runtime.settings.max_body_bytes)
        parsed, binary = _parse_request(body, request.headers.get(_HEADER_LENGTH))
        inputs = _decode_inputs(parsed, binary, model)
        outputs = await model.infer_tensors_async(inputs)
        tensors, chunks = _encode_outputs(parsed, outputs)
    except ServingError as exc:
        outcome = exc.code
        raise
    finally:
        runtime.release()
        runtime.metrics.requests.labels(name, str(model.version), "v2", outcome).inc()
    payload: dict[str, Any] = {"model_name": name, "model_version": str(model.version), "outputs": tensors}
    if parsed.id is not None:
        payload["id"] = parsed.id
    header = json.dumps(payload, separators=(",", ":")).encode()
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(chunks),
        media_type="application/octet-stream",
        headers={_HEADER_LENGTH: str(len(header))},
    )
