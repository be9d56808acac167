"""Server-side rendering: the Jinja2 environment (autoescaped), its filters, and the page every route returns."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi.responses import HTMLResponse
from markupsafe import Markup, escape

from edge_interface import __version__
from edge_interface.charts import fmt
from edge_interface.errors import UNAVAILABLE
from edge_interface.health import LEVEL_WORDS, Health
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
# Under the machine's decision when an operator overrode it: the tile's colour stays the machine's.
MACHINE_WORDS = {
    "OK": "Accepted by the machine",
    "KO": "Rejected by the machine",
    "NO_DECISION": "Not decided by the machine",
}
NAV = (("live", "/", "Live"), ("kpis", "/kpis", "KPIs"), ("history", "/history", "History"))
NAV_ADMIN = (("station", "/station", "Station"), ("system", "/system", "System"))


def decision_class(decision: object) -> str:
    return DECISION_CLASS.get(str(decision), "decision-none")


def decision_words(decision: object, overridden: object = False) -> str:
    words = MACHINE_WORDS if overridden else DECISION_WORDS
    return words.get(str(decision), "Waiting for the decision")


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


_BACKTICKS = re.compile(r"`([^`\n]+)`")
_SPACES = re.compile(r"(\s+)")
# Where a long value (a path, a URL) may break: after these characters, never inside a word.
_BREAK_AFTER = re.compile(r"(?<=[/\\?&=_.:])")
SHORT_TOKEN = 24  # values up to this long never wrap (no "duck-" / "detector" split at the hyphen)


def inline_code(text: object) -> Markup:
    """A schema description with its `backticked` names as <code>: escaped first, then converted, so the
    description can never inject markup."""
    escaped = str(escape(str(text)))
    return Markup(_BACKTICKS.sub(r"<code>\1</code>", escaped))


def config_value(value: object) -> Markup:
    """A configuration value that breaks sensibly: short words never wrap, long ones (paths, URLs) only
    after a separator such as "/"."""

    def unbroken(piece: str) -> str:
        # A piece longer than a column may be (a hash, a long name) can still break anywhere, as a last resort.
        return (
            f'<span class="nobr">{escape(piece)}</span>' if len(piece) <= SHORT_TOKEN else str(escape(piece))
        )

    parts: list[str] = []
    for token in _SPACES.split(str(value)):
        if not token or token.isspace():
            parts.append(str(escape(token)))
        elif len(token) <= SHORT_TOKEN:
            parts.append(unbroken(token))
        else:
            parts.append("<wbr>".join(unbroken(piece) for piece in _BREAK_AFTER.split(token) if piece))
    return Markup("".join(parts))


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
            decision_words=decision_words,
            when=local,
            clock=clock,
            size=size,
            duration=duration,
            ms=milliseconds,
            percent=percent,
            number=fmt,
            inline_code=inline_code,
            config_value=config_value,
        )
        self.env.globals.update(
            static=lambda name: f"/static/{name}?v={self.static_version}",
            version=__version__,
            line_title=settings.title,
            nav_pages=NAV,
            nav_admin=NAV_ADMIN,
            unavailable_words=UNAVAILABLE,
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
        unavailable: bool = False,
    ) -> HTMLResponse:
        """A whole page: the layout with the banner from `health`, and `errors` as sentences under the title.

        `unavailable`: the page's data could not be had because the orchestrator is unreachable; the banner
        says so, and the page's body says in place what it cannot show."""
        html = self.env.get_template(name).render(
            **context,
            problems=health.problems,
            line_down=health.orchestrator != "ok",
            health_level=health.level,
            health_words=LEVEL_WORDS[health.level],
            nav=nav,
            page_title=title,
            errors=errors or [],
            unavailable=unavailable,
        )
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
