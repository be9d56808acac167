"""The pipeline with fake cameras and a fake model client: decisions, fail safe, concurrency, timings."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edge_orchestrator.cameras import Camera
from edge_orchestrator.domain import Decision, Inspection, ItemState, utcnow
from edge_orchestrator.errors import ModelError, ModelTimeoutError
from edge_orchestrator.pipeline import ActiveStation, Inspected, inspect
from edge_orchestrator.station import Station
from tests.fakes import FakeCamera, FakeModels, classification, detection


def station(item_rule: dict[str, Any] | None = None, capture_timeout_s: float = 0.5) -> Station:
    cameras = [
        {
            "id": "top",
            "source": {"type": "replay", "path": "top"},
            "model": {"name": "detector"},
            "rules": [{"type": "label_count", "min_score": 0.5, "review_score": 0.3, "max": 0}],
            "capture_timeout_s": capture_timeout_s,
        },
        {
            "id": "side",
            "source": {"type": "replay", "path": "side"},
            "model": {"name": "classifier", "version": 3},
            "rules": [{"type": "expected_label", "label": "ok", "min_score": 0.7}],
            "capture_timeout_s": capture_timeout_s,
        },
    ]
    return Station.model_validate(
        {"id": "line", "name": "Line", "cameras": cameras, "item_rule": item_rule or {"type": "all_ok"}}
    )


def run(
    cameras: dict[str, FakeCamera], models: FakeModels, item_rule: dict[str, Any] | None = None
) -> Inspected:
    async def go() -> Inspected:
        st = station(item_rule)
        typed: dict[str, Camera] = dict(cameras)
        active = ActiveStation(st, typed, [])
        item = Inspection(
            item_id="00000000-0000-4000-8000-000000000001",
            station_id=st.id,
            station_revision=st.revision,
            state=ItemState.ACCEPTED,
            source="test",
            accepted_at=utcnow(),
        )
        return await inspect(item, active, models, item.accepted_at)

    return asyncio.run(go())


def two_cameras(**top: Any) -> dict[str, FakeCamera]:
    return {"top": FakeCamera("top", **top), "side": FakeCamera("side")}


GOOD = {"detector": detection(), "classifier": classification("ok", 0.95)}


def test_every_camera_ok_makes_the_item_ok_with_predictions_timings_and_images() -> None:
    models = FakeModels(dict(GOOD))
    result = run(two_cameras(), models)
    item = result.item
    assert item.decision is Decision.OK and item.state is ItemState.DONE
    assert [c.decision for c in item.cameras] == [Decision.OK, Decision.OK]
    assert set(result.images) == {"top", "side"}
    assert {"capture", "predict", "rules", "total"} <= set(item.timings_ms)
    assert all({"capture", "predict", "rules"} <= set(c.timings_ms) for c in item.cameras)
    # the pinned version reaches the model server; the unpinned one asks for the latest
    assert sorted((name, version) for name, version, _ in models.calls) == [
        ("classifier", "3"),
        ("detector", None),
    ]
    assert item.cameras[1].model_version == "1" and item.cameras[1].prediction is not None


@pytest.mark.parametrize(
    ("answers", "decision", "camera", "code", "reason_part"),
    [
        ({"detector": detection(("stain", 0.9))}, Decision.KO, "top", None, "stain"),
        ({"detector": detection(("stain", 0.4))}, Decision.NO_DECISION, "top", None, "stain"),
        ({"classifier": classification("ko", 0.9)}, Decision.KO, "side", None, "ko"),
        ({"classifier": classification("ok", 0.6)}, Decision.NO_DECISION, "side", None, "0.6"),
        (
            {"detector": ModelError("model detector answered 503")},
            Decision.NO_DECISION,
            "top",
            "model_error",
            "503",
        ),
        (
            {"detector": ModelTimeoutError("no answer in 2 s")},
            Decision.NO_DECISION,
            "top",
            "model_timeout",
            "2 s",
        ),
        ({"detector": classification("ok", 0.99, model="detector")}, Decision.NO_DECISION, "top", None, ""),
    ],
    ids=[
        "defect",
        "uncertain-defect",
        "classified-ko",
        "low-confidence",
        "model-error",
        "model-timeout",
        "wrong-task",
    ],
)
def test_one_camera_decides_the_item_and_says_why(
    answers: dict[str, Any], decision: Decision, camera: str, code: str | None, reason_part: str
) -> None:
    result = run(two_cameras(), FakeModels({**GOOD, **answers}))
    item = result.item
    judged = item.camera(camera)
    assert judged is not None
    assert judged.decision is decision and item.decision is decision
    assert judged.error_code == code
    assert judged.reasons and reason_part in " ".join(judged.reasons)
    assert any(camera in reason for reason in item.reasons)


def test_a_failing_camera_is_no_decision_never_skipped() -> None:
    result = run(two_cameras(fail="device /dev/video0 vanished"), FakeModels(dict(GOOD)))
    top = result.item.camera("top")
    assert top is not None and top.decision is Decision.NO_DECISION and top.error_code == "camera_error"
    assert "vanished" in top.reasons[0]
    assert result.item.decision is Decision.NO_DECISION
    assert set(result.images) == {"side"}


def test_a_camera_that_hangs_times_out_into_no_decision() -> None:
    result = run(two_cameras(hang=True), FakeModels(dict(GOOD)))
    top = result.item.camera("top")
    assert top is not None and top.error_code == "camera_timeout" and top.decision is Decision.NO_DECISION
    assert result.item.decision is Decision.NO_DECISION


def test_a_bug_in_a_camera_is_no_decision_with_internal_error() -> None:
    async def boom() -> None:
        raise RuntimeError("bug")

    result = run(two_cameras(hook=boom), FakeModels(dict(GOOD)))
    top = result.item.camera("top")
    assert top is not None and top.error_code == "internal_error"
    assert result.item.decision is Decision.NO_DECISION


def test_cameras_are_captured_concurrently() -> None:
    # Each capture waits until both cameras have started: sequential capture would time out (NO_DECISION).
    started = 0
    both = asyncio.Event()

    async def rendezvous() -> None:
        nonlocal started
        started += 1
        if started == 2:
            both.set()
        await both.wait()

    cameras = {"top": FakeCamera("top", hook=rendezvous), "side": FakeCamera("side", hook=rendezvous)}
    result = run(cameras, FakeModels(dict(GOOD)))
    assert result.item.decision is Decision.OK


@pytest.mark.parametrize(
    ("item_rule", "side_answer", "decision"),
    [
        ({"type": "min_ok", "count": 1}, classification("ko", 0.9), Decision.OK),
        ({"type": "all_ok"}, classification("ko", 0.9), Decision.KO),
        ({"type": "ok_ratio", "ratio": 0.5}, classification("ko", 0.9), Decision.OK),
        ({"type": "min_ok", "count": 1}, classification("ok", 0.2), Decision.NO_DECISION),
    ],
    ids=["min-ok-1", "all-ok", "ratio-half", "min-ok-but-one-unsure"],
)
def test_the_item_rule_combines_cameras_but_never_overrules_a_missing_decision(
    item_rule: dict[str, Any], side_answer: Any, decision: Decision
) -> None:
    result = run(two_cameras(), FakeModels({**GOOD, "classifier": side_answer}), item_rule)
    assert result.item.decision is decision
