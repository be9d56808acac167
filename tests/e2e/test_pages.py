"""The KPI and system pages, and the navigation between every page, in a real browser."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import expect

from tests.conftest import free_port
from tests.e2e.conftest import NAV_PAGES, Line, Ui, assert_readable, record_figure, run_line, shot

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CHARTS = ("kpi-counts", "kpi-reject-by-defect", "kpi-throughput", "kpi-latency")


@pytest.fixture(scope="module")
def line(model_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    """A duck line with a shift's worth of a few OK and KO ducks."""
    with run_line(tmp_path_factory.mktemp("pages"), model_server) as running:
        for n in range(12):
            running.trigger(f"kpi-{n:02d}")
        yield running


def test_the_kpi_page_shows_the_yield_and_charts(line: Line, ui: Ui) -> None:
    # Given a shift with OK and KO items
    stats = line.api("/api/v1/stats", window_s=8 * 3600)
    assert stats["counts"]["KO"] and stats["counts"]["OK"], stats
    # When the quality engineer opens the KPIs
    page = ui.open(line.interface, "/kpis")
    # Then the yield is the orchestrator's, as a percentage
    text = page.get_by_test_id("kpi-yield").inner_text()
    match = re.search(r"(\d+(?:[.,]\d+)?)\s*%", text)
    assert match, f"the yield reads {text!r}, not a percentage"
    assert abs(float(match.group(1).replace(",", ".")) - 100 * stats["yield_ratio"]) < 0.11, (text, stats)
    # And every chart is a drawn picture with a text alternative, not a table of numbers
    for chart in CHARTS:
        svg = page.get_by_test_id(chart)
        expect(svg).to_be_visible()
        assert svg.evaluate("el => el.tagName.toLowerCase()") == "svg", f"{chart} is not an inline SVG"
        expect(svg).to_have_attribute("role", "img")
        expect(svg).to_have_attribute("aria-label", re.compile(r"\w"))
        box = svg.bounding_box()
        assert box and box["width"] >= 100 and box["height"] >= 60, f"{chart} is too small to read: {box}"
        shapes = svg.locator("rect, path, line, polyline, polygon, circle").count()
        assert shapes >= 2, f"{chart} draws nothing ({shapes} shapes)"
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    # And the count axes read in whole parts (no 2.5 parts)
    for chart in ("kpi-counts", "kpi-throughput"):
        figures = [
            t
            for t in page.get_by_test_id(chart).locator("text").all_text_contents()
            if re.fullmatch(r"[\d.,]+", t)
        ]
        assert figures and all(re.fullmatch(r"[\d,]+", t) for t in figures), f"{chart} axis: {figures}"
    # And the rejects are per label, saying where labels come from (the classifier's "ko" is one)
    expect(page.get_by_test_id("kpi-reject-by-defect")).to_have_attribute(
        "aria-label", re.compile("^Rejects by label")
    )
    assert re.search(
        r"Rejects by label\s+Labels come from the models of the cameras that said KO",
        page.locator("body").inner_text(),
    )
    assert_readable(page)
    shot(page, "kpis")
    # When the window is switched to the last hour
    page.get_by_test_id("kpi-window-hour").click()
    page.wait_for_url(re.compile(r"window=hour"))
    # Then the page still shows the yield and the charts
    expect(page.get_by_test_id("kpi-yield")).to_contain_text("%")
    for chart in CHARTS:
        expect(page.get_by_test_id(chart)).to_be_visible()
    page.get_by_test_id("kpi-window-shift").click()
    page.wait_for_url(re.compile(r"window=shift"))
    assert_readable(page)


def test_the_system_page_shows_health_versions_models_and_disk(line: Line, ui: Ui) -> None:
    # Given a healthy line
    system = line.api("/api/v1/system")
    # When the technician opens the system page
    page = ui.open(line.interface, "/system")
    # Then health, versions, every model with its versions, and disk usage are shown
    for section in ("system-health", "system-versions", "system-models", "system-disk"):
        expect(page.get_by_test_id(section)).to_be_visible()
    expect(page.get_by_test_id("system-versions")).to_contain_text(system["version"])
    for model in system["models"]:
        expect(page.get_by_test_id("system-models")).to_contain_text(model["name"])
        expect(page.get_by_test_id("system-models")).to_contain_text(str(model["latest_version"]))
    expect(page.get_by_test_id("system-disk")).to_contain_text(re.compile(r"\d"))
    expect(page.get_by_test_id("banner")).to_be_hidden()
    assert_readable(page)
    shot(page, "system")


def test_the_system_page_shows_results_waiting_for_the_mes(model_server: str, tmp_path: Path, ui: Ui) -> None:
    # Given a line whose MES webhook receiver is down
    integrations = tmp_path / "integrations.yaml"
    hook = {
        "name": "mes",
        "url": f"http://127.0.0.1:{free_port()}/hook",
        "secret": {"env": "E2E_HOOK_SECRET"},
    }
    integrations.write_text(yaml.safe_dump({"webhooks": [hook]}))
    env = {"EDGE_ORCHESTRATOR_INTEGRATIONS_FILE": str(integrations), "E2E_HOOK_SECRET": "s3cret-for-e2e"}
    with run_line(tmp_path, model_server, orchestrator_env=env) as line:
        for n in range(2):
            line.trigger(f"E2E-{n}")
        # When the technician opens the system page
        page = ui.open(line.interface, "/system")
        # Then the results waiting for the MES are counted, and said to be kept
        waiting = page.get_by_test_id("outbox-webhook:mes")
        expect(waiting).to_contain_text("2 waiting")
        expect(waiting).to_contain_text("kept on disk until delivered")
        link = page.get_by_test_id("link-webhook:mes")
        expect(link).to_contain_text("retrying")
        expect(link).to_contain_text("ConnectError")
        assert_readable(page)


def test_every_page_is_one_click_away_and_readable(line: Line, ui: Ui) -> None:
    # Given the live page
    page = ui.open(line.interface)
    # When the operator follows each navigation link
    for link, path in NAV_PAGES.items():
        page.get_by_test_id(link).click()
        page.wait_for_url(re.compile(re.escape(line.interface + path) + r"(\?.*)?$"))
        timing = page.evaluate(
            "() => { const n = performance.getEntriesByType('navigation')[0];"
            " return [n.responseEnd - n.requestStart, n.loadEventEnd]; }"
        )
        record_figure(f"page_{link.removeprefix('nav-')}_server_ms", round(timing[0], 1))
        # Then each page loads, without error text, banner hidden (all is well)
        expect(page.get_by_test_id("banner")).to_be_hidden()
        expect(page.get_by_test_id("error")).to_have_count(0)
        assert_readable(page)
