"""The synthetic duck line: determinism, exact and tight ground truth, and the dataset and demo layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from hub.duckline.dataset import write_dataset, write_demo_frames
from hub.duckline.synth import CAMERAS, DEFECT_KINDS, FRAME_SIZE, Box, render_item

SEED = 7
WIDTH, HEIGHT = FRAME_SIZE
VISIBLE = 12  # grey levels on any channel: a difference a person or a model would notice


def _pixels(box: Box) -> tuple[int, int, int, int]:
    """Box edges in pixels (rounded: the stored floats are exact pixel edges divided by the size)."""
    return round(box[0] * WIDTH), round(box[1] * HEIGHT), round(box[2] * WIDTH), round(box[3] * HEIGHT)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_index_and_kind_render_identical_bytes() -> None:
    first, second = render_item(SEED, 3, "stain"), render_item(SEED, 3, "stain")
    for camera in CAMERAS:
        assert first.frames[camera].image.tobytes() == second.frames[camera].image.tobytes()
        assert first.frames[camera].defects == second.frames[camera].defects
        assert first.frames[camera].duck_box == second.frames[camera].duck_box


def test_a_different_seed_or_index_renders_a_different_scene() -> None:
    base = render_item(SEED, 3, None).frames["top"].image
    assert not np.array_equal(base, render_item(SEED + 1, 3, None).frames["top"].image)
    assert not np.array_equal(base, render_item(SEED, 4, None).frames["top"].image)


def test_random_kind_is_deterministic_and_follows_ko_fraction() -> None:
    kinds = [render_item(SEED, i, "random", ko_fraction=0.5, size=(160, 120)).defect_kind for i in range(40)]
    again = [render_item(SEED, i, "random", ko_fraction=0.5, size=(160, 120)).defect_kind for i in range(40)]
    assert kinds == again
    assert 10 <= sum(k is not None for k in kinds) <= 30
    assert all(
        render_item(SEED, i, "random", ko_fraction=0.0, size=(160, 120)).defect_kind is None for i in range(5)
    )


def test_random_draw_renders_the_same_scene_as_asking_for_that_kind() -> None:
    drawn = next(item for i in range(20) if (item := render_item(SEED, i, "random")).defect_kind is not None)
    asked = render_item(SEED, drawn.index, drawn.defect_kind)
    for camera in CAMERAS:
        assert np.array_equal(drawn.frames[camera].image, asked.frames[camera].image)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown defect kind"):
        render_item(SEED, 0, "cracked")
    with pytest.raises(ValueError, match="ko_fraction"):
        render_item(SEED, 0, ko_fraction=1.5)
    with pytest.raises(ValueError, match="non-negative"):
        render_item(-1, 0)


# --- ground truth ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_the_defect_box_holds_exactly_what_the_defect_changed(kind: str) -> None:
    """Same (seed, index) with and without the defect: the visible difference is inside the box and fills it."""
    for index in range(8):  # the three ways a beak breaks, the five dropped objects, both stain sites...
        good, bad = render_item(SEED, index, None), render_item(SEED, index, kind)
        assert bad.defect_kind == kind
        for camera in CAMERAS:
            frame = bad.frames[camera]
            assert not frame.ok
            assert [d.kind for d in frame.defects] == [kind]
            x0, y0, x1, y1 = box = _pixels(frame.defects[0].box)
            diff = np.abs(frame.image.astype(np.int16) - good.frames[camera].image.astype(np.int16)).max(
                axis=2
            )
            ys, xs = np.nonzero(diff > VISIBLE)
            assert xs.size > 0, f"{kind} is not visible in {camera} #{index}"
            outside = (xs < x0 - 2) | (xs >= x1 + 2) | (ys < y0 - 2) | (ys >= y1 + 2)
            assert outside.sum() <= max(2, xs.size // 1000), (
                f"{kind} {camera} #{index}: changes outside its box"
            )
            seen = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            assert _iou(seen, box) >= 0.5, f"{kind} {camera} #{index}: box {box} is loose around {seen}"


def test_wrong_colour_box_is_the_duck_box() -> None:
    for camera, frame in render_item(SEED, 2, "wrong_colour").frames.items():
        assert _iou(_pixels(frame.defects[0].box), _pixels(frame.duck_box)) > 0.97, camera


def test_boxes_are_normalised_and_the_duck_is_inside_the_frame() -> None:
    for index, kind in enumerate([None, *DEFECT_KINDS] * 2):
        for frame in render_item(SEED + 1, index, kind).frames.values():
            x0, y0, x1, y1 = frame.duck_box
            assert 0.0 < x0 < x1 < 1.0 and 0.0 < y0 < y1 < 1.0  # strictly inside: a margin all round
            assert 0.28 <= x1 - x0 <= 0.58  # the duck fills roughly a third to a half of the width
            for defect in frame.defects:
                assert all(0.0 <= v <= 1.0 for v in defect.box)
                assert defect.box[0] < defect.box[2] and defect.box[1] < defect.box[3]
            assert frame.image.shape == (HEIGHT, WIDTH, 3) and frame.image.dtype == np.uint8


def test_ok_parts_have_no_defects_in_any_view() -> None:
    item = render_item(SEED, 0, None)
    assert item.defect_kind is None
    assert all(frame.ok and frame.defects == () for frame in item.frames.values())
    assert set(item.frames) == set(CAMERAS)


def test_foreign_objects_lie_beside_the_duck_not_on_it() -> None:
    for index in range(6):
        for frame in render_item(SEED, index, "foreign_object", size=(320, 240)).frames.values():
            a, b = frame.defects[0].box, frame.duck_box
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


# --- files -------------------------------------------------------------------------------------------


def _read_truth(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_write_dataset_layout_labels_and_truth_agree(tmp_path: Path) -> None:
    counts = write_dataset(tmp_path, count=12, seed=SEED, ko_fraction=0.5)

    assert sum(counts.values()) == 24
    truth = _read_truth(tmp_path / "truth.jsonl")
    assert len(truth) == 24
    data = yaml.safe_load((tmp_path / "detection" / "data.yaml").read_text())
    assert data["names"] == dict(enumerate(DEFECT_KINDS))
    assert (data["train"], data["val"], data["test"]) == ("images/train", "images/val", "images/test")
    assert Path(data["path"]) == (tmp_path / "detection").resolve()

    splits: dict[int, set[str]] = {}
    for record in truth:
        split, name = str(record["split"]), Path(str(record["file"])).stem
        assert record["file"] == f"detection/images/{split}/{name}.jpg"
        assert name == f"{record['index']:05d}_{record['camera']}"
        assert (tmp_path / str(record["file"])).is_file()
        cls = "ok" if record["ok"] else "ko"
        assert (tmp_path / "classification" / split / cls / f"{name}.jpg").is_file()
        assert not (
            tmp_path / "classification" / split / ("ko" if cls == "ok" else "ok") / f"{name}.jpg"
        ).exists()
        splits.setdefault(int(str(record["index"])), set()).add(split)

        lines = (tmp_path / "detection" / "labels" / split / f"{name}.txt").read_text().splitlines()
        defects = record["defects"]
        assert isinstance(defects, list)
        assert len(lines) == len(defects) and record["ok"] == (not defects)
        for line, defect in zip(lines, defects, strict=True):
            cls_id, cx, cy, w, h = line.split()
            x0, y0, x1, y1 = defect["box"]
            assert DEFECT_KINDS[int(cls_id)] == defect["kind"] == record["defect_kind"]
            assert float(cx) == pytest.approx((x0 + x1) / 2, abs=1e-5)
            assert float(cy) == pytest.approx((y0 + y1) / 2, abs=1e-5)
            assert float(w) == pytest.approx(x1 - x0, abs=1e-5)
            assert float(h) == pytest.approx(y1 - y0, abs=1e-5)
    assert all(len(s) == 1 for s in splits.values())  # both cameras of an item in one split
    assert {s for (s,) in splits.values()} == {"train", "val", "test"}
    for key, n in counts.items():
        split, cls = key.split("/")
        assert len(list((tmp_path / "classification" / split / cls).glob("*.jpg"))) == n


def test_write_demo_frames_pairs_cameras_and_mixes_ok_with_every_defect(tmp_path: Path) -> None:
    write_demo_frames(tmp_path, count=6, seed=SEED)

    truth = _read_truth(tmp_path / "truth.jsonl")
    assert len(truth) == 12
    for record in truth:
        assert record["file"] == f"{record['camera']}/{record['index']:04d}.jpg"
        assert (tmp_path / str(record["file"])).is_file()
    kinds = {int(str(r["index"])): r["defect_kind"] for r in truth}
    assert set(kinds.values()) - {None} == set(DEFECT_KINDS)
    assert sorted(kinds) == list(range(6))
