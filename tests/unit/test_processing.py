"""Preprocessing, quantisation and decoders on crafted inputs with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_model_serving.errors import InvalidImageError
from edge_model_serving.manifest import ModelManifest
from edge_model_serving.processing import (
    InputSpec,
    Preprocessor,
    classification_scores,
    decode_image,
    decode_ssd,
    decode_yolo,
    dequantize,
    nms,
    yolo_head_layout,
)


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def _manifest(**fields: object) -> ModelManifest:
    return ModelManifest.model_validate({"task": "classification", "labels": ["a"], **fields})


# --- decoding ------------------------------------------------------------------------------------


def test_greyscale_png_is_decoded_to_three_channels() -> None:
    grey = np.full((5, 7), 200, np.uint8)
    image = decode_image(_png(grey))
    assert image.shape == (5, 7, 3)
    assert np.all(image == 200)


def test_rgba_png_drops_alpha_and_keeps_colour() -> None:
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[..., 2] = 255  # red
    bgra[..., 3] = 10  # almost transparent: alpha is ignored, not blended
    image = decode_image(_png(bgra))
    assert image.shape == (4, 4, 3)
    assert image[0, 0].tolist() == [0, 0, 255]


def test_sixteen_bit_png_is_scaled_to_eight_bits() -> None:
    image16 = np.full((3, 3, 3), 65535, np.uint16)
    assert decode_image(_png(image16)).max() == 255


def test_jpeg_is_decoded() -> None:
    ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    assert ok
    assert decode_image(buf.tobytes()).shape == (16, 16, 3)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world", b"GIF89a....", b"\xff\xd8\xff" + b"\x00" * 64, b"\x89PNG\r\n\x1a\n" + b"\x01" * 40],
)
def test_anything_but_a_decodable_jpeg_or_png_is_an_invalid_image(data: bytes) -> None:
    with pytest.raises(InvalidImageError):
        decode_image(data)


# --- preprocessing and quantisation --------------------------------------------------------------


def _spec(
    dtype: type[np.generic],
    scale: float = 0.0,
    zp: int = 0,
    h: int = 4,
    w: int = 4,
    c: int = 3,
    layout: str = "NHWC",
) -> InputSpec:
    return InputSpec(h, w, c, layout, dtype, scale, zp)  # type: ignore[arg-type]


def test_uint8_input_with_unit_range_quantisation_receives_the_pixels_unchanged() -> None:
    pre = Preprocessor(_spec(np.uint8, 1 / 255, 0), _manifest(normalization="[0,1]"))
    image = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    tensor, _ = pre(image)
    assert tensor.dtype == np.uint8
    assert np.array_equal(tensor[0], image[..., ::-1])  # BGR decoded, RGB fed


def test_int8_input_is_fed_through_its_scale_and_zero_point() -> None:
    # float domain [-1, 1], quantised with scale 1/128, zero point 0: q = (p - 127.5) / 127.5 * 128
    pre = Preprocessor(_spec(np.int8, 1 / 128, 0), _manifest(normalization="[-1,1]", color_order="BGR"))
    image = np.zeros((4, 4, 3), np.uint8)
    image[0, 0] = (0, 128, 255)
    tensor, _ = pre(image)
    assert tensor.dtype == np.int8
    assert tensor[0, 0, 0].tolist() == [-128, 1, 127]  # 255 -> 128 saturates at 127


def test_auto_normalisation_maps_pixels_onto_an_int8_input_range() -> None:
    pre = Preprocessor(_spec(np.int8, 0.0039, -128), _manifest())
    image = np.array([[[0, 128, 255]]], np.uint8).repeat(4, 0).repeat(4, 1)
    tensor, _ = pre(image)
    assert tensor[0, 0, 0].tolist() == [127, 0, -128]  # RGB order: 255, 128, 0 minus 128


def test_float_input_gets_mean_std_normalisation_in_the_manifest_colour_order() -> None:
    manifest = _manifest(normalization={"mean": [10, 20, 30], "std": [2, 4, 5]})
    pre = Preprocessor(_spec(np.float32), manifest)
    image = np.zeros((4, 4, 3), np.uint8)
    image[...] = (50, 60, 70)  # B, G, R
    tensor, _ = pre(image)
    assert tensor.dtype == np.float32
    np.testing.assert_allclose(tensor[0, 0, 0], [(70 - 10) / 2, (60 - 20) / 4, (50 - 30) / 5])


def test_nchw_greyscale_input() -> None:
    pre = Preprocessor(_spec(np.float32, c=1, layout="NCHW"), _manifest(normalization="raw"))
    tensor, _ = pre(np.full((8, 8, 3), 90, np.uint8))
    assert tensor.shape == (1, 1, 4, 4)
    assert np.allclose(tensor, 90)


def test_letterbox_pads_and_boxes_map_back_to_the_original_image() -> None:
    manifest = _manifest(resize="letterbox", normalization="raw", letterbox_fill=0)
    pre = Preprocessor(_spec(np.float32, h=64, w=64), manifest)
    image = np.full((100, 200, 3), 255, np.uint8)  # 2:1 landscape
    tensor, placement = pre(image)
    assert tensor.shape == (1, 64, 64, 3)
    assert np.all(tensor[0, :16] == 0) and np.all(tensor[0, 48:] == 0)  # bands above and below
    assert np.all(tensor[0, 16:48] == 255)
    # the whole image region in input pixels is the whole original image
    back = placement.to_original(np.array([[0, 16, 64, 48], [16, 24, 32, 32]], np.float32))
    np.testing.assert_allclose(back[0], [0, 0, 1, 1], atol=1e-6)
    np.testing.assert_allclose(back[1], [0.25, 0.25, 0.5, 0.5], atol=1e-6)


def test_stretch_maps_boxes_back_per_axis() -> None:
    pre = Preprocessor(_spec(np.float32, h=10, w=10), _manifest())
    _, placement = pre(np.zeros((50, 20, 3), np.uint8))
    np.testing.assert_allclose(
        placement.to_original(np.array([[5, 5, 10, 10]], np.float32)), [[0.5, 0.5, 1, 1]]
    )


def test_dequantize() -> None:
    q = np.array([0, 128, 255], np.uint8)
    np.testing.assert_allclose(dequantize(q, 0.5, 128), [-64.0, 0.0, 63.5])
    assert dequantize(np.array([1.5], np.float32), 0.0, 0)[0] == 1.5


# --- classification ------------------------------------------------------------------------------


def test_logits_get_a_softmax() -> None:
    scores = classification_scores(np.array([2.0, 0.0, -1.0], np.float32), "auto")
    assert abs(scores.sum() - 1) < 1e-6
    assert scores.argmax() == 0 and 0.8 < scores[0] < 0.9


def test_probabilities_are_reported_as_they_are() -> None:
    probs = np.array([0.1, 0.7, 0.2], np.float32)
    np.testing.assert_allclose(classification_scores(probs, "auto"), probs)
    # a uint8-quantised softmax does not sum exactly to 1: still probabilities, not logits
    quantised = dequantize(np.array([26, 178, 51], np.uint8), 1 / 256, 0)
    np.testing.assert_allclose(classification_scores(quantised, "auto"), quantised)


def test_explicit_sigmoid() -> None:
    np.testing.assert_allclose(classification_scores(np.array([0.0], np.float32), "sigmoid"), [0.5])


# --- detection -----------------------------------------------------------------------------------


def test_nms_is_class_aware_and_best_first() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.6, 0.9, 0.8, 0.3], np.float32)
    classes = np.array([0, 0, 1, 0], np.int64)
    keep = nms(boxes, scores, classes, iou_threshold=0.5, max_out=10)
    assert keep.tolist() == [1, 2, 3]  # box 0 is suppressed by box 1 (same class), not by box 2
    assert nms(boxes, scores, classes, 0.5, max_out=2).tolist() == [1, 2]


def test_yolo_layout_is_read_from_the_shape() -> None:
    assert yolo_head_layout((1, 6, 64), 2) == "yolov8"
    assert yolo_head_layout((1, 64, 7), 2) == "yolov5"
    assert yolo_head_layout((1, 9, 64), 2) is None


def _v8_output(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, np.float32).T[None]  # [1, 4 + C, N]


def test_yolov8_decoding_with_normalised_boxes() -> None:
    out = _v8_output(
        [
            [0.5, 0.5, 0.2, 0.4, 0.9, 0.1],  # class 0 centred
            [0.51, 0.5, 0.2, 0.4, 0.8, 0.0],  # duplicate of the first: suppressed
            [0.1, 0.1, 0.1, 0.1, 0.05, 0.7],  # class 1
            [0.9, 0.9, 0.1, 0.1, 0.1, 0.2],  # below threshold
        ]
    )
    found = decode_yolo(out, "yolov8", 2, (100, 50), "auto", 0.25, 0.45, 100)
    assert found.classes.tolist() == [0, 1]
    np.testing.assert_allclose(found.scores, [0.9, 0.7], atol=1e-6)
    np.testing.assert_allclose(found.boxes[0], [40, 15, 60, 35], atol=1e-4)  # input pixels


def test_yolov8_decoding_with_pixel_boxes_and_threshold_override() -> None:
    out = _v8_output([[32, 32, 16, 16, 0.3, 0.1]])
    found = decode_yolo(out, "yolov8", 2, (64, 64), "auto", 0.25, 0.45, 100)
    np.testing.assert_allclose(found.boxes[0], [24, 24, 40, 40])
    assert decode_yolo(out, "yolov8", 2, (64, 64), "auto", 0.5, 0.45, 100).scores.size == 0


def test_yolov5_scores_are_objectness_times_class() -> None:
    out = np.array([[[0.5, 0.5, 0.5, 0.5, 0.5, 0.2, 0.9]]], np.float32)  # [1, N, 5 + C]
    found = decode_yolo(out, "yolov5", 2, (10, 10), "normalized", 0.1, 0.45, 100)
    assert found.classes.tolist() == [1]
    np.testing.assert_allclose(found.scores, [0.45], atol=1e-6)
    np.testing.assert_allclose(found.boxes[0], [2.5, 2.5, 7.5, 7.5])


def test_many_candidates_decode_without_python_loops_over_anchors() -> None:
    rng = np.random.default_rng(1)
    n = 8400
    table = np.concatenate(
        [rng.random((n, 4), np.float32) * 0.2 + 0.1, rng.random((n, 3), np.float32)], axis=1
    )
    found = decode_yolo(table.T[None], "yolov8", 3, (640, 640), "auto", 0.25, 0.45, 300)
    assert 0 < found.scores.size <= 300
    assert np.all(np.diff(found.scores) <= 0)


def test_ssd_outputs_are_reordered_to_xyxy_and_cut_at_count() -> None:
    boxes = np.array(
        [[[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9], [0, 0, 1, 1]]], np.float32
    )  # ymin xmin ymax xmax
    classes = np.array([[1, 0, 0]], np.float32)
    scores = np.array([[0.9, 0.2, 0.95]], np.float32)
    count = np.array([2], np.float32)  # the third slot is padding
    found = decode_ssd(boxes, classes, scores, count, (100, 100), 0.5, 10)
    assert found.classes.tolist() == [1]
    np.testing.assert_allclose(found.boxes, [[20, 10, 40, 30]], atol=1e-4)
