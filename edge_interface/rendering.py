"""Server-side rendering: the Jinja2 environment (autoescaped), its filters, and the page every route returns."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi.responses import HTMLResponse

from edge_interface import __version__
from edge_interface.charts import fmt
from edge_interface.health import Health
from edge_interface.settings import InterfaceSettings

PACKAGE = Path(__file__).parent
TEMPLATES = PACKAGE / "templates"
STATIC = PACKAGE / "static"

DECISION_CLASS = {"OK": "decision-ok", "KO": "decision-ko", "NO_DECISION": "decision-nd"}
DECISION_WORDS = {
    "OK": "Part accepted",
    "KO": "Part rejected",
    "NO_DECISION": "Not decided: a person must check this part",
}
NAV = (("live", "/", "Live"), ("kpis", "/kpis", "KPIs"), ("history", "/history", "History"))
NAV_ADMIN = (("station", "/station", "Station"), ("system", "/system", "System"))


def decision_class(decision: object) -> str:
    return DECISION_CLASS.get(str(decision), "decision-none")


def local(value: datetime | None, pattern: str = "%Y-%m-%d %H:%M:%S") -> str:
    """Times in the device's time zone: the operators stand beside it, and type filter times in it too."""
    return value.astimezone().strftime(pattern) if value is not None else "—"


def clock(value: datetime | None) -> str:
    return local(value, "%H:%M:%S")


def size(value: float | None) -> str:
    if value is None:
        return "—"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return fmt(value / scale, unit)
    return fmt(value, "B")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{int(seconds)} s"


def milliseconds(value: float | None) -> str:
    return "—" if value is None else fmt(value, "ms")


def percent(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio * 100:.1f} %"


def _fingerprint(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


class Renderer:
    """Builds the environment once (blocking file reads: construct it off the event loop)."""

    def __init__(self, settings: InterfaceSettings) -> None:
        self.settings = settings
        # Static URLs carry a hash of the files, so a new version is never served from a stale cache.
        self.static_version = _fingerprint(STATIC)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            decision_class=decision_class,
            decision_words=lambda d: DECISION_WORDS.get(str(d), "Waiting for the decision"),
            when=local,
            clock=clock,
            size=size,
            duration=duration,
            ms=milliseconds,
            percent=percent,
            number=fmt,
        )
        self.env.globals.update(
            static=lambda name: f"/static/{name}?v={self.static_version}",
            version=__version__,
            line_title=settings.title,
            nav_pages=NAV,
            nav_admin=NAV_ADMIN,
        )
        for name in self.env.list_templates(extensions=["html"]):
            self.env.get_template(
                name
            )  # parse every template now: a broken one fails at start, not on a page

    def page(
        self,
        name: str,
        context: Mapping[str, Any],
        *,
        health: Health,
        nav: str,
        title: str,
        status: int = 200,
        errors: list[str] | None = None,
    ) -> HTMLResponse:
        """A whole page: the layout with the banner from `health`, and `errors` as sentences under the title."""
        html = self.env.get_template(name).render(
            **context,
            problems=health.problems,
            line_down=health.orchestrator != "ok",
            nav=nav,
            page_title=title,
            errors=errors or [],
        )
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
