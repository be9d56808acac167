"""The dashboard's rendering: the Jinja Renderer with its template filters and static files, and the Viewer
(may they read, are they admin) with the redirect to the login page."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import jinja2
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from edge_interface import charts
from edge_interface.charts import fmt
from hub.api.deps import RuntimeDep, is_admin

PACKAGE = Path(__file__).parent
TEMPLATES = PACKAGE / "templates"
STATIC = PACKAGE / "static"
INTERFACE_STATIC = (
    Path(charts.__file__).parent / "static"
)  # not via edge_interface.rendering: it pulls its app
# The line dashboard's stylesheet is the base (one visual language for the line and the fleet); hub.css adds
# the fleet's pieces on top.
STATIC_FILES = {"app.css": INTERFACE_STATIC / "app.css", "favicon.svg": INTERFACE_STATIC / "favicon.svg"}
NAV = (("fleet", "/", "Fleet"), ("kpis", "/kpis", "KPIs"), ("rollouts", "/rollouts", "Roll-outs"))
STATUS_WORDS = {"online": "online", "stale": "stale", "offline": "offline", "never_seen": "never seen"}


# --- templates -------------------------------------------------------------------------------------


def when(value: datetime | None) -> str:
    """Absolute times in UTC, said so: the fleet spans time zones."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "—"


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def percent(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio * 100:.1f} %"


def gib(value: int | None) -> str:
    return "—" if value is None else fmt(value / 2**30, "GiB")


class Renderer:
    """The Jinja environment (autoescaped, every template parsed at construction: build it off the loop)."""

    def __init__(self) -> None:
        files = {**STATIC_FILES, **{p.name: p for p in STATIC.iterdir() if p.is_file()}}
        self.static_files = files
        self.static_version = str(int(max(p.stat().st_mtime for p in files.values())))
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(when=when, ago=ago, percent=percent, gib=gib, number=fmt)
        self.env.globals.update(
            static=lambda name: f"/static/{name}?v={self.static_version}",
            nav_pages=NAV,
            status_words=STATUS_WORDS,
        )
        for name in self.env.list_templates(extensions=["html"]):
            self.env.get_template(name)

    def page(
        self, name: str, context: Mapping[str, Any], *, viewer: Viewer, nav: str, title: str
    ) -> HTMLResponse:
        html = self.env.get_template(name).render(**context, viewer=viewer, nav=nav, page_title=title)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})


async def get_renderer(request: Request) -> Renderer:
    # Built once per app, on first use and off the event loop (template parsing reads files).
    renderer: Renderer | None = getattr(request.app.state, "hub_renderer", None)
    if renderer is None:
        renderer = await asyncio.to_thread(Renderer)
        request.app.state.hub_renderer = renderer
    return renderer


RendererDep = Annotated[Renderer, Depends(get_renderer)]


# --- who is looking --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    admin: bool  # holds the admin key (session): may start roll-outs
    allowed: bool  # may read the pages
    path: str  # where they are: the login page brings them back here


async def get_viewer(runtime: RuntimeDep, request: Request) -> Viewer:
    admin = is_admin(runtime, request, None)
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Viewer(admin=admin, allowed=admin or runtime.settings.open_reads, path=path)


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


def to_login(viewer: Viewer) -> RedirectResponse:
    return RedirectResponse("/login?" + urlencode({"next": viewer.path}), status_code=303)


def not_found(renderer: Renderer, viewer: Viewer, sentence: str, back: str, nav: str) -> HTMLResponse:
    response = renderer.page(
        "error.html", {"sentence": sentence, "back": back}, viewer=viewer, nav=nav, title="Not found"
    )
    response.status_code = 404
    return response
