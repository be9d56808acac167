"""edge_interface without a browser: charts, error sentences, the orchestrator client's errors, config cards."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from edge_interface import charts
from edge_interface.charts import Bar, Series
from edge_interface.client import ApiKeySource, OrchestratorClient, Readiness
from edge_interface.errors import (
    DOWN_SENTENCE,
    PAGE_DOWN_SENTENCE,
    SENTENCES,
    OrchestratorDown,
    OrchestratorError,
    page_sentences,
    sentence_for,
)
from edge_interface.health import health_down, health_from
from edge_interface.metrics import InterfaceMetrics
from edge_interface.station_view import humanize, station_view


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- charts ------------------------------------------------------------------------------------


def test_a_bar_chart_is_an_accessible_image_that_states_its_figures() -> None:
    svg = str(
        charts.bar_chart([Bar("OK", 21), Bar("KO", 9)], title="Parts per decision", testid="kpi-counts")
    )

    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert 'role="img"' in svg
    assert 'data-testid="kpi-counts"' in svg
    assert 'aria-label="Parts per decision: OK 21, KO 9"' in svg
    assert "<title>Parts per decision: OK 21, KO 9</title>" in svg


def test_chart_labels_are_escaped() -> None:
    svg = str(charts.horizontal_bars([Bar("<script>alert(1)</script>", 3)], title='say "hi" & <b>'))

    assert "<script>" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in svg
    assert "&#34;hi&#34; &amp; &lt;b&gt;" in svg


def test_an_empty_chart_says_so_in_words() -> None:
    svg = str(
        charts.horizontal_bars([], title="Reject rate", testid="rejects", empty="No rejects in this window")
    )

    assert 'role="img"' in svg and 'data-testid="rejects"' in svg
    assert "No rejects in this window" in svg
    assert "<rect" not in svg


def test_stacked_bars_sum_each_category_and_skip_empty_segments() -> None:
    svg = str(
        charts.stacked_bars(
            ["08:00", "08:30"],
            [Series("OK", [3, 0], charts.OK_COLOR), Series("KO", [1, 0], charts.KO_COLOR)],
            title="Parts",
        )
    )

    assert 'aria-label="Parts: 08:00 4, 08:30 0"' in svg
    assert svg.count(f'fill="{charts.OK_COLOR}"><title>') == 1  # no zero-height rectangle for 08:30


def test_a_line_series_leaves_a_gap_where_there_is_no_data() -> None:
    svg = str(
        charts.line_chart(["a", "b", "c"], [Series("p50", [10.0, None, 12.0])], title="Latency", unit="ms")
    )

    path = re.search(r'<path d="([^"]+)"', svg)
    assert path is not None
    assert path.group(1).count("M") == 2  # the line starts again after the gap
    assert svg.count("<circle") == 2


def test_a_step_series_moves_horizontally_then_vertically() -> None:
    svg = str(charts.line_chart(["a", "b"], [Series("p50", [10.0, 20.0])], title="Latency", step=True))

    path = re.search(r'<path d="([^"]+)"', svg)
    assert path is not None and "H" in path.group(1) and "V" in path.group(1) and "L" not in path.group(1)


def test_the_donut_splits_the_ring_by_share() -> None:
    svg = str(
        charts.donut(
            [
                Bar("OK", 3, charts.OK_COLOR),
                Bar("KO", 1, charts.KO_COLOR),
                Bar("NO_DECISION", 0, charts.ND_COLOR),
            ],
            title="Yield",
            center="75.0 %",
        )
    )

    dashes = [float(a) for a, _ in re.findall(r'stroke-dasharray="([\d.]+) ([\d.]+)"', svg)]
    assert len(dashes) == 2  # nothing drawn for a zero share
    assert dashes[0] == pytest.approx(3 * dashes[1], abs=0.05)
    assert "75.0 %" in svg and 'aria-label="Yield: 75.0 % (OK 3, KO 1, NO_DECISION 0)"' in svg


def test_ticks_are_round_and_cover_the_top_value() -> None:
    assert charts.nice_ticks(9) == [0, 2.5, 5, 7.5, 10]
    assert charts.nice_ticks(22) == [0, 10, 20, 30]
    assert charts.nice_ticks(0) == [0, 1]
    assert charts.nice_ticks(0.3)[-1] >= 0.3


def test_figures_drop_needless_decimals() -> None:
    assert charts.fmt(21.0) == "21"
    assert charts.fmt(15.511) == "15.5"
    assert charts.fmt(0.0625) == "0.06"
    assert charts.fmt(1024, "MiB") == "1,024\u2009MiB"


# --- error sentences -----------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(SENTENCES))
def test_every_known_code_has_an_operator_sentence(code: str) -> None:
    sentence = sentence_for(code, 400)

    assert sentence[0].isupper() and sentence.endswith(".")
    assert code not in sentence and "{" not in sentence


def test_unknown_codes_get_a_generic_sentence_by_status() -> None:
    assert sentence_for("brand_new_code", 409) == "The orchestrator refused the request (error 409)."
    assert "could not complete" in sentence_for(None, 502)


def test_a_page_says_what_a_down_orchestrator_means_for_it() -> None:
    assert page_sentences(OrchestratorDown()) == [PAGE_DOWN_SENTENCE]
    assert page_sentences(OrchestratorError(404, "item_not_found")) == [SENTENCES["item_not_found"]]
    assert page_sentences(None) == []


# --- the orchestrator client: failures become our errors ----------------------------------------------


Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler, metrics: InterfaceMetrics | None = None) -> OrchestratorClient:
    return OrchestratorClient(
        "http://orchestrator.test",
        ApiKeySource("k" * 20, None),
        metrics or InterfaceMetrics(),
        transport=httpx.MockTransport(handler),
    )


def _error(status: int, body: dict[str, Any]) -> Handler:
    return lambda request: httpx.Response(status, json=body)


@pytest.mark.anyio
async def test_an_orchestrator_error_keeps_its_status_and_code_and_gets_the_sentence() -> None:
    client = _client(_error(404, {"detail": "no item 'x'", "code": "item_not_found"}))

    with pytest.raises(OrchestratorError) as raised:
        await client.inspection("6f1c3d0e-0000-4000-8000-000000000000")

    assert raised.value.status == 404
    assert raised.value.code == "item_not_found"
    assert raised.value.sentence == SENTENCES["item_not_found"]


@pytest.mark.anyio
async def test_station_validation_errors_come_back_with_their_locations() -> None:
    body = {
        "detail": "2 validation error(s)",
        "code": "invalid_station",
        "errors": [
            {"location": "cameras.0.rules.0.max", "message": "Input should be >= 0", "type": "x"},
            {"location": "", "message": "not valid YAML", "type": "yaml"},
        ],
    }
    client = _client(_error(422, body))

    with pytest.raises(OrchestratorError) as raised:
        await client.install_station("line-2", b"id: line-2")

    assert [(e.location, e.message) for e in raised.value.errors] == [
        ("cameras.0.rules.0.max", "Input should be >= 0"),
        ("file", "not valid YAML"),
    ]


@pytest.mark.anyio
async def test_a_non_json_error_still_gets_a_sentence() -> None:
    client = _client(lambda request: httpx.Response(502, text="<html>Bad gateway</html>"))

    with pytest.raises(OrchestratorError) as raised:
        await client.system()

    assert raised.value.status == 502 and "could not complete" in raised.value.sentence


@pytest.mark.anyio
async def test_an_unreachable_orchestrator_is_down_and_counted() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    metrics = InterfaceMetrics()
    client = _client(refuse, metrics)

    with pytest.raises(OrchestratorDown) as raised:
        await client.readiness()

    assert raised.value.sentence == DOWN_SENTENCE and raised.value.status == 503
    assert (
        metrics.registry.get_sample_value("edge_interface_orchestrator_errors_total", {"code": "unreachable"})
        == 1
    )


@pytest.mark.anyio
async def test_an_answer_that_does_not_parse_is_an_error_not_a_crash() -> None:
    client = _client(lambda request: httpx.Response(200, json={"unexpected": True}))

    with pytest.raises(OrchestratorError) as raised:
        await client.inspection("6f1c3d0e-0000-4000-8000-000000000000")

    assert raised.value.code == "bad_answer"


@pytest.mark.anyio
async def test_the_key_is_sent_to_the_orchestrator() -> None:
    seen: list[str | None] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(
            200, json={"ready": True, "station": "s", "model_server": "ready", "cameras": {}}
        )

    await _client(record).readiness()

    assert seen == ["Bearer " + "k" * 20]


# --- health ---------------------------------------------------------------------------------------


def test_health_names_every_problem_in_a_sentence() -> None:
    health = health_from(
        Readiness(
            ready=False,
            station="duck-line",
            model_server="model server unreachable",
            cameras={"top": "ok", "side": "no frame"},
        )
    )

    assert health.orchestrator == "ok" and health.cameras["top"] == "ok"
    assert health.model_server.startswith("The model server is not answering")
    assert health.cameras["side"].startswith("Camera side")
    assert health.problems == [health.model_server, health.cameras["side"]]


def test_health_without_a_station_or_orchestrator() -> None:
    assert (
        "No station is active"
        in health_from(Readiness(ready=False, station=None, model_server="ready")).problems[0]
    )
    down = health_down(DOWN_SENTENCE)
    assert down.problems == [DOWN_SENTENCE] and not down.ok


# --- the station's configuration as cards ------------------------------------------------------------


def test_field_names_read_as_labels_with_their_unit() -> None:
    assert humanize("capture_timeout_s") == ("Capture timeout", "s")
    assert humanize("quota_mb") == ("Quota", "MiB")
    assert humanize("fps") == ("FPS", "")
    assert humanize("min_score") == ("Min score", "")


SCHEMA: dict[str, Any] = {
    "$defs": {
        "Camera": {
            "properties": {
                "id": {"type": "string", "description": "Camera id."},
                "source": {
                    "description": "Where frames come from.",
                    "discriminator": {"mapping": {"rtsp": "#/$defs/Rtsp"}, "propertyName": "type"},
                    "oneOf": [{"$ref": "#/$defs/Rtsp"}],
                },
                "timeout_s": {"type": "number", "description": "Longest wait."},
            }
        },
        "Rtsp": {
            "description": "A network camera.",
            "properties": {
                "type": {"const": "rtsp"},
                "url": {"type": "string", "description": "Stream URL."},
                "password": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "Secret."},
            },
        },
    },
    "properties": {
        "id": {"type": "string", "description": "Station id."},
        "name": {"type": "string"},
        "cameras": {"items": {"$ref": "#/$defs/Camera"}, "type": "array", "description": "The cameras."},
    },
}


def test_a_station_renders_as_cards_described_by_its_schema() -> None:
    station = {
        "id": "line-2",
        "name": "Line 2",
        "cameras": [
            {
                "id": "top",
                "source": {
                    "type": "rtsp",
                    "url": "rtsp://admin:hunter2@10.0.0.5/stream",
                    "password": "hunter2",
                },
                "timeout_s": 2.0,
            }
        ],
    }

    view = station_view(station, SCHEMA)

    assert view.title == "Line 2"
    cameras = next(f for f in view.fields if f.label == "Cameras")
    camera = cameras.cards[0]
    assert camera.title == "Camera top"
    assert "ID" not in [f.label for f in camera.fields]  # already in the title
    source = next(f for f in camera.fields if f.label == "Source")
    assert source.help == "Where frames come from."
    assert source.card is not None and source.card.kind == "rtsp" and source.card.help == "A network camera."
    values = {f.label: f.value for f in source.card.fields}
    assert values["URL"] == "rtsp://admin:***@10.0.0.5/stream"
    assert values["Password"] == "hidden"
    assert next(f for f in camera.fields if f.label == "Timeout").value == "2\u2009s"
    assert "hunter2" not in json.dumps([str(f) for f in source.card.fields])
