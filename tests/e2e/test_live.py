"""The live page in a real browser: first render, live decisions through the event stream, keyboard, tablet."""

from __future__ import annotations

import re
import statistics
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import (
    DECISIONS_RE,
    TABLET,
    Line,
    Ui,
    assert_readable,
    camera_ids,
    record_figure,
    shot,
    wait_image_loaded,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

DECISION_CLASS = {"OK": "decision-ok", "KO": "decision-ko", "NO_DECISION": "decision-nd"}


def navigation_timing(page: Page) -> dict[str, float]:
    """The browser's own figures for this page load (first contentful paint may come after `load`)."""
    page.wait_for_function(
        "() => performance.getEntriesByName('first-contentful-paint').length > 0", timeout=3_000
    )
    return dict(
        page.evaluate(
            """() => {
                const nav = performance.getEntriesByType('navigation')[0];
                const fcp = performance.getEntriesByName('first-contentful-paint')[0];
                return {
                    response_end: nav.responseEnd,
                    dom_content_loaded: nav.domContentLoadedEventEnd,
                    load: nav.loadEventEnd,
                    first_contentful_paint: fcp ? fcp.startTime : -1,
                };
            }"""
        )
    )


def wait_for_stream(page: Page) -> None:
    """The page's EventSource is open, so no decision can slip by before it listens."""
    page.wait_for_function("() => window.__e2e && window.__e2e.opened > 0", timeout=10_000)


def wait_shown(page: Page, item_id: str, timeout_ms: float = 5_000) -> dict[str, float]:
    """Waits until the live panel shows this item; returns the page's own event and display times."""
    page.wait_for_function(
        "(id) => window.__e2e && id in window.__e2e.shown", arg=item_id, timeout=timeout_ms
    )
    return dict(
        page.evaluate(
            "(id) => ({event: window.__e2e.events[id] ?? null, shown: window.__e2e.shown[id]})", item_id
        )
    )


def images_loaded_at(page: Page, item_id: str) -> float:
    """performance.now() when every live camera image shows this item, fully loaded."""
    handle = page.wait_for_function(
        """(id) => {
            const imgs = [...document.querySelectorAll('[data-testid^="live-image-"]')];
            const ready = imgs.length > 0 && imgs.every(
                (i) => (i.getAttribute('src') || '').includes(id) && i.complete && i.naturalWidth > 0);
            return ready ? performance.now() : false;
        }""",
        arg=item_id,
        polling=10,
        timeout=5_000,
    )
    return float(handle.json_value())


def trigger_from_page(page: Page, part_id: str | None = None, *, keyboard: bool = False) -> str:
    """Clicks (or presses Enter on) the trigger button; returns the accepted item id."""
    if part_id is not None:
        page.get_by_test_id("trigger-part-id").fill(part_id)
    with page.expect_response(
        lambda r: r.url.endswith("/api/trigger") and r.request.method == "POST"
    ) as info:
        if keyboard:
            page.keyboard.press("Enter")
        else:
            page.get_by_test_id("trigger-button").click()
    response = info.value
    assert response.status == 202, f"the trigger answered {response.status}: {response.text()}"
    body: dict[str, Any] = response.json()
    # The next part has its own id: the field is emptied once the trigger is accepted.
    expect(page.get_by_test_id("trigger-part-id")).to_have_value("")
    return str(body["item_id"])


def assert_live_panel_shows(page: Page, line: Line, item_id: str) -> dict[str, Any]:
    """The big decision, its colour, the part id, the item link and every camera's picture and verdict."""
    item: dict[str, Any] = line.api(f"/api/v1/inspections/{item_id}", wait=5)
    decision = page.get_by_test_id("live-decision")
    expect(decision).to_have_text(item["decision"])
    expect(page.get_by_test_id("live-item-link")).to_have_attribute("href", f"/items/{item_id}")
    if item["part_id"]:
        expect(page.get_by_test_id("live-part-id")).to_contain_text(item["part_id"])
    for camera in item["cameras"]:
        cid = camera["camera_id"]
        panel = page.get_by_test_id(f"live-camera-{cid}")
        expect(panel).to_be_visible()
        image = panel.get_by_test_id(f"live-image-{cid}")
        expect(image).to_have_attribute("src", re.compile(re.escape(item_id)))
        wait_image_loaded(page, f"live-image-{cid}")
        expect(panel.get_by_test_id(f"live-camera-decision-{cid}")).to_have_text(camera["decision"])
        expect(panel.get_by_test_id(f"live-camera-reason-{cid}")).to_be_attached()
    first = page.get_by_test_id("strip").get_by_test_id("strip-item").first
    expect(first).to_have_attribute("data-item-id", item_id)
    expect(first).to_have_attribute("data-decision", item["decision"])
    return item


def assert_decision_colour(page: Page, decision: str) -> None:
    """The contract puts the colour class on live-decision itself (checked last: the figures come first)."""
    colour = DECISION_CLASS[decision]
    classes = page.get_by_test_id("live-decision").get_attribute("class") or ""
    assert colour in classes.split(), (
        f"live-decision must carry the class {colour} (contract), it has {classes!r}"
    )


def test_the_live_page_renders_within_the_budget_and_shows_the_latest_item(line: Line, ui: Ui) -> None:
    # Given a line (the first visit of the module: no item yet, then two decided items)
    empty = not line.items()
    # When the operator opens the live page
    page = ui.open(line.interface)
    page.wait_for_load_state("load")
    # Then it renders within the budget, and says "—" until the line has decided something
    timing = navigation_timing(page)
    if empty:
        expect(page.get_by_test_id("live-decision")).to_have_text("—")
        record_figure("live_first_render_empty_line_load_ms", round(timing["load"], 1))
        record_figure("live_first_render_empty_line_fcp_ms", round(timing["first_contentful_paint"], 1))
        assert_readable(page)
        shot(page, "live-empty")
        assert timing["load"] <= 2_000, timing
    latest = [line.trigger(f"e2e-render-{n}") for n in range(2)][-1]

    # When the page is opened again with items on the line (a fresh browser context: nothing cached)
    page = ui.open(line.interface)
    page.wait_for_load_state("load")
    timing = navigation_timing(page)
    record_figure("live_first_render_load_ms", round(timing["load"], 1))
    record_figure("live_first_render_fcp_ms", round(timing["first_contentful_paint"], 1))
    record_figure("live_first_render_server_response_ms", round(timing["response_end"], 1))
    # Then the latest item is on screen at once, pictures loaded, strip newest first
    assert_live_panel_shows(page, line, latest["item_id"])
    strip_ids = page.get_by_test_id("strip-item").evaluate_all(
        "items => items.map(i => i.getAttribute('data-item-id'))"
    )
    expected = [item["item_id"] for item in line.items()][: len(strip_ids)]
    assert strip_ids == expected, "the strip is not the latest items, newest first"
    assert timing["load"] <= 2_000, f"the live page took {timing['load']:.0f} ms to load: {timing}"
    # And it fits the 1366x768 line screen: decision and trigger above the fold, no scrolling either way
    expect(page.get_by_test_id("live-decision")).to_be_in_viewport()
    expect(page.get_by_test_id("trigger-button")).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    height = page.evaluate("[document.documentElement.scrollHeight, document.documentElement.clientHeight]")
    assert height[0] <= height[1], f"the live page is {height[0]} px tall on the {height[1]} px line screen"
    # And the strip's tiles keep one fixed width however few they are (two parts are not two long bands)
    widths = page.get_by_test_id("strip-item").evaluate_all(
        "items => items.map(i => i.getBoundingClientRect().width)"
    )
    assert len({round(w) for w in widths}) == 1 and max(widths) <= 160, f"strip tiles are {widths} px wide"
    # And there is no blank band under the part id field: the trigger's box ends with the field
    band = page.get_by_test_id("trigger-part-id").evaluate(
        "el => el.closest('form').getBoundingClientRect().bottom - el.getBoundingClientRect().bottom"
    )
    assert band <= 16, f"{band:.0f} px of blank under the part id field"
    font_px = float(
        page.get_by_test_id("live-decision").evaluate("el => parseFloat(getComputedStyle(el).fontSize)")
    )
    assert font_px >= 48, f"the decision is {font_px} px high: not readable from a few metres"
    assert_readable(page)
    assert_decision_colour(page, latest["decision"])
    shot(page, "live")


def test_a_decision_triggered_from_the_page_appears_without_reload(line: Line, ui: Ui) -> None:
    # Given the live page, its event stream connected
    page = ui.open(line.interface)
    wait_for_stream(page)
    page.evaluate("window.__sameDocument = true")
    latencies: list[float] = []
    with_images: list[float] = []
    # When the operator triggers from the page (three times), and the line triggers by itself (three times)
    for n in range(6):
        if n % 2 == 0:
            item_id = trigger_from_page(page, f"e2e-live-{n}")
        else:
            item_id = line.trigger(f"e2e-line-{n}")["item_id"]
        # Then the decision appears, in the panel and in the strip, within the budget of the event
        marks = wait_shown(page, item_id)
        assert marks["event"] is not None, "the page never received item.decided for the item it shows"
        latencies.append(marks["shown"] - marks["event"])
        with_images.append(images_loaded_at(page, item_id) - marks["event"])
        assert_live_panel_shows(page, line, item_id)
    record_figure("live_decision_after_event_ms_max", round(max(latencies), 1))
    record_figure("live_decision_after_event_ms_median", round(statistics.median(latencies), 1))
    record_figure("live_decision_after_event_ms_all", ", ".join(f"{v:.1f}" for v in latencies))
    record_figure("live_images_loaded_after_event_ms_max", round(max(with_images), 1))
    record_figure("live_images_loaded_after_event_ms_median", round(statistics.median(with_images), 1))
    assert max(latencies) <= 1_000, f"decision shown {max(latencies):.0f} ms after item.decided: {latencies}"
    assert max(with_images) <= 2_000, f"camera images loaded {max(with_images):.0f} ms after the event"
    # And the page was never reloaded
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded to show the decision"
    assert_readable(page)
    assert_decision_colour(page, line.api(f"/api/v1/inspections/{item_id}")["decision"])
    shot(page, "live-after-trigger")


def test_an_idle_live_page_does_not_poll(line: Line, ui: Ui) -> None:
    # Given the live page, loaded and connected
    page = ui.open(line.interface)
    page.wait_for_load_state("load")
    wait_for_stream(page)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    # When nothing happens on the line for a few seconds
    page.wait_for_timeout(3_000)
    # Then the page asked the server for nothing (updates come only through the open event stream)
    polled = [url for url in requests if not url.endswith("/events")]
    assert polled == [], f"the idle live page polls: {polled}"


def test_the_keyboard_reaches_the_trigger_button_and_enter_triggers(line: Line, ui: Ui) -> None:
    # Given the live page, nothing focused
    page = ui.open(line.interface)
    wait_for_stream(page)
    # When the operator presses Tab until the trigger button has the focus
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement?.dataset?.testid") == "trigger-button":
            break
    else:
        pytest.fail("40 presses of Tab never reached the trigger button")
    # Then the focus is visible
    focus = page.get_by_test_id("trigger-button").evaluate(
        "el => { const s = getComputedStyle(el); return {outline: s.outlineStyle + ' ' + s.outlineWidth,"
        " shadow: s.boxShadow}; }"
    )
    assert focus["outline"].split()[0] != "none" or focus["shadow"] != "none", f"no focus style: {focus}"
    # And Enter triggers an inspection whose decision appears
    item_id = trigger_from_page(page, keyboard=True)
    wait_shown(page, item_id)
    shown = assert_live_panel_shows(page, line, item_id)
    assert_decision_colour(page, shown["decision"])


def test_the_live_page_fits_a_tablet(line: Line, ui: Ui) -> None:
    # Given a line with decided items
    line.trigger("e2e-tablet")
    # When the page is opened on a portrait tablet
    page = ui.open(line.interface, viewport=TABLET)
    page.wait_for_load_state("load")
    # Then nothing needs sideways scrolling, the decision and the trigger are on the first screen
    overflow = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert overflow[0] <= overflow[1], f"the page is {overflow[0]} px wide on a {overflow[1]} px tablet"
    expect(page.get_by_test_id("live-decision")).to_be_in_viewport()
    expect(page.get_by_test_id("live-decision")).to_have_text(DECISIONS_RE)
    expect(page.get_by_test_id("trigger-button")).to_be_visible()
    for cid in camera_ids(line):
        wait_image_loaded(page, f"live-image-{cid}")
    assert_readable(page)
    shot(page, "live-tablet")
