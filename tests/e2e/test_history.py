"""History, the item page and operator verdicts in a real browser, checked against the orchestrator's API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import Line, Ui, assert_readable, run_line, shot

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SEEDED = 60  # more than one page of history (the orchestrator's own default page is 50)


@pytest.fixture(scope="module")
def line(model_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    """A duck line with SEEDED decided items, each with its own part id."""
    with run_line(tmp_path_factory.mktemp("history"), model_server) as running:
        for n in range(SEEDED):
            running.trigger(f"duck-{n:04d}")
        yield running


def rows(page: Page) -> list[dict[str, str]]:
    return list(
        page.get_by_test_id("history-row").evaluate_all(
            """rows => rows.map(r => ({
                id: r.getAttribute('data-item-id'),
                decision: r.getAttribute('data-decision'),
                overridden: r.getAttribute('data-overridden'),
            }))"""
        )
    )


def choose_decision(form: Any, decision: str) -> None:
    """The verdict form offers the decision as a select or as radio buttons (the contract allows both)."""
    select = form.locator("select[name=decision]")
    if select.count():
        select.select_option(decision)
    else:
        form.locator(f"input[type=radio][name=decision][value={decision}]").check()


def test_history_filters_by_decision_and_by_part_id(line: Line, ui: Ui) -> None:
    # Given a line with many decided items, some of them KO
    ko = [item["item_id"] for item in line.items(decision="KO")]
    assert ko, "the duck line produced no KO item to filter on"
    page = ui.open(line.interface, "/history")
    # (each row's time and part line up with its decision chip)
    offsets = page.get_by_test_id("history-row").first.evaluate(
        """row => {
            const middle = (r) => (r.top + r.bottom) / 2;
            const text = document.createRange();
            text.selectNodeContents(row.cells[1]);
            const chip = middle(row.cells[2].firstElementChild.getBoundingClientRect());
            return [middle(row.cells[0].querySelector('a').getBoundingClientRect()) - chip,
                    middle(text.getBoundingClientRect()) - chip];
        }"""
    )
    assert all(abs(o) <= 3 for o in offsets), f"time and part are {offsets} px off the chip's middle"
    shot(page, "history")
    # When the operator filters on KO
    filters = page.get_by_test_id("history-filters")
    filters.locator("select[name=decision]").select_option("KO")
    page.get_by_test_id("history-apply").click()
    page.wait_for_url(re.compile(r"decision=KO"))
    # Then only the KO items are listed, newest first
    listed = rows(page)
    assert {r["decision"] for r in listed} == {"KO"}, listed
    assert [r["id"] for r in listed] == ko[: len(listed)], "the KO rows are not the orchestrator's KO items"
    assert_readable(page)
    shot(page, "history-ko")

    # When the operator filters on one part id (the decision filter cleared)
    filters = page.get_by_test_id("history-filters")
    filters.locator("select[name=decision]").select_option("")
    filters.locator("input[name=part_id]").fill("duck-0042")
    page.get_by_test_id("history-apply").click()
    page.wait_for_url(re.compile(r"part_id=duck-0042"))
    # Then exactly that part's item is listed, and its row links to the item page
    expected = line.items(part_id="duck-0042")
    assert [r["id"] for r in rows(page)] == [item["item_id"] for item in expected]
    row = page.get_by_test_id("history-row").first
    expect(row.locator(f"a[href='/items/{expected[0]['item_id']}']")).to_have_count(1)


def test_history_says_when_nothing_matches(line: Line, ui: Ui) -> None:
    # Given a line whose items are all from today
    # When the operator asks for a time range long before
    page = ui.open(line.interface, "/history")
    filters = page.get_by_test_id("history-filters")
    filters.locator("input[name=since]").fill("2001-01-01T00:00")
    filters.locator("input[name=until]").fill("2001-01-02T00:00")
    page.get_by_test_id("history-apply").click()
    page.wait_for_url(re.compile(r"until="))
    # Then the page says nothing matches, in words
    expect(page.get_by_test_id("history-empty")).to_be_visible()
    expect(page.get_by_test_id("history-row")).to_have_count(0)
    assert_readable(page)


def test_history_pages_through_every_item_once(line: Line, ui: Ui) -> None:
    # Given more items than one page holds
    every = [item["item_id"] for item in line.items()]
    page = ui.open(line.interface, "/history")
    seen: list[str] = []
    pages = 0
    # When the operator follows "next" until there is none
    while True:
        pages += 1
        seen.extend(r["id"] for r in rows(page))
        following = page.get_by_test_id("history-next")
        if following.count() == 0 or pages > 20:
            break
        following.click()
        page.wait_for_url(re.compile(r"cursor="))
    # Then every item was listed exactly once, newest first, over more than one page
    assert pages >= 2, f"{len(every)} items fit on one page: no paging to test"
    assert seen == every, "paging lost, repeated or reordered items"
    assert_readable(page)


def test_the_item_page_shows_images_timings_models_and_rule_outcomes(line: Line, ui: Ui) -> None:
    # Given a decided item picked from history
    page = ui.open(line.interface, "/history")
    first = page.get_by_test_id("history-row").first
    item_id = first.get_attribute("data-item-id")
    item: dict[str, Any] = line.api(f"/api/v1/inspections/{item_id}")
    # When the operator opens it
    first.locator(f"a[href='/items/{item_id}']").first.click()
    page.wait_for_url(f"**/items/{item_id}")
    # Then its decision, part id, every camera's picture, prediction and rules, timings and models are shown
    expect(page.get_by_test_id("item-decision")).to_have_text(item["decision"])
    expect(page.get_by_test_id("item-part-id")).to_contain_text(item["part_id"])
    for camera in item["cameras"]:
        cid = camera["camera_id"]
        panel = page.get_by_test_id(f"item-camera-{cid}")
        expect(panel).to_be_visible()
        panel.locator("img").first.evaluate(
            "img => img.complete && img.naturalWidth > 0 ? true :"
            " new Promise((ok, ko) => { img.onload = () => ok(true); img.onerror = () => ko('image failed'); })"
        )
        assert panel.locator("img").first.evaluate("img => img.naturalWidth") > 0
        for rule in camera["rules"]:
            expect(panel).to_contain_text(rule["rule"])
    timings = page.get_by_test_id("item-timings")
    expect(timings).to_be_visible()
    expect(timings).to_contain_text(re.compile(r"\d"))
    models = page.get_by_test_id("item-models")
    for camera in item["cameras"]:
        expect(models).to_contain_text(camera["model_name"])
        expect(models).to_contain_text(str(camera["model_version"]))
    assert_readable(page)
    shot(page, "item")


def test_an_operator_overrides_a_verdict_and_it_is_marked_everywhere(line: Line, ui: Ui) -> None:
    # Given a KO item the machine rejected
    ko = line.items(decision="KO", overridden="false")[0]
    page = ui.open(line.interface, f"/items/{ko['item_id']}")
    expect(page.get_by_test_id("overridden-badge")).to_have_count(0)
    # When the operator overrides it to OK with a reason
    form = page.get_by_test_id("verdict-form")
    choose_decision(form, "OK")
    form.locator("textarea[name=reason]").fill("beak intact, glare on the lens")
    form.locator("input[name=operator]").fill("amelie")
    page.get_by_test_id("verdict-submit").click()
    page.wait_for_url(f"**/items/{ko['item_id']}")
    # Then the item page shows the operator's verdict and reason, and the override badge
    verdict = page.get_by_test_id("item-verdict")
    expect(verdict).to_contain_text("OK")
    expect(verdict).to_contain_text("beak intact, glare on the lens")
    expect(page.get_by_test_id("overridden-badge")).to_be_visible()
    # And the big decision tile says whose word counts: the operator's, beside the machine's
    tile = page.get_by_test_id("item-decision").locator("xpath=..")
    expect(tile).to_contain_text(re.compile(r"Operator:\s*OK\s*(—\s*)?machine said KO"))
    expect(page.get_by_test_id("item-decision")).to_have_text("KO")
    stored = line.api(f"/api/v1/inspections/{ko['item_id']}")
    assert stored["verdict"]["decision"] == "OK", stored["verdict"]
    assert stored["decision"] == "KO", "the machine's decision must be kept beside the verdict"
    assert_readable(page)
    shot(page, "item-overridden")
    # And history marks the row as overridden
    page.goto("/history")
    row = page.locator(f"[data-testid=history-row][data-item-id='{ko['item_id']}']")
    expect(row).to_have_attribute("data-overridden", "true")
    others = [r for r in rows(page) if r["id"] != ko["item_id"]]
    assert all(r["overridden"] == "false" for r in others), "rows never overridden are marked overridden"


def test_an_operator_confirms_a_verdict_without_an_override_badge(line: Line, ui: Ui) -> None:
    # Given an OK item
    ok = line.items(decision="OK", overridden="false")[0]
    page = ui.open(line.interface, f"/items/{ok['item_id']}")
    # When the operator confirms it
    form = page.get_by_test_id("verdict-form")
    choose_decision(form, "OK")
    form.locator("textarea[name=reason]").fill("checked by hand")
    form.locator("input[name=operator]").fill("bruno")
    page.get_by_test_id("verdict-submit").click()
    page.wait_for_url(f"**/items/{ok['item_id']}")
    # Then the verdict is shown, and it is not an override
    expect(page.get_by_test_id("item-verdict")).to_contain_text("checked by hand")
    expect(page.get_by_test_id("overridden-badge")).to_have_count(0)
    assert_readable(page)
