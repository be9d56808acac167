"""What can go wrong talking to the orchestrator, and the sentences an operator reads about it."""

from __future__ import annotations

from dataclasses import dataclass

# The orchestrator's stable error codes, in the words of someone standing at the line. Its own `detail` is
# written for engineers (ids, field paths), so it is kept for the logs and never replaces these.
SENTENCES: dict[str, str] = {
    "invalid_item_id": "This is not a valid inspection id: check the link.",
    "invalid_cursor": "This page link is out of date: start again from the first page.",
    "invalid_verdict": "The verdict was not accepted: choose OK or KO.",
    "unauthorized": (
        "The dashboard is not allowed to use the orchestrator: its API key is missing or wrong "
        "(set EDGE_API_KEY or EDGE_API_KEY_FILE for the interface)."
    ),
    "item_not_found": "No inspection with this id is stored: it may have been removed by the retention policy.",
    "image_not_found": "This image is not stored: the station does not keep it, or retention removed it.",
    "station_not_found": "This station is not installed on the device.",
    "not_decided": "This part has not been decided yet: give your verdict once the decision is shown.",
    "conflict": "This cannot be done while the inspection is in its current state.",
    "invalid_item_state": "This cannot be done while the inspection is in its current state.",
    "duplicate_item": "This inspection already exists.",
    "station_active": "This station is in use: switch the line to another station first.",
    "invalid_station": "The station file is not valid: fix the errors listed below and try again.",
    "validation_error": "The orchestrator refused the request: some values are not valid.",
    "queue_full": "Too many parts are being inspected at once: wait a moment, then trigger again.",
    "not_ready": (
        "The orchestrator is not ready to inspect: no station is active, or it is starting or stopping."
    ),
    "storage_error": "The device cannot use its storage: results cannot be saved. Call maintenance.",
    "not_found": "The orchestrator does not know this request: its version may not match the dashboard's.",
    "method_not_allowed": "The orchestrator does not know this request: its version may not match the dashboard's.",
    "bad_answer": "The orchestrator's answer was not understood: its version may not match the dashboard's.",
    "internal_error": "The orchestrator hit an unexpected problem: its log has the details. Call maintenance.",
}

DOWN_SENTENCE = (
    "The orchestrator is not answering: parts are not being inspected. "
    "Check that the edge_orchestrator service is running."
)
SLOW_SENTENCE = "The orchestrator is taking too long to answer: it may be overloaded. Try again in a moment."
# In a page's body, under the banner that already says the orchestrator is down: what this page cannot show.
UNAVAILABLE = "unavailable while the orchestrator is unreachable"


def sentence_for(code: str | None, status: int) -> str:
    """The operator's sentence for an orchestrator error; a generic one for codes this dashboard predates."""
    if code is not None and code in SENTENCES:
        return SENTENCES[code]
    if status >= 500:
        return f"The orchestrator could not complete the request (error {status}). Try again; if it persists, call maintenance."
    return f"The orchestrator refused the request (error {status})."


@dataclass(frozen=True)
class FieldError:
    """One problem in a submitted file or form: where, and what."""

    location: str
    message: str


class OrchestratorDown(Exception):  # noqa: N818 - the name says what the operator is told: it is down
    """The orchestrator could not be reached (refused, reset, timed out)."""

    def __init__(self, sentence: str = DOWN_SENTENCE, *, reason: str = "") -> None:
        super().__init__(sentence)
        self.sentence = sentence
        self.reason = reason  # what failed underneath (ConnectError, ReadTimeout...): for the logs only
        self.status = 503
        self.code = "orchestrator_unreachable"
        self.errors: list[FieldError] = []


class OrchestratorError(Exception):
    """The orchestrator answered with an error: its status, stable code, and the operator's sentence."""

    def __init__(
        self, status: int, code: str | None, detail: str = "", errors: list[FieldError] | None = None
    ) -> None:
        self.status = status
        self.code = code or "unknown"
        self.detail = detail  # the orchestrator's own wording: logs only
        self.sentence = sentence_for(code, status)
        self.errors = errors or []
        super().__init__(f"{status} {self.code}: {detail}")


class RequestRefused(Exception):  # noqa: N818 - read as "the request was refused"
    """The dashboard itself refuses a request (bad input, a page posted from another site)."""

    def __init__(self, status: int, sentence: str) -> None:
        super().__init__(sentence)
        self.status = status
        self.sentence = sentence
        self.errors: list[FieldError] = []


Failure = OrchestratorDown | OrchestratorError | RequestRefused


def page_sentences(failure: Failure | None) -> list[str]:
    """What a page says in its error box about a failure to load it.

    Nothing when the orchestrator cannot be reached: the banner already says so, and the page's body says
    in place what it cannot show (see `unavailable`), so no sentence is shown twice."""
    if failure is None or isinstance(failure, OrchestratorDown):
        return []
    return [failure.sentence]


def unavailable(failure: Failure | None) -> bool:
    """The page's data could not be had because the orchestrator is unreachable (or too slow)."""
    return isinstance(failure, OrchestratorDown)


def action_sentence(what_failed: str, failure: Failure) -> str:
    """An action's failure, beside the action: what did not happen, and why in a few words when the banner
    already says the orchestrator is down (rather than repeating its sentence)."""
    if isinstance(failure, OrchestratorDown):
        why = (
            "the orchestrator took too long to answer, check before trying again"
            if failure.sentence == SLOW_SENTENCE
            else "the orchestrator is not answering"
        )
        return f"{what_failed}: {why}."
    return f"{what_failed}. {failure.sentence}"
