"""The health of the line as the operators see it: orchestrator, model server, cameras, in sentences."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

from pydantic import BaseModel, Field

from edge_interface.client import OrchestratorClient, Readiness
from edge_interface.errors import OrchestratorDown, OrchestratorError

log = logging.getLogger(__name__)

OK = "ok"
MODEL_SERVER_DOWN = "The model server is not answering: parts cannot be judged and are decided NO_DECISION."
MODEL_SERVER_NOT_READY = "The model server is not ready: parts cannot be judged and are decided NO_DECISION."
MODEL_SERVER_UNKNOWN = "Unknown while the orchestrator is not answering."
Level = Literal["ok", "degraded", "down"]
# The ring beside the line's name: its colour, and the words that say the same for those who cannot see it.
LEVEL_WORDS: dict[str, str] = {
    "ok": "Line health: all well",
    "degraded": "Line health: degraded, see the problems listed",
    "down": "Line health: the orchestrator is not answering",
}


class Health(BaseModel):
    """The `interface.health` event's data, and what the banner shows on every page."""

    orchestrator: str = Field(description='"ok", or why not, as a sentence.')
    model_server: str = Field(description='"ok", or why not, as a sentence.')
    cameras: dict[str, str] = Field(default_factory=dict, description='Each camera: "ok", or why not.')
    problems: list[str] = Field(default_factory=list, description="Everything wrong, one sentence each.")

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def level(self) -> Level:
        """down: the orchestrator is not answering; degraded: it answers, but something is wrong; ok."""
        if self.orchestrator != OK:
            return "down"
        return "degraded" if self.problems else "ok"

    @property
    def model_server_state(self) -> str:
        """The model server's state in two words, agreeing with its sentence (for a badge)."""
        return {
            OK: "ready",
            MODEL_SERVER_DOWN: "not answering",
            MODEL_SERVER_NOT_READY: "not ready",
            MODEL_SERVER_UNKNOWN: "unknown",
        }.get(self.model_server, "not ready")


def health_from(readiness: Readiness) -> Health:
    problems: list[str] = []
    model_server = OK
    if readiness.model_server != "ready":
        # The orchestrator's detail names exceptions and statuses: maintenance reads it in its log.
        model_server = (
            MODEL_SERVER_DOWN if "unreachable" in readiness.model_server else MODEL_SERVER_NOT_READY
        )
        problems.append(model_server)
    if readiness.station is None:
        problems.append("No station is active: nothing is inspected. Choose one on the Station page.")
    cameras: dict[str, str] = {}
    for camera_id, state in readiness.cameras.items():
        cameras[camera_id] = (
            OK if state == "ok" else f"Camera {camera_id} is not delivering images ({state})."
        )
        if state != "ok":
            problems.append(cameras[camera_id])
    return Health(orchestrator=OK, model_server=model_server, cameras=cameras, problems=problems)


def health_down(sentence: str) -> Health:
    return Health(orchestrator=sentence, model_server=MODEL_SERVER_UNKNOWN, problems=[sentence])


class HealthMonitor:
    """Asks the orchestrator at most once per `max_age_s` however many pages and streams want to know.

    Every open live page hears the health every 2 s; sharing one answer (and one request in flight) keeps
    that load flat as screens are added.
    """

    def __init__(self, client: OrchestratorClient, max_age_s: float = 1.0, timeout_s: float = 2.0) -> None:
        self._client = client
        self._max_age_s = max_age_s
        self._timeout_s = timeout_s
        self._latest: Health | None = None
        self._at = 0.0
        self._pending: asyncio.Task[Health] | None = None
        self._logged_down = False
        self._reason = ""

    async def current(self) -> Health:
        if self._latest is not None and time.monotonic() - self._at < self._max_age_s:
            return self._latest
        if self._pending is None:
            self._pending = asyncio.create_task(self._check(), name="health-check")
            self._pending.add_done_callback(self._done)
        # shield: one caller leaving (a browser closing its stream) must not cancel the others' answer.
        return await asyncio.shield(self._pending)

    @property
    def latest(self) -> Health | None:
        """The last known health, however old (error pages show it without waiting for a new check)."""
        return self._latest

    def invalidate(self) -> None:
        """Something changed the line's health (a station switch): the next caller asks again."""
        self._at = 0.0

    def reported_down(self, sentence: str) -> Health:
        """A page just failed to reach the orchestrator: say so now rather than on the next check."""
        self._latest, self._at = health_down(sentence), time.monotonic()
        return self._latest

    async def _check(self) -> Health:
        # Quiet: with screens open this runs every second or two; changes are logged once, in _done.
        try:
            readiness = await self._client.readiness(timeout_s=self._timeout_s, quiet=True)
        except OrchestratorDown as exc:
            self._reason = exc.reason or "no answer"
            return health_down(exc.sentence)
        except OrchestratorError as exc:
            self._reason = f"{exc.status} {exc.code}"
            return health_down(exc.sentence)
        return health_from(readiness)

    def _done(self, task: asyncio.Task[Health]) -> None:
        self._pending = None
        if not task.cancelled() and task.exception() is None:
            health = task.result()
            self._log_change(health)
            self._latest, self._at = health, time.monotonic()

    def _log_change(self, health: Health) -> None:
        """One line when the orchestrator stops answering, one when it is back: not one per check."""
        down = health.orchestrator != OK
        if down and not self._logged_down:
            log.warning(
                "orchestrator %s unreachable (%s): every page shows it as down until it answers again",
                self._client.url("/health/ready"),
                self._reason,
            )
        elif not down and self._logged_down:
            log.info("orchestrator %s answers again", self._client.base_url)
        self._logged_down = down

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
