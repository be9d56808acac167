"""Browser end-to-end fixtures: Debian's chromium, driven by Playwright, against the three real services."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Response,
    ViewportSize,
    sync_playwright,
)

from tests.conftest import (
    AUTH,
    ORCHESTRATOR_KEY,
    REPO,
    duck_station,
    free_port,
    install_station,
    run_orchestrator,
    service,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = REPO / "build" / "e2e-screenshots"  # gitignored test artefacts, looked at by a human
FIGURES = SCREENSHOTS / "figures.json"  # measured timings, for the report
DESKTOP: ViewportSize = {"width": 1366, "height": 768}  # the line screen
TABLET: ViewportSize = {"width": 768, "height": 1024}  # a portrait tablet carried along the line
NAV_PAGES = {
    "nav-live": "/",
    "nav-kpis": "/kpis",
    "nav-history": "/history",
    "nav-station": "/station",
    "nav-system": "/system",
}
DECISIONS = ("OK", "KO", "NO_DECISION")
DECISIONS_RE = re.compile("^(OK|KO|NO_DECISION)$")

# Recorded in the page itself, so the figure is what the operator sees: when the page's own EventSource
# dispatches `item.decided` (our listener is registered first, in the constructor), and when the live
# panel first shows that item with a decision (a MutationObserver on the whole document).
LATENCY_PROBE = """
(() => {
  const marks = { events: {}, shown: {}, opened: 0 };
  window.__e2e = marks;
  const itemId = (raw) => {
    try {
      const payload = JSON.parse(raw);
      return (payload.data && payload.data.item_id) || payload.item_id || null;
    } catch (e) { return null; }
  };
  const Native = window.EventSource;
  if (Native) {
    window.EventSource = class extends Native {
      constructor(url, init) {
        super(url, init);
        this.addEventListener('open', () => { marks.opened = (marks.opened || 0) + 1; });
        this.addEventListener('item.decided', (event) => {
          const id = itemId(event.data);
          if (id && !(id in marks.events)) marks.events[id] = performance.now();
        });
      }
    };
  }
  const check = () => {
    const link = document.querySelector('[data-testid="live-item-link"]');
    const decision = document.querySelector('[data-testid="live-decision"]');
    if (!link || !decision) return;
    const match = (link.getAttribute('href') || '').match(/\\/items\\/([^/?#]+)/);
    const text = decision.textContent.trim();
    if (match && ['OK', 'KO', 'NO_DECISION'].includes(text) && !(match[1] in marks.shown)) {
      marks.shown[match[1]] = performance.now();
    }
  };
  const observe = () => {
    check();
    new MutationObserver(check).observe(document.documentElement, {
      subtree: true, childList: true, attributes: true, characterData: true,
    });
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', observe);
  else observe();
})();
"""

# What must never reach an operator's screen: an error body or a model dumped as JSON, a stack trace.
RAW_JSON = re.compile(r"[{\[]\s*\"[\w .-]+\"\s*:")
RAW_MARKERS = ("Traceback", "Internal Server Error", '"detail"', "{'", "Exception:")


@contextmanager
def run_interface(
    orchestrator_url: str, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The real interface process (`python -m edge_interface`) on a loopback port; waits until live. Its output
    goes to `log` when given (for tests of what it logs)."""
    port = free_port()
    settings = {
        "EDGE_INTERFACE_ORCHESTRATOR_URL": orchestrator_url,
        "EDGE_API_KEY": ORCHESTRATOR_KEY,
        "EDGE_INTERFACE_LOG_LEVEL": "warning",
        **(env or {}),
    }
    base = f"http://127.0.0.1:{port}"
    with service(
        ["edge_interface", "--port", str(port)], f"{base}/health/live", settings, timeout=30, log=log
    ) as proc:
        yield base, proc


@dataclass
class Line:
    """The three services of one duck line, with the orchestrator's API at hand for givens and checks."""

    model_server: str
    orchestrator: str
    orchestrator_proc: subprocess.Popen[bytes]
    interface: str
    stations_dir: Path

    def api(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.orchestrator}{path}", params=params, headers=AUTH, timeout=10)
        response.raise_for_status()
        return response.json()

    def trigger(self, part_id: str | None = None) -> dict[str, Any]:
        """One decided inspection through the orchestrator's API (the givens of a test)."""
        body = {"part_id": part_id} if part_id else None
        response = httpx.post(
            f"{self.orchestrator}/api/v1/inspections?wait=10", json=body, headers=AUTH, timeout=30
        )
        assert response.status_code == 200, response.text
        item: dict[str, Any] = response.json()
        assert item["decision"] in DECISIONS, item
        return item

    def items(self, **params: Any) -> list[dict[str, Any]]:
        """Every item matching the filters, newest first (all pages)."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = self.api(
                "/api/v1/inspections", limit=500, **params, **({"cursor": cursor} if cursor else {})
            )
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items


@contextmanager
def run_line(
    tmp: Path,
    model_server: str,
    *extra_stations: dict[str, Any],
    orchestrator_env: dict[str, str] | None = None,
    **env: str,
) -> Iterator[Line]:
    """An orchestrator (its own data dir) on the duck line, extra stations installed, and an interface."""
    stations_dir = tmp / "stations"
    install_station(stations_dir, duck_station())
    for station in extra_stations:
        install_station(stations_dir, station)
    with (
        run_orchestrator(
            tmp / "data", stations_dir, model_server, default_station="duck-line", **(orchestrator_env or {})
        ) as (orchestrator, orchestrator_proc),
        run_interface(orchestrator, env) as (interface, _),
    ):
        yield Line(model_server, orchestrator, orchestrator_proc, interface, stations_dir)


@pytest.fixture(scope="module")
def line(model_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    """A duck line of its own for one test module (tests that stop a service start their own)."""
    with run_line(tmp_path_factory.mktemp("line"), model_server) as running:
        yield running


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, for the line dashboard's tests."""
    FIGURES.unlink(missing_ok=True)  # this run's figures only
    with chromium() as launched:
        yield launched


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium, headless; a missing browser is a failure, never a skip. Playwright's sync API keeps
    an event loop running until it stops: use it from a fixture that surely ends (package or module scope)."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's chromium "
            "(`make test` installs it; or run ./deployment/install-debian-packages.sh chromium). "
            "Never run `playwright install`.",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Problem:
    kind: str
    text: str
    url: str


@dataclass
class Ui:
    """Fresh browser contexts for one test, with every console error and uncaught exception collected."""

    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)
    document_statuses: dict[str, int] = field(default_factory=dict)
    allowed_document_statuses: set[int] = field(default_factory=set)

    def open(self, base_url: str, path: str = "/", *, viewport: ViewportSize | None = None) -> Page:
        context = self.browser.new_context(viewport=viewport or DESKTOP, base_url=base_url)
        context.set_default_timeout(10_000)
        context.add_init_script(LATENCY_PROBE)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", self._console)
        page.on("response", self._response)
        page.on("pageerror", lambda error: self.problems.append(Problem("uncaught", str(error), page.url)))
        page.goto(path)
        return page

    def allow_console(self, pattern: str) -> None:
        """A console error this test provokes on purpose (e.g. a resource failing while a service is down)."""
        self.allowed.append(re.compile(pattern))

    def _response(self, response: Response) -> None:
        if response.request.resource_type == "document":
            self.document_statuses[response.url] = response.status

    def allow_document_status(self, status: int) -> None:
        """A page the server answers with this status on purpose (the browser logs it as an error)."""
        self.allowed_document_statuses.add(status)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = str(message.location.get("url", ""))
        if url.endswith("/favicon.ico") and "404" in message.text:
            return
        if (
            message.text.startswith("Failed to load resource")
            and self.document_statuses.get(url) in self.allowed_document_statuses
        ):
            return
        self.problems.append(Problem("console error", message.text, url))

    def unexpected(self) -> list[Problem]:
        return [
            p for p in self.problems if not any(a.search(p.text) or a.search(p.url) for a in self.allowed)
        ]

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def ui(browser: Browser) -> Iterator[Ui]:
    """Opens pages in fresh contexts; fails the test on console errors or uncaught page exceptions."""
    opened = Ui(browser)
    yield opened
    opened.close()
    problems = opened.unexpected()
    if problems:
        listing = "\n".join(f"  {p.kind}: {p.text} (at {p.url or 'unknown'})" for p in problems)
        pytest.fail(f"the pages logged {len(problems)} error(s):\n{listing}", pytrace=False)


def shot(page: Page, name: str) -> Path:
    """A full-page screenshot kept as a test artefact (build/e2e-screenshots/, looked at by a human)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def assert_readable(page: Page) -> None:
    """No raw JSON, stack trace or framework error page anywhere in the visible text."""
    text = page.locator("body").inner_text()
    for marker in RAW_MARKERS:
        at = text.find(marker)
        assert at < 0, (
            f"{page.url} shows {marker!r} to the operator: ...{text[max(0, at - 120) : at + 160]!r}"
        )
    match = RAW_JSON.search(text)
    assert match is None, (
        f"{page.url} shows raw JSON to the operator: ...{text[max(0, match.start() - 120) : match.end() + 160]!r}"
    )


def record_figure(name: str, value: float | str) -> None:
    """A measured figure, printed and kept beside the screenshots for the report."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    figures = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    figures[name] = value
    FIGURES.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"e2e figure: {name} = {value}")


def camera_ids(line: Line) -> list[str]:
    active = line.api("/api/v1/stations/active")
    return [camera["id"] for camera in active["station"]["cameras"]]


def wait_image_loaded(page: Page, test_id: str, timeout_ms: float = 5_000) -> None:
    """Waits until the <img> with this testid has finished loading a real picture (naturalWidth > 0)."""
    page.wait_for_function(
        """(id) => {
            const img = document.querySelector(`[data-testid="${id}"]`);
            return !!img && img.complete && img.naturalWidth > 0;
        }""",
        arg=test_id,
        timeout=timeout_ms,
    )
