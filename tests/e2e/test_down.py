"""The down banner in a real browser: the orchestrator stops while the operator watches the live page."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import REPO, serve
from tests.e2e.conftest import NAV_PAGES, Line, Ui, assert_readable, record_figure, run_line, shot

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SENTENCE = re.compile(r"[A-Za-z][a-z]+ [a-z]+.*[a-z]")  # words, not a code or a JSON body


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


def test_the_banner_appears_when_the_orchestrator_stops(line: Line, ui: Ui) -> None:
    # Given the live page open on a healthy line
    page = ui.open(line.interface)
    page.wait_for_function("() => window.__e2e && window.__e2e.opened > 0")
    page.evaluate("window.__sameDocument = true")
    expect(page.get_by_test_id("banner")).to_be_hidden()
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
    assert_readable(page)
    shot(page, "down-banner")
    # And a freshly loaded page says it too, in a sentence, and so does every other page (a page whose
    # data cannot be had answers 503, which the browser logs: expected here, for the pages themselves)
    ui.allow_document_status(503)
    for path in NAV_PAGES.values():
        fresh = ui.open(line.interface, path)
        banner_text(fresh)
        expect(fresh.get_by_test_id("banner")).to_contain_text(re.compile("orchestrator", re.I))
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
