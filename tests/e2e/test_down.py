"""The down banner in a real browser: the orchestrator stops while the operator watches the live page."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import AUTH, REPO, duck_station, install_station, run_orchestrator, serve
from tests.e2e.conftest import (
    NAV_PAGES,
    Line,
    Ui,
    assert_readable,
    record_figure,
    run_interface,
    run_line,
    shot,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SENTENCE = re.compile(r"[A-Za-z][a-z]+ [a-z]+.*[a-z]")  # words, not a code or a JSON body
UNAVAILABLE = "unavailable while the orchestrator is unreachable"
# What a clean relay and a clean stop never log.
LOG_PROBLEMS = (
    "Traceback",
    "CancelledError",
    "ASGI callable returned without completing response",
    "Exception in ASGI application",
    "timeout graceful shutdown exceeded",
)


@pytest.fixture
def line(model_server: str, tmp_path: Path) -> Iterator[Line]:
    """A line of its own: this test stops its orchestrator."""
    with run_line(tmp_path, model_server) as running:
        running.trigger("before-the-stop")
        yield running


def banner_text(page: Page) -> str:
    banner = page.get_by_test_id("banner")
    expect(banner).to_be_visible()
    text = banner.inner_text().strip()
    assert SENTENCE.search(text), f"the banner does not say what is wrong in words: {text!r}"
    return text


def assert_said_once(page: Page) -> None:
    """Each of the banner's sentences appears once on the page: no error box repeats it."""
    body = page.locator("body").inner_text()
    for sentence in page.get_by_test_id("banner").locator("li").all_inner_texts():
        assert body.count(sentence.strip()) == 1, f"{page.url} says {sentence!r} more than once"


def assert_health_mark(page: Page, level: str, words: str) -> None:
    """The ring beside the line's name: its colour (class) and the words that say the same."""
    mark = page.get_by_test_id("health-mark")
    expect(mark).to_have_class(re.compile(rf"\blevel-{level}\b"))
    expect(mark).to_have_attribute("aria-label", re.compile(words, re.I))


def test_the_banner_appears_when_the_orchestrator_stops(line: Line, ui: Ui) -> None:
    # Given the live page open on a healthy line
    page = ui.open(line.interface)
    page.wait_for_function("() => window.__e2e && window.__e2e.opened > 0")
    page.evaluate("window.__sameDocument = true")
    expect(page.get_by_test_id("banner")).to_be_hidden()
    assert_health_mark(page, "ok", "all well")
    # When the orchestrator stops
    line.orchestrator_proc.terminate()
    line.orchestrator_proc.wait(timeout=20)
    stopped = time.monotonic()
    # Then the banner appears without a reload, within a few seconds, saying what is wrong
    expect(page.get_by_test_id("banner")).to_be_visible(timeout=8_000)
    record_figure("down_banner_visible_after_stop_s", round(time.monotonic() - stopped, 2))
    record_figure("down_banner_first_text", page.get_by_test_id("banner").inner_text().strip())
    expect(page.get_by_test_id("banner")).to_contain_text(re.compile("orchestrator", re.I), timeout=8_000)
    record_figure("down_banner_names_the_orchestrator_after_stop_s", round(time.monotonic() - stopped, 2))
    banner_text(page)
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded to show the banner"
    # And the ring beside the line's name turns red, saying so in words too
    assert_health_mark(page, "down", "not answering")
    # And the last decision stays on screen (greyed), not replaced by "no data"
    expect(page.get_by_test_id("live-decision")).to_have_text("OK")
    assert_readable(page)
    shot(page, "down-banner")
    # And a freshly loaded page says it too, in a sentence, and so does every other page (a page whose
    # data cannot be had answers 503, which the browser logs: expected here, for the pages themselves)
    ui.allow_document_status(503)
    for path in NAV_PAGES.values():
        fresh = ui.open(line.interface, path)
        banner_text(fresh)
        expect(fresh.get_by_test_id("banner")).to_contain_text(re.compile("orchestrator", re.I))
        assert_health_mark(fresh, "down", "not answering")
        # The banner says it once; the page's body says what it cannot show, in its own words
        assert_said_once(fresh)
        body = fresh.locator("body").inner_text()
        if path == "/":
            assert re.search(r"station is unknown.*unreachable", body), body
            assert "No station is active" not in body and "Waiting for the first part" not in body
        elif path == "/system":
            expect(fresh.get_by_test_id("system-disk")).to_contain_text(UNAVAILABLE, ignore_case=True)
            expect(fresh.get_by_test_id("system-models")).to_contain_text(UNAVAILABLE, ignore_case=True)
            # Nothing is known of the model server: its badge must not claim it is "not ready"
            expect(fresh.get_by_test_id("system-health")).not_to_contain_text("not ready")
            expect(fresh.get_by_test_id("system-health")).to_contain_text("unknown")
        elif path == "/station":
            expect(fresh.get_by_test_id("station-config")).to_contain_text(UNAVAILABLE, ignore_case=True)
        else:
            assert UNAVAILABLE in body.lower(), f"{path} does not say what it cannot show: {body!r}"
        assert_readable(fresh)
        if path == "/":
            shot(fresh, "down-banner-fresh")
        else:
            shot(fresh, f"down{path.replace('/', '-')}")


def test_the_banner_names_the_model_server_when_it_stops(tmp_path: Path, ui: Ui) -> None:
    # Given a line with a model server of its own, the live page open and healthy
    with serve(REPO / "models") as (model_url, model_proc), run_line(tmp_path, model_url) as line:
        line.trigger("before-the-model-server-stops")
        page = ui.open(line.interface)
        page.wait_for_function("() => window.__e2e && window.__e2e.opened > 0")
        expect(page.get_by_test_id("banner")).to_be_hidden()
        # When the model server stops
        model_proc.terminate()
        model_proc.wait(timeout=20)
        stopped = time.monotonic()
        # Then the banner says so within a few seconds, without a reload
        expect(page.get_by_test_id("banner")).to_contain_text(
            re.compile("model server", re.I), timeout=10_000
        )
        record_figure("down_banner_names_the_model_server_after_stop_s", round(time.monotonic() - stopped, 2))
        banner_text(page)
        assert_readable(page)
        shot(page, "down-model-server")
        page.context.close()  # leave before the services stop: their shutdown is not under test here


def test_the_relay_outlives_the_orchestrator_and_the_interface_stops_at_once(
    model_server: str, tmp_path: Path, ui: Ui
) -> None:
    # Given a line whose interface's log is kept, the live page open on it, one part decided
    stations = tmp_path / "stations"
    install_station(stations, duck_station())
    log = tmp_path / "interface.log"
    with (
        run_orchestrator(tmp_path / "data", stations, model_server, default_station="duck-line") as (
            orchestrator,
            orchestrator_proc,
        ),
        run_interface(orchestrator, log=log) as (interface, interface_proc),
    ):
        httpx.post(f"{orchestrator}/api/v1/inspections?wait=10", headers=AUTH, timeout=30).raise_for_status()
        page = ui.open(interface)
        page.wait_for_function("() => window.__e2e && window.__e2e.opened > 0")
        # When the orchestrator dies, and stays away while the relay tries again
        orchestrator_proc.kill()
        orchestrator_proc.wait(timeout=20)
        expect(page.get_by_test_id("banner")).to_contain_text("orchestrator is not answering", timeout=8_000)
        page.wait_for_timeout(4_000)
        # Then the page's stream to the interface stayed open: the banner names the orchestrator, not a lost
        # connection, and the page never had to reconnect
        expect(page.get_by_test_id("banner")).not_to_contain_text("lost its connection")
        assert page.evaluate("window.__e2e.opened") == 1, "the page's event stream was cut and reopened"
        # When the KPIs are asked for while it is down (a page of many statistics calls)
        ui.allow_document_status(503)
        ui.open(interface, "/kpis").close()
        # And the interface is stopped with the live page still open
        ui.allow_console(r"/events|ERR_CONNECTION_REFUSED")  # the page then finds its server gone
        stopping = time.monotonic()
        interface_proc.terminate()
        interface_proc.wait(timeout=10)
        stopped_in = time.monotonic() - stopping
        page.context.close()
    # Then it stopped at once (the stream did not hold the shutdown for its grace period) and cleanly
    record_figure("interface_stop_with_live_page_s", round(stopped_in, 2))
    text = log.read_text()
    assert stopped_in < 1.5, f"the interface took {stopped_in:.1f} s to stop:\n{text}"
    for problem in LOG_PROBLEMS:
        assert problem not in text, f"the interface logged {problem!r}:\n{text}"
    # And its log names the orchestrator's URLs whole (a slash between address and path), once per event
    for url in re.findall(r"http://127\.0\.0\.1:\d+\S*", text):
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+(/\S*)?", url.rstrip(":,")), f"malformed URL {url!r}"
    assert text.count("event stream from the orchestrator") == 1, text  # lost once, not once per retry
    assert len(re.findall(r"KPI|/api/v1/stats", text)) == 1, f"the KPI page flooded the log:\n{text}"
