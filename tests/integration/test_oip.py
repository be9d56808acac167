"""The Open Inference Protocol v2, driven by the standard client (tritonclient[http]) against the real server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import RED, encode, solid


@pytest.fixture
def triton_client(served: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(
        url=served.removeprefix("http://"), connection_timeout=10, network_timeout=10
    )
    yield client
    client.close()


def _red_uint8() -> np.ndarray:
    tensor = np.zeros((1, 32, 32, 3), np.uint8)
    tensor[..., 0] = 255  # RGB red, fed as the uint8 model expects
    return tensor


def test_server_and_model_metadata(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]
    assert triton_client.is_model_ready("color-classifier")
    assert triton_client.is_model_ready("color-classifier", "2")
    assert not triton_client.is_model_ready("no-such-model")
    meta = triton_client.get_model_metadata("color-classifier", "1")
    assert meta["inputs"][0]["datatype"] == "UINT8" and meta["inputs"][0]["shape"] == [1, 32, 32, 3]
    assert meta["outputs"][0]["shape"] == [1, 3]


@pytest.mark.parametrize("binary", [True, False])
def test_infer_gives_the_raw_output_tensor(triton_client: triton.InferenceServerClient, binary: bool) -> None:
    name = triton_client.get_model_metadata("color-classifier", "1")["inputs"][0]["name"]
    tensor = triton.InferInput(name, [1, 32, 32, 3], "UINT8")
    tensor.set_data_from_numpy(_red_uint8(), binary_data=binary)
    outputs = (
        None
        if binary
        else [
            triton.InferRequestedOutput(
                triton_client.get_model_metadata("color-classifier", "1")["outputs"][0]["name"],
                binary_data=False,
            )
        ]
    )

    result = triton_client.infer("color-classifier", [tensor], model_version="1", outputs=outputs)

    out_name = result.get_response()["outputs"][0]["name"]
    scores = result.as_numpy(out_name)
    assert scores.shape == (1, 3) and scores.dtype == np.uint8
    assert int(np.argmax(scores)) == 0 and scores[0, 0] > 230  # quantised probability of red


def test_oip_and_v1_agree(triton_client: triton.InferenceServerClient, served: str) -> None:
    meta = triton_client.get_model_metadata("color-classifier", "2")  # float input [-1, 1], logits out
    tensor = triton.InferInput(meta["inputs"][0]["name"], [1, 32, 32, 3], "FP32")
    tensor.set_data_from_numpy((_red_uint8().astype(np.float32) - 127.5) / 127.5)
    logits = triton_client.infer("color-classifier", [tensor], model_version="2").as_numpy(
        meta["outputs"][0]["name"]
    )
    softmax = np.exp(logits[0] - logits[0].max())
    softmax /= softmax.sum()
    v1 = httpx.post(
        f"{served}/v1/models/color-classifier/versions/2:predict",
        content=encode(solid(RED)),
        headers={"content-type": "image/png"},
    ).json()
    assert list(v1["prediction"]["scores"].values()) == pytest.approx(softmax.tolist(), abs=1e-4)


def test_wrong_datatype_or_shape_says_what_was_expected(triton_client: triton.InferenceServerClient) -> None:
    name = triton_client.get_model_metadata("color-classifier", "1")["inputs"][0]["name"]
    wrong_type = triton.InferInput(name, [1, 32, 32, 3], "FP32")
    wrong_type.set_data_from_numpy(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(InferenceServerException, match=r"must be UINT8 \[1, 32, 32, 3\], got FP32"):
        triton_client.infer("color-classifier", [wrong_type], model_version="1")
    wrong_shape = triton.InferInput(name, [1, 16, 16, 3], "UINT8")
    wrong_shape.set_data_from_numpy(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(InferenceServerException, match=r"got UINT8 \[1, 16, 16, 3\]"):
        triton_client.infer("color-classifier", [wrong_shape], model_version="1")
    with pytest.raises(InferenceServerException, match="no model named"):
        triton_client.infer("nope", [wrong_shape])


def test_malformed_json_requests_get_400_with_a_code(served: str) -> None:
    url = f"{served}/v2/models/color-classifier/versions/1/infer"
    for body in [b"{not json", b'{"inputs": []}', b'{"inputs": [{"name": "x"}]}']:
        response = httpx.post(url, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_tensor" and response.json()["error"]
    meta = httpx.get(f"{served}/v2/models/color-classifier/versions/1").json()
    short = {
        "inputs": [
            {
                "name": meta["inputs"][0]["name"],
                "shape": [1, 32, 32, 3],
                "datatype": "UINT8",
                "data": [1, 2, 3],
            }
        ]
    }
    response = httpx.post(url, json=short)
    assert response.status_code == 400 and "3 values given" in response.json()["detail"]
    out_of_range = {"inputs": [{**short["inputs"][0], "data": [300] * (32 * 32 * 3)}]}
    response = httpx.post(url, json=out_of_range)
    assert response.status_code == 400 and "range" in response.json()["detail"]
