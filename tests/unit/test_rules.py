"""Camera and item rules: every OK / KO / NO_DECISION branch, the edges, and the station-file validation."""

# Reasons use the multiplication sign ("2 <sign> stain"), which ruff takes for a confusable "x".
# ruff: noqa: RUF001

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from edge_orchestrator.domain import Box, Decision, Detection, Prediction
from edge_orchestrator.rules import (
    AllOkRule,
    CameraRule,
    ExpectedLabelRule,
    ItemRule,
    LabelCountRule,
    MinOkRule,
    OkRatioRule,
    UnexpectedLabelRule,
    decide_camera,
    unknown_labels,
)

OK, KO, NO = Decision.OK, Decision.KO, Decision.NO_DECISION
CAMERA_RULES: TypeAdapter[CameraRule] = TypeAdapter(CameraRule)
ITEM_RULES: TypeAdapter[ItemRule] = TypeAdapter(ItemRule)
CENTRE: Box = (0.25, 0.25, 0.75, 0.75)  # centre (0.5, 0.5), exactly representable


def camera_rule(**fields: Any) -> CameraRule:
    """A rule parsed the way the station file's YAML is."""
    return CAMERA_RULES.validate_python(fields)


def item_rule(**fields: Any) -> ItemRule:
    return ITEM_RULES.validate_python(fields)


def classified(label: str | None, score: float | None) -> Prediction:
    return Prediction(
        model_name="duck-classifier", model_version="1", task="classification", label=label, score=score
    )


def detected(*detections: Detection) -> Prediction:
    return Prediction(
        model_name="duck-detector", model_version="1", task="detection", detections=list(detections)
    )


def det(label: str, score: float, box: Box = CENTRE) -> Detection:
    return Detection(label=label, score=score, box=box)


# --- classification rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "prediction", "decision", "reason"),
    [
        pytest.param(
            {"label": "ok"}, classified("ok", 0.93), OK, "top label ok (0.93), as expected", id="ok"
        ),
        pytest.param({"label": "ok"}, classified("ok", 0.5), OK, "as expected", id="score-at-min-score"),
        pytest.param(
            {"label": "ok"},
            classified("ok", 0.49),
            NO,
            "top label ok (0.49) < min_score 0.5: the model is not confident",
            id="right-label-below-min-score",
        ),
        pytest.param({"label": "ok"}, classified("ko", 0.88), KO, "expected ok", id="wrong-label"),
        pytest.param({"label": "ok"}, classified("ko", 0.3), NO, "not confident", id="wrong-label-doubtful"),
        pytest.param(
            {"label": "ok", "min_score": 0.9},
            classified("ok", 0.89),
            NO,
            "< min_score 0.9",
            id="own-min-score",
        ),
        pytest.param(
            {"labels": ["ok", "ok_tilted"]}, classified("ok_tilted", 0.7), OK, "", id="one-of-labels"
        ),
        pytest.param(
            {"labels": ["ok", "ok_tilted"]},
            classified("ko", 0.7),
            KO,
            "expected ok or ok_tilted",
            id="none-of",
        ),
        pytest.param({"label": "ok"}, classified(None, None), NO, "no usable top label", id="no-top-label"),
        pytest.param({"label": "ok"}, classified("ok", math.nan), NO, "no usable top label", id="nan-score"),
        pytest.param(
            {"label": "ok"},
            detected(det("stain", 0.9)),
            NO,
            "expected_label needs a classification model, but duck-detector gave a detection prediction",
            id="wrong-task",
        ),
    ],
)
def test_expected_label(
    rule: dict[str, Any], prediction: Prediction, decision: Decision, reason: str
) -> None:
    outcome = camera_rule(type="expected_label", **rule).apply(prediction)
    assert (outcome.decision, outcome.rule) == (decision, "expected_label")
    assert reason in outcome.reason


@pytest.mark.parametrize(
    ("rule", "prediction", "decision", "reason"),
    [
        pytest.param(
            {"labels": ["ko"]},
            classified("ko", 0.9),
            KO,
            "top label ko (0.90) is unexpected",
            id="unexpected",
        ),
        pytest.param(
            {"labels": ["ko"]}, classified("ko", 0.5), KO, "≥ min_score 0.5", id="score-at-min-score"
        ),
        pytest.param(
            {"labels": ["ko"]},
            classified("ko", 0.49),
            NO,
            "unexpected but < min_score 0.5: the model is not confident",
            id="unexpected-below-min-score",
        ),
        pytest.param({"labels": ["ko"]}, classified("ok", 0.9), OK, "is not one of ko", id="expected-label"),
        pytest.param({"labels": ["ko"]}, classified("ok", 0.2), OK, "", id="other-label-low-score"),
        pytest.param({"labels": ["ko", "dirty"]}, classified("dirty", 0.7), KO, "", id="one-of-labels"),
        pytest.param(
            {"labels": ["ko"], "min_score": 0.8},
            classified("ko", 0.7),
            NO,
            "< min_score 0.8",
            id="own-min-score",
        ),
        pytest.param(
            {"labels": ["ko"]}, classified(None, None), NO, "no usable top label", id="no-top-label"
        ),
        pytest.param({"labels": ["ko"]}, detected(), NO, "needs a classification model", id="wrong-task"),
    ],
)
def test_unexpected_label(
    rule: dict[str, Any], prediction: Prediction, decision: Decision, reason: str
) -> None:
    outcome = camera_rule(type="unexpected_label", **rule).apply(prediction)
    assert (outcome.decision, outcome.rule) == (decision, "unexpected_label")
    assert reason in outcome.reason


# --- label_count ---------------------------------------------------------------------------------

NO_STAIN = {"labels": ["stain"], "max": 0}
ONE_DUCK = {"labels": ["duck"], "min": 1, "max": 1}


@pytest.mark.parametrize(
    ("rule", "detections", "decision", "reason"),
    [
        pytest.param(NO_STAIN, [], OK, "0 × stain within max 0", id="max0-nothing"),
        pytest.param(
            NO_STAIN,
            [det("stain", 0.66), det("stain", 0.91)],
            KO,
            "2 × stain (0.91, 0.66) > max 0",
            id="max0-two-stains",
        ),
        pytest.param(NO_STAIN, [det("stain", 0.5)], KO, "(0.50) > max 0", id="score-at-min-score-counts"),
        pytest.param(NO_STAIN, [det("stain", 0.49)], OK, "0 × stain", id="score-below-min-score-ignored"),
        pytest.param(NO_STAIN, [det("missing_eye", 0.99)], OK, "", id="other-label-ignored"),
        pytest.param(
            {"labels": ["stain", "missing_eye"], "max": 0},
            [det("stain", 0.8), det("missing_eye", 0.9), det("stain", 0.7)],
            KO,
            "1 × missing_eye (0.90) + 2 × stain (0.80, 0.70) = 3 > max 0",
            id="several-labels",
        ),
        pytest.param(
            {"max": 1}, [det("stain", 0.8), det("foreign_object", 0.9)], KO, "= 2 > max 1", id="any-label"
        ),
        pytest.param(
            {"labels": [], "max": 0}, [], OK, "0 detections within max 0", id="empty-labels-any-label"
        ),
        pytest.param(
            ONE_DUCK, [det("duck", 0.97)], OK, "1 × duck (0.97) within min 1, max 1", id="exactly-one"
        ),
        pytest.param(ONE_DUCK, [], KO, "0 × duck < min 1", id="none-below-min"),
        pytest.param(ONE_DUCK, [det("duck", 0.9), det("duck", 0.8)], KO, "> max 1", id="two-above-max"),
        pytest.param({"min": 2}, [det("duck", 0.9)] * 2, OK, "within min 2", id="count-at-min"),
        pytest.param({"min": 2}, [det("duck", 0.9)], KO, "< min 2", id="count-below-min"),
        pytest.param({"max": 2}, [det("stain", 0.9)] * 2, OK, "within max 2", id="count-at-max"),
        pytest.param({"max": 2}, [det("stain", 0.9)] * 3, KO, "> max 2", id="count-above-max"),
        pytest.param({"max": 0, "min_score": 0.95}, [det("stain", 0.9)], OK, "", id="own-min-score"),
        # ROI: the box centre decides, edges included.
        pytest.param(
            {"max": 0, "roi": [0.5, 0.5, 1, 1]},
            [det("stain", 0.9)],
            KO,
            "1 × stain (0.90) in roi [0.5, 0.5, 1, 1] > max 0",
            id="roi-centre-on-min-edge",
        ),
        pytest.param(
            {"max": 0, "roi": [0, 0, 0.5, 0.5]}, [det("stain", 0.9)], KO, "", id="roi-centre-on-max-edge"
        ),
        pytest.param(
            {"max": 0, "roi": [0.6, 0.6, 1, 1]},
            [det("stain", 0.9)],
            OK,
            "0 detections in roi [0.6, 0.6, 1, 1] within max 0",
            id="roi-box-overlaps-centre-outside",
        ),
        pytest.param(
            {"max": 0, "roi": [0, 0, 0.4999, 1]}, [det("stain", 0.9)], OK, "", id="roi-centre-just-outside-x"
        ),
        # Review band: uncertain detections ask for a human whenever they could change the outcome.
        pytest.param(
            {**NO_STAIN, "review_score": 0.3},
            [det("stain", 0.42)],
            NO,
            "0 × stain within max 0, but 1 × stain (0.42) uncertain (review band [0.3, 0.5)): a human should look",
            id="review-band-uncertain",
        ),
        pytest.param(
            {**NO_STAIN, "review_score": 0.3}, [det("stain", 0.3)], NO, "", id="review-score-inclusive"
        ),
        pytest.param({**NO_STAIN, "review_score": 0.3}, [det("stain", 0.29)], OK, "", id="below-review-band"),
        pytest.param(
            {**NO_STAIN, "review_score": 0.3},
            [det("stain", 0.91), det("stain", 0.42)],
            KO,
            "1 × stain (0.91) > max 0",
            id="review-band-already-ko",
        ),
        pytest.param(
            {**ONE_DUCK, "review_score": 0.3},
            [det("duck", 0.97), det("duck", 0.41)],
            NO,
            "within min 1, max 1, but 1 × duck (0.41) uncertain",
            id="review-band-could-exceed-max",
        ),
        pytest.param(
            {**ONE_DUCK, "review_score": 0.3},
            [det("duck", 0.41)],
            NO,
            "0 × duck < min 1, but 1 × duck (0.41) uncertain",
            id="review-band-could-reach-min",
        ),
        pytest.param(
            {"labels": ["duck"], "min": 2, "review_score": 0.3},
            [det("duck", 0.41)],
            KO,
            "0 × duck < min 2",
            id="review-band-cannot-reach-min",
        ),
        pytest.param(
            {"labels": ["duck"], "min": 1, "review_score": 0.3},
            [det("duck", 0.97), det("duck", 0.41)],
            OK,
            "cannot change that",
            id="review-band-cannot-change-ok",
        ),
        pytest.param(NO_STAIN, [det("stain", math.nan)], NO, "a human should look", id="nan-score"),
        pytest.param(
            {"max": 0, "roi": [0, 0, 0.5, 0.5]},
            [det("stain", 0.9, (math.nan, 0, 0.1, 0.1))],
            NO,
            "a human should look",
            id="nan-box",
        ),
    ],
)
def test_label_count(
    rule: dict[str, Any], detections: list[Detection], decision: Decision, reason: str
) -> None:
    outcome = camera_rule(type="label_count", **rule).apply(detected(*detections))
    assert (outcome.decision, outcome.rule) == (decision, "label_count")
    assert reason in outcome.reason


def test_label_count_on_a_classification_is_no_decision() -> None:
    outcome = camera_rule(type="label_count", max=0).apply(classified("ok", 0.99))
    assert outcome.decision == NO
    assert outcome.reason == (
        "label_count needs a detection model, but duck-classifier gave a classification prediction"
    )


# --- decide_camera -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "prediction", "decision"),
    [
        pytest.param([], classified("ok", 0.99), NO, id="no-rules"),
        pytest.param([{"type": "expected_label", "label": "ok"}], classified("ok", 0.99), OK, id="one-ok"),
        pytest.param(
            [{"type": "expected_label", "label": "ok"}, {"type": "unexpected_label", "labels": ["ko"]}],
            classified("ok", 0.99),
            OK,
            id="all-ok",
        ),
        pytest.param(
            [{"type": "expected_label", "label": "ok"}, {"type": "unexpected_label", "labels": ["ko"]}],
            classified("ko", 0.99),
            KO,
            id="ko",
        ),
        pytest.param(
            [{"type": "unexpected_label", "labels": ["ko"]}, {"type": "expected_label", "label": "ok"}],
            classified("ko", 0.4),
            NO,
            id="no-decision",
        ),
        pytest.param(
            [{"type": "label_count", "max": 0}, {"type": "expected_label", "label": "ok"}],
            detected(det("stain", 0.9)),
            NO,
            id="no-decision-beats-ko",
        ),
    ],
)
def test_decide_camera(rules: list[dict[str, Any]], prediction: Prediction, decision: Decision) -> None:
    parsed = [camera_rule(**rule) for rule in rules]
    decided, outcomes = decide_camera(prediction, parsed)
    assert decided == decision
    assert len(outcomes) == max(len(rules), 1)  # with no rules, one outcome says why


def test_decide_camera_without_rules_says_why() -> None:
    decided, outcomes = decide_camera(classified("ok", 0.99), [])
    assert decided == NO
    assert [(o.decision, o.reason) for o in outcomes] == [
        (NO, "no rule configured for this camera: nothing can be decided")
    ]


def test_two_rules_of_the_same_kind_keep_their_own_parameters() -> None:
    rules = [
        camera_rule(type="label_count", name="no stain", labels=["stain"], max=0),
        camera_rule(type="label_count", name="one duck", labels=["duck"], min=1, max=1),
        camera_rule(type="label_count", name="no confident stain", labels=["stain"], max=0, min_score=0.9),
    ]
    decided, outcomes = decide_camera(detected(det("duck", 0.97), det("stain", 0.8)), rules)
    assert decided == KO
    assert [(o.rule, o.decision) for o in outcomes] == [
        ("no stain", KO),
        ("one duck", OK),
        ("no confident stain", OK),
    ]


# --- unknown_labels ------------------------------------------------------------------------------

DETECTOR = ["missing_eye", "stain", "broken_beak", "wrong_colour", "foreign_object"]
CLASSIFIER = ["ok", "ko"]


@pytest.mark.parametrize(
    ("rule", "model_labels", "unknown"),
    [
        pytest.param({"type": "expected_label", "label": "ok"}, CLASSIFIER, [], id="known"),
        pytest.param({"type": "expected_label", "label": "OK"}, CLASSIFIER, ["OK"], id="case-matters"),
        pytest.param({"type": "expected_label", "labels": ["ok", "good"]}, CLASSIFIER, ["good"], id="labels"),
        pytest.param(
            {"type": "unexpected_label", "labels": ["ko", "bad"]}, CLASSIFIER, ["bad"], id="unexpected"
        ),
        pytest.param(
            {"type": "label_count", "labels": ["stain", "scratch", "stain", "scratch"], "max": 0},
            DETECTOR,
            ["scratch"],
            id="count-deduplicated",
        ),
        pytest.param({"type": "label_count", "max": 0}, DETECTOR, [], id="count-any-label"),
    ],
)
def test_unknown_labels(rule: dict[str, Any], model_labels: list[str], unknown: list[str]) -> None:
    assert unknown_labels(camera_rule(**rule), model_labels) == unknown


# --- item rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "decisions", "decision", "reason"),
    [
        pytest.param({"type": "all_ok"}, {"top": OK, "side": OK}, OK, "all 2 cameras OK", id="all-ok"),
        pytest.param({"type": "all_ok"}, {"top": OK, "side": KO}, KO, "camera side: KO", id="all-ok-one-ko"),
        pytest.param(
            {"type": "all_ok"}, {"top": KO, "side": NO}, NO, "camera side: NO_DECISION", id="all-ok-undecided"
        ),
        pytest.param(
            {"type": "min_ok", "count": 1}, {"top": OK, "side": KO}, OK, "1 of 2 cameras OK", id="min-ok"
        ),
        pytest.param(
            {"type": "min_ok", "count": 2},
            {"top": OK, "side": KO},
            KO,
            "1 of 2 cameras OK, at least 2 required (camera side: KO)",
            id="min-ok-too-few",
        ),
        pytest.param({"type": "min_ok", "count": 2}, {"top": OK, "side": OK}, OK, "", id="min-ok-at-count"),
        pytest.param(
            {"type": "min_ok", "count": 3},
            {"top": OK, "side": OK},
            KO,
            "at least 3 required",
            id="min-ok-unreachable",
        ),
        pytest.param(
            {"type": "min_ok", "count": 1},
            {"top": OK, "side": NO},
            NO,
            "camera side: NO_DECISION",
            id="min-ok-undecided-even-if-enough-ok",
        ),
        pytest.param(
            {"type": "ok_ratio", "ratio": 0.5},
            {"top": OK, "side": KO},
            OK,
            "(0.5), at least 0.5",
            id="ratio-at",
        ),
        pytest.param(
            {"type": "ok_ratio", "ratio": 0.75},
            {"top": OK, "side": KO},
            KO,
            "1 of 2 cameras OK (0.5), at least 0.75 required (camera side: KO)",
            id="ratio-below",
        ),
        pytest.param({"type": "ok_ratio", "ratio": 1}, {"top": OK, "side": OK}, OK, "", id="ratio-one"),
        pytest.param(
            {"type": "ok_ratio", "ratio": 0.3},
            {f"c{i}": OK if i < 3 else KO for i in range(10)},
            OK,
            "3 of 10 cameras OK",
            id="ratio-exact-in-float",
        ),
        pytest.param(
            {"type": "ok_ratio", "ratio": 0.5},
            {"top": NO, "side": OK, "front": NO},
            NO,
            "camera top: NO_DECISION, camera front: NO_DECISION",
            id="ratio-undecided",
        ),
        pytest.param({"type": "all_ok"}, {"top": OK}, OK, "all 1 camera OK", id="single-camera"),
    ],
)
def test_item_rules(
    rule: dict[str, Any], decisions: dict[str, Decision], decision: Decision, reason: str
) -> None:
    outcome = item_rule(**rule).apply(decisions)
    assert (outcome.decision, outcome.rule) == (decision, rule["type"])
    assert reason in outcome.reason


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param({"type": "all_ok"}, id="all_ok"),
        pytest.param({"type": "min_ok", "count": 1}, id="min_ok"),
        pytest.param({"type": "ok_ratio", "ratio": 0.1}, id="ok_ratio"),
    ],
)
def test_no_camera_decision_is_no_decision(rule: dict[str, Any]) -> None:
    outcome = item_rule(**rule).apply({})
    assert outcome.decision == NO
    assert outcome.reason == "no camera decision: nothing to decide on"


def test_a_named_rule_speaks_under_its_name() -> None:
    assert item_rule(type="min_ok", count=1, name="any view").apply({"top": OK}).rule == "any view"
    assert camera_rule(type="label_count", max=0, name="clean").apply(detected()).rule == "clean"


# --- station-file validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        pytest.param(
            {"type": "label_count", "min": 2, "max": 1}, "min (2) is greater than max (1)", id="min>max"
        ),
        pytest.param({"type": "label_count"}, "give `min`, `max` or both", id="no-bounds"),
        pytest.param({"type": "label_count", "min": -1}, "greater than or equal to 0", id="negative-min"),
        pytest.param(
            {"type": "label_count", "max": 0, "roi": [0.5, 0, 0.4, 1]},
            "roi x_min (0.5) must be less than x_max (0.4)",
            id="roi-x-reversed",
        ),
        pytest.param(
            {"type": "label_count", "max": 0, "roi": [0.5, 0, 0.5, 1]},
            "roi x_min (0.5) must be less than x_max (0.5)",
            id="roi-x-empty",
        ),
        pytest.param(
            {"type": "label_count", "max": 0, "roi": [0, 0.5, 1, 0.5]},
            "roi y_min (0.5) must be less than y_max (0.5)",
            id="roi-y-empty",
        ),
        pytest.param(
            {"type": "label_count", "max": 0, "roi": [0, 0, 1.2, 1]},
            "less than or equal to 1",
            id="roi-above-1",
        ),
        pytest.param(
            {"type": "label_count", "max": 0, "roi": [-0.1, 0, 1, 1]}, "greater than", id="roi-below-0"
        ),
        pytest.param(
            {"type": "label_count", "max": 0, "roi": [0, 0, 1]}, "label_count.roi", id="roi-three-values"
        ),
        pytest.param(
            {"type": "label_count", "max": 0, "review_score": 0.5},
            "review_score (0.5) must be below min_score (0.5)",
            id="review-not-below-min-score",
        ),
        pytest.param(
            {"type": "label_count", "max": 0, "min_score": 1.5}, "less than or equal to 1", id="score>1"
        ),
        pytest.param(
            {"type": "label_count", "max": 0, "labels": ["stain", " "]},
            "a label must be a non-empty string",
            id="blank-label",
        ),
        pytest.param({"type": "unexpected_label", "labels": []}, "name at least one label", id="no-labels"),
        pytest.param({"type": "expected_label"}, "give either `label` or `labels`", id="neither-label"),
        pytest.param(
            {"type": "expected_label", "label": "ok", "labels": ["ok"]}, "give either", id="label-and-labels"
        ),
        pytest.param({"type": "expected_label", "label": ""}, "non-empty string", id="empty-label"),
        pytest.param(
            {"type": "expected_label", "label": "ok", "name": ""}, "at least 1 character", id="empty-name"
        ),
        pytest.param(
            {"type": "label_count", "max": 0, "maxx": 1}, "Extra inputs are not permitted", id="typo-field"
        ),
        pytest.param(
            {"type": "count_labels", "max": 0}, "does not match any of the expected tags", id="unknown-type"
        ),
        pytest.param({"max": 0}, "Unable to extract tag using discriminator 'type'", id="missing-type"),
    ],
)
def test_invalid_camera_rules_are_refused(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        CAMERA_RULES.validate_python(rule)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        pytest.param({"type": "ok_ratio", "ratio": 0}, "greater than 0", id="ratio-0"),
        pytest.param({"type": "ok_ratio", "ratio": 1.01}, "less than or equal to 1", id="ratio>1"),
        pytest.param({"type": "min_ok", "count": 0}, "greater than or equal to 1", id="count-0"),
        pytest.param({"type": "min_ok"}, "Field required", id="count-missing"),
        pytest.param({"type": "any_ok"}, "does not match any of the expected tags", id="unknown-type"),
        pytest.param({"type": "all_ok", "count": 2}, "Extra inputs are not permitted", id="extra-field"),
    ],
)
def test_invalid_item_rules_are_refused(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        ITEM_RULES.validate_python(rule)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "model",
    [ExpectedLabelRule, UnexpectedLabelRule, LabelCountRule, AllOkRule, MinOkRule, OkRatioRule],
)
def test_every_station_field_is_documented(model: type[BaseModel]) -> None:
    properties = model.model_json_schema()["properties"]
    assert {name for name, schema in properties.items() if not schema.get("description")} == set()


def test_rules_are_frozen() -> None:
    rule = LabelCountRule(max=0)
    with pytest.raises(ValidationError, match="frozen"):
        rule.max = 3  # type: ignore[misc]
