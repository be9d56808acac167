"""Camera rules (prediction → OK / KO / NO_DECISION) and item rules (camera decisions → item decision)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from edge_orchestrator.domain import Decision, Detection, Prediction, RuleOutcome

Task = Literal["classification", "detection"]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("a label must be a non-empty string")
    return value


def _not_empty(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("name at least one label")
    return value


Label = Annotated[str, AfterValidator(_not_blank)]
# Checked after the items (not with min_length), so one blank label gives one error, not two.
Labels = Annotated[tuple[Label, ...], AfterValidator(_not_empty), Field(json_schema_extra={"minItems": 1})]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
Coordinate = Annotated[float, Field(ge=0.0, le=1.0)]


# Spelled by name: ruff flags the literal sign as a confusable of "x"; reasons read "2 <sign> stain".
_TIMES = "\N{MULTIPLICATION SIGN}"


def _score(value: float) -> str:
    return f"{value:.2f}"


def _scores(detections: Sequence[Detection]) -> str:
    return ", ".join(_score(d.score) for d in detections)


def _cameras(count: int) -> str:
    return f"{count} camera" if count == 1 else f"{count} cameras"


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = Field(description="The rule's kind.")
    name: str | None = Field(
        default=None,
        min_length=1,
        description="Names this rule in outcomes, so two rules of the same kind are told apart "
        "(defaults to the type).",
    )

    @property
    def rule_name(self) -> str:
        return self.name or self.type

    def _outcome(self, decision: Decision, reason: str) -> RuleOutcome:
        return RuleOutcome(rule=self.rule_name, decision=decision, reason=reason)


# --- camera rules --------------------------------------------------------------------------------


class _CameraRule(_Rule):
    task: ClassVar[Task]

    @property
    def named_labels(self) -> tuple[str, ...]:
        """The labels this rule refers to, to be checked against the model's labels."""
        raise NotImplementedError

    def apply(self, prediction: Prediction) -> RuleOutcome:
        # A rule meant for the other task would read empty fields and could say OK: refuse instead.
        if prediction.task != self.task:
            return self._outcome(
                Decision.NO_DECISION,
                f"{self.type} needs a {self.task} model, but {prediction.model_name} "
                f"gave a {prediction.task} prediction",
            )
        return self._judge(prediction)

    def _judge(self, prediction: Prediction) -> RuleOutcome:
        raise NotImplementedError


def _top(prediction: Prediction) -> tuple[str, float] | None:
    # A missing or NaN score compares False with every threshold, which would slip past the checks.
    if prediction.label is None or prediction.score is None or not math.isfinite(prediction.score):
        return None
    return prediction.label, prediction.score


_NO_TOP = "the model gave no usable top label and score"


class ExpectedLabelRule(_CameraRule):
    """OK when the expected label is on top with enough confidence; never OK on doubt."""

    task: ClassVar[Task] = "classification"

    type: Literal["expected_label"] = Field(
        default="expected_label", description="Classification: the top label must be the expected one."
    )
    label: Label | None = Field(default=None, description="The label expected on top (or give `labels`).")
    labels: Labels | None = Field(
        default=None, description="Labels any of which is acceptable on top (or give `label`)."
    )
    min_score: Score = Field(
        default=0.5,
        description="Below this top score the model is not confident: NO_DECISION, whatever the label.",
    )

    @model_validator(mode="after")
    def _label_or_labels(self) -> Self:
        if (self.label is None) == (self.labels is None):
            raise ValueError("give either `label` or `labels` (exactly one of them)")
        return self

    @property
    def named_labels(self) -> tuple[str, ...]:
        return (self.label,) if self.label is not None else (self.labels or ())

    def _judge(self, prediction: Prediction) -> RuleOutcome:
        top = _top(prediction)
        if top is None:
            return self._outcome(Decision.NO_DECISION, _NO_TOP)
        label, score = top
        shown = f"top label {label} ({_score(score)})"
        if score < self.min_score:
            return self._outcome(
                Decision.NO_DECISION, f"{shown} < min_score {self.min_score:g}: the model is not confident"
            )
        if label in self.named_labels:
            return self._outcome(Decision.OK, f"{shown}, as expected")
        return self._outcome(Decision.KO, f"{shown}, expected {' or '.join(self.named_labels)}")


class UnexpectedLabelRule(_CameraRule):
    """KO when one of the given labels is confidently on top; NO_DECISION when it is on top but doubtful."""

    task: ClassVar[Task] = "classification"

    type: Literal["unexpected_label"] = Field(
        default="unexpected_label", description="Classification: the top label must not be one of these."
    )
    labels: Labels = Field(description="Labels that must not be on top.")
    min_score: Score = Field(
        default=0.5,
        description="An unexpected top label at or above this score is KO; below it, NO_DECISION.",
    )

    @property
    def named_labels(self) -> tuple[str, ...]:
        return self.labels

    def _judge(self, prediction: Prediction) -> RuleOutcome:
        top = _top(prediction)
        if top is None:
            return self._outcome(Decision.NO_DECISION, _NO_TOP)
        label, score = top
        shown = f"top label {label} ({_score(score)})"
        if label not in self.labels:
            return self._outcome(Decision.OK, f"{shown} is not one of {', '.join(self.labels)}")
        if score >= self.min_score:
            return self._outcome(Decision.KO, f"{shown} is unexpected (≥ min_score {self.min_score:g})")
        return self._outcome(
            Decision.NO_DECISION,
            f"{shown} is unexpected but < min_score {self.min_score:g}: the model is not confident",
        )


class LabelCountRule(_CameraRule):
    """Detection: OK when the number of matching detections lies within [min, max]."""

    task: ClassVar[Task] = "detection"

    type: Literal["label_count"] = Field(
        default="label_count", description="Detection: count matching detections and check the bounds."
    )
    labels: tuple[Label, ...] | None = Field(
        default=None, description="Labels to count; absent or empty counts every label."
    )
    min_score: Score = Field(default=0.5, description="Detections at or above this score are counted.")
    review_score: Score | None = Field(
        default=None,
        description="Optional, below min_score: a matching detection scored in [review_score, min_score) "
        "is uncertain, and makes the outcome NO_DECISION whenever it could change it (a human should look).",
    )
    roi: tuple[Coordinate, Coordinate, Coordinate, Coordinate] | None = Field(
        default=None,
        description="Optional [x_min, y_min, x_max, y_max], normalised (0..1): only detections whose box "
        "centre lies inside (edges included) are considered.",
    )
    min: int | None = Field(default=None, ge=0, description="Fewest matching detections for OK.")
    max: int | None = Field(
        default=None, ge=0, description="Most matching detections for OK (0: none at all, e.g. no defect)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("give `min`, `max` or both: a count without bounds decides nothing")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max}): no count could be OK")
        if self.review_score is not None and self.review_score >= self.min_score:
            raise ValueError(
                f"review_score ({self.review_score:g}) must be below min_score ({self.min_score:g})"
            )
        if self.roi is not None:
            x_min, y_min, x_max, y_max = self.roi
            if x_min >= x_max:
                raise ValueError(f"roi x_min ({x_min:g}) must be less than x_max ({x_max:g})")
            if y_min >= y_max:
                raise ValueError(f"roi y_min ({y_min:g}) must be less than y_max ({y_max:g})")
        return self

    @property
    def named_labels(self) -> tuple[str, ...]:
        return self.labels or ()

    def _inside(self, detection: Detection) -> bool:
        if self.roi is None:
            return True
        x_min, y_min, x_max, y_max = self.roi
        box = detection.box
        centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        return x_min <= centre_x <= x_max and y_min <= centre_y <= y_max

    def _judge(self, prediction: Prediction) -> RuleOutcome:
        counted: list[Detection] = []
        uncertain: list[Detection] = []
        for detection in prediction.detections:
            if self.labels and detection.label not in self.labels:
                continue
            # NaN fails every comparison and would silently drop out of the count: a human looks.
            if not all(math.isfinite(value) for value in detection.box):
                uncertain.append(detection)
            elif not self._inside(detection):
                continue
            elif not math.isfinite(detection.score):
                uncertain.append(detection)
            elif detection.score >= self.min_score:
                counted.append(detection)
            elif self.review_score is not None and detection.score >= self.review_score:
                uncertain.append(detection)
        count, doubt = len(counted), len(uncertain)
        seen = self._describe(counted)
        if self.roi is not None:
            seen += f" in roi [{', '.join(f'{c:g}' for c in self.roi)}]"

        # KO only when no reading of the uncertain detections could make it OK, OK only when none
        # could make it KO; in between, a human has to look.
        if self.max is not None and count > self.max:
            return self._outcome(Decision.KO, f"{seen} > max {self.max}")
        if self.min is not None and count + doubt < self.min:
            return self._outcome(Decision.KO, f"{seen} < min {self.min}")
        within = f"{seen} within {self._bounds()}"
        if doubt == 0:
            return self._outcome(Decision.OK, within)
        doubtful = f"{self._describe(uncertain)} uncertain"
        if self.review_score is not None:
            doubtful += f" (review band [{self.review_score:g}, {self.min_score:g}))"
        at_least = self.min is None or count >= self.min
        at_most = self.max is None or count + doubt <= self.max
        if at_least and at_most:
            return self._outcome(Decision.OK, f"{within}; {doubtful} cannot change that")
        short = within if at_least else f"{seen} < min {self.min}"
        return self._outcome(Decision.NO_DECISION, f"{short}, but {doubtful}: a human should look")

    def _describe(self, detections: Sequence[Detection]) -> str:
        if not detections:
            return f"0 {_TIMES} {'/'.join(self.labels)}" if self.labels else "0 detections"
        groups: dict[str, list[Detection]] = {}
        for detection in sorted(detections, key=lambda d: -d.score):
            groups.setdefault(detection.label, []).append(detection)
        parts = [f"{len(group)} {_TIMES} {label} ({_scores(group)})" for label, group in groups.items()]
        return parts[0] if len(parts) == 1 else f"{' + '.join(parts)} = {len(detections)}"

    def _bounds(self) -> str:
        return ", ".join(
            f"{bound} {value}" for bound, value in (("min", self.min), ("max", self.max)) if value is not None
        )


CameraRule = Annotated[ExpectedLabelRule | UnexpectedLabelRule | LabelCountRule, Field(discriminator="type")]


def decide_camera(prediction: Prediction, rules: Sequence[CameraRule]) -> tuple[Decision, list[RuleOutcome]]:
    """Apply every rule: NO_DECISION if any says so (or there is none), else KO if any says so, else OK."""
    if not rules:
        # Fail safe: a camera without rules has nothing to be OK against.
        reason = "no rule configured for this camera: nothing can be decided"
        return Decision.NO_DECISION, [
            RuleOutcome(rule="no_rules", decision=Decision.NO_DECISION, reason=reason)
        ]
    outcomes = [rule.apply(prediction) for rule in rules]
    decisions = {outcome.decision for outcome in outcomes}
    for decision in (Decision.NO_DECISION, Decision.KO):
        if decision in decisions:
            return decision, outcomes
    return Decision.OK, outcomes


def unknown_labels(rule: CameraRule, model_labels: Sequence[str]) -> list[str]:
    """Labels the rule names that the model does not have (a typo would otherwise never match)."""
    known = set(model_labels)
    return [label for label in dict.fromkeys(rule.named_labels) if label not in known]


# --- item rules ----------------------------------------------------------------------------------


class _ItemRule(_Rule):
    def apply(self, decisions: Mapping[str, Decision]) -> RuleOutcome:
        # Fail safe in one place for every item rule: nothing is decided on missing data.
        if not decisions:
            return self._outcome(Decision.NO_DECISION, "no camera decision: nothing to decide on")
        undecided = [camera for camera, decision in decisions.items() if decision == Decision.NO_DECISION]
        if undecided:
            return self._outcome(
                Decision.NO_DECISION, ", ".join(f"camera {camera}: NO_DECISION" for camera in undecided)
            )
        ok = [camera for camera, decision in decisions.items() if decision == Decision.OK]
        ko = [camera for camera in decisions if camera not in ok]
        return self._judge(len(ok), len(decisions), ko)

    def _judge(self, ok: int, total: int, ko: list[str]) -> RuleOutcome:
        raise NotImplementedError


def _ko_cameras(ko: list[str]) -> str:
    return ", ".join(f"camera {camera}: KO" for camera in ko)


class AllOkRule(_ItemRule):
    """OK when every camera is OK."""

    type: Literal["all_ok"] = Field(default="all_ok", description="OK iff every camera is OK.")

    def _judge(self, ok: int, total: int, ko: list[str]) -> RuleOutcome:
        if ko:
            return self._outcome(Decision.KO, _ko_cameras(ko))
        return self._outcome(Decision.OK, f"all {_cameras(total)} OK")


class MinOkRule(_ItemRule):
    """OK when at least `count` cameras are OK."""

    type: Literal["min_ok"] = Field(default="min_ok", description="OK iff at least `count` cameras are OK.")
    count: int = Field(ge=1, description="Fewest OK cameras for an OK item.")

    def _judge(self, ok: int, total: int, ko: list[str]) -> RuleOutcome:
        reason = f"{ok} of {_cameras(total)} OK, at least {self.count} required"
        if ok >= self.count:
            return self._outcome(Decision.OK, reason)
        return self._outcome(Decision.KO, f"{reason} ({_ko_cameras(ko)})")


class OkRatioRule(_ItemRule):
    """OK when the share of OK cameras reaches `ratio`."""

    type: Literal["ok_ratio"] = Field(
        default="ok_ratio", description="OK iff OK cameras / all cameras ≥ `ratio`."
    )
    ratio: float = Field(
        gt=0.0, le=1.0, description="Smallest share of OK cameras for an OK item, in (0, 1]."
    )

    def _judge(self, ok: int, total: int, ko: list[str]) -> RuleOutcome:
        # Divide rather than multiply: ok / total rounds like the ratio written in the file (3/10 == 0.3).
        share = ok / total
        reason = f"{ok} of {_cameras(total)} OK ({share:.2g}), at least {self.ratio:g} required"
        if share >= self.ratio:
            return self._outcome(Decision.OK, reason)
        return self._outcome(Decision.KO, f"{reason} ({_ko_cameras(ko)})")


ItemRule = Annotated[AllOkRule | MinOkRule | OkRatioRule, Field(discriminator="type")]
