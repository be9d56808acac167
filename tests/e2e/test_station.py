"""The station page in a real browser: readable configuration, switching with confirmation, uploads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Page, expect

from tests.conftest import AUTH, duck_station
from tests.e2e.conftest import Line, Ui, assert_readable, run_line, shot

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# Three mistakes an engineer makes: a missing field, a negative count, a misspelt key.
INVALID_STATION = """\
id: duck-line-broken
cameras:
  - id: top
    source: {type: replay, path: /nowhere}
    model: {name: duck-detector}
    rules:
      - {type: label_count, max: -1}
item_rule: {type: all_ok}
surprise: 1
"""


@pytest.fixture(scope="module")
def line(model_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    """The duck line active, a second duck station installed beside it."""
    with run_line(tmp_path_factory.mktemp("station"), model_server, duck_station("duck-line-b")) as running:
        yield running


def station_rows(page: Page) -> dict[str, str]:
    return dict(
        page.get_by_test_id("station-row").evaluate_all(
            "rows => rows.map(r => [r.getAttribute('data-station-id'), r.getAttribute('data-active')])"
        )
    )


def upload(page: Page, station_id: str, source: str) -> None:
    form = page.get_by_test_id("station-upload")
    form.locator("input[name=station_id]").fill(station_id)
    form.locator("textarea[name=source]").fill(source)
    page.get_by_test_id("station-upload-submit").click()
    page.wait_for_load_state("load")


def test_the_active_station_configuration_is_readable(line: Line, ui: Ui) -> None:
    # Given the duck line active
    schema: dict[str, Any] = line.api("/api/v1/stations/schema")
    # When the engineer opens the station page
    page = ui.open(line.interface, "/station")
    # Then both stations are listed, the duck line active
    assert station_rows(page) == {"duck-line": "true", "duck-line-b": "false"}
    # And the active configuration reads as text, with the schema's own descriptions
    config = page.get_by_test_id("station-config")
    expect(config).to_be_visible()
    for text in ("top", "side", "duck-detector", "duck-classifier"):
        expect(config).to_contain_text(text)
    camera_description = schema["$defs"]["CameraConfig"]["properties"]["capture_timeout_s"]["description"]
    expect(config).to_contain_text(camera_description)
    # And the descriptions' `names` read as code, never as raw backticks
    assert "`" not in config.inner_text(), "a schema description shows raw backticks"
    expect(config.locator("code", has_text=re.compile(r"^type$"))).not_to_have_count(0)
    # And short values stay whole (no "duck-" / "detector" split at the hyphen)
    for value in ("duck-detector", "duck-classifier", "duck-line"):
        lines = config.get_by_text(value, exact=True).first.evaluate("el => el.getClientRects().length")
        assert lines == 1, f"{value!r} wraps over {lines} lines"
    assert_readable(page)
    shot(page, "station")


def test_switching_station_asks_for_confirmation_then_new_items_carry_it(line: Line, ui: Ui) -> None:
    # Given the duck line active and a second station installed
    page = ui.open(line.interface, "/station")
    # When the engineer asks to activate the second station
    page.get_by_test_id("station-activate-duck-line-b").click()
    # Then a confirmation is asked, and nothing has switched yet
    confirm = page.get_by_test_id("station-confirm")
    expect(confirm).to_be_visible()
    assert line.api("/api/v1/stations/active")["station_id"] == "duck-line"
    # And it names both stations by id as well as by name (the two have the same name here)
    names = {s["id"]: s["name"] for s in line.api("/api/v1/stations")}
    assert names["duck-line"] == names["duck-line-b"], names
    body = page.locator("body").inner_text()
    assert re.search(rf"Runs now\s+duck-line\s+{re.escape(names['duck-line'])}", body), body
    assert re.search(rf"After the switch\s+duck-line-b\s+{re.escape(names['duck-line-b'])}", body), body
    assert_readable(page)
    shot(page, "station-confirm")
    # When the engineer confirms
    confirm.click()
    page.wait_for_url(re.compile(r"/station(\?.*)?$"))
    # Then the second station is the active row, and the orchestrator runs it
    assert station_rows(page) == {"duck-line": "false", "duck-line-b": "true"}
    assert line.api("/api/v1/stations/active")["station_id"] == "duck-line-b"
    expect(page.get_by_test_id("station-activate-duck-line")).to_be_visible()
    # And new items carry the new station id
    item = line.trigger("after-switch")
    assert item["station_id"] == "duck-line-b", item
    assert_readable(page)
    shot(page, "station-switched")


def test_an_invalid_upload_shows_each_error_in_place_then_a_valid_one_installs(line: Line, ui: Ui) -> None:
    # Given the orchestrator's own verdict on a broken station file (it installs nothing)
    refused = httpx.put(
        f"{line.orchestrator}/api/v1/stations/duck-line-broken",
        content=INVALID_STATION,
        headers={**AUTH, "content-type": "application/yaml"},
        timeout=10,
    )
    assert refused.status_code == 422, refused.text
    errors = refused.json()["errors"]
    page = ui.open(line.interface, "/station")
    ui.allow_document_status(422)  # the contract's answer to an invalid upload: the page, with the errors
    # When the engineer uploads it
    upload(page, "duck-line-broken", INVALID_STATION)
    # Then every error is listed in place, with its location and its message, the form still there
    items = page.get_by_test_id("station-errors").get_by_test_id("station-error")
    expect(items).to_have_count(len(errors))
    texts = items.all_inner_texts()
    for error in errors:
        assert any(error["location"] in t and error["message"] in t for t in texts), (
            f"no station-error shows {error['location']!r} with {error['message']!r}: {texts}"
        )
    expect(page.get_by_test_id("station-upload")).to_be_visible()
    assert "duck-line-broken" not in station_rows(page)
    assert_readable(page)
    shot(page, "station-upload-errors")
    # When the engineer uploads a valid station instead
    valid = yaml.safe_dump(duck_station("duck-line-c"), sort_keys=False)
    upload(page, "duck-line-c", valid)
    page.wait_for_url(re.compile(r"/station(\?.*)?$"))
    # Then it is installed, not active, and no error is shown
    expect(page.get_by_test_id("station-error")).to_have_count(0)
    assert station_rows(page).get("duck-line-c") == "false"
    assert "duck-line-c" in {s["id"] for s in line.api("/api/v1/stations")}
    assert_readable(page)
