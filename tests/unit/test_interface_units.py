"""edge_interface without a browser: charts, error sentences, the orchestrator client's errors, config cards."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from edge_interface import charts, live
from edge_interface.charts import Bar, Series
from edge_interface.client import ApiKeySource, OrchestratorClient, Readiness
from edge_interface.deps import Runtime
from edge_interface.errors import (
    DOWN_SENTENCE,
    SENTENCES,
    SLOW_SENTENCE,
    OrchestratorDown,
    OrchestratorError,
    action_sentence,
    page_sentences,
    sentence_for,
    unavailable,
)
from edge_interface.health import MODEL_SERVER_UNKNOWN, Health, HealthMonitor, health_down, health_from
from edge_interface.metrics import InterfaceMetrics
from edge_interface.rendering import Renderer, config_value, inline_code
from edge_interface.settings import InterfaceSettings
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


@pytest.mark.parametrize("top", [0, 1, 2, 3, 7, 9, 12, 22, 37, 101, 0.3])
def test_count_axes_have_whole_ticks_only(top: float) -> None:
    ticks = charts.nice_ticks(top, integer=True)

    assert all(float(t).is_integer() for t in ticks), ticks
    assert ticks[0] == 0 and ticks[-1] >= top and len(ticks) >= 2


def test_the_parts_per_decision_axis_reads_in_whole_parts() -> None:
    svg = str(charts.bar_chart([Bar("OK", 9), Bar("KO", 3)], title="Parts", integer=True))

    axis = re.findall(r'text-anchor="end" font-size="13" fill="#475569" font-weight="normal">([^<]+)<', svg)
    assert axis and all(label.isdigit() for label in axis), axis


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


def test_a_down_orchestrator_is_said_once_by_the_banner_and_the_page_says_what_is_unavailable() -> None:
    # The banner says the orchestrator is down: no error box repeats it, the page's body says what it lacks.
    assert page_sentences(OrchestratorDown()) == []
    assert page_sentences(OrchestratorDown(SLOW_SENTENCE)) == []
    assert unavailable(OrchestratorDown()) and unavailable(OrchestratorDown(SLOW_SENTENCE))
    # An orchestrator that answers with an error is not "unavailable": its sentence goes in the error box.
    assert page_sentences(OrchestratorError(404, "item_not_found")) == [SENTENCES["item_not_found"]]
    assert not unavailable(OrchestratorError(404, "item_not_found"))
    assert page_sentences(None) == [] and not unavailable(None)


def test_a_failed_action_says_what_did_not_happen_without_repeating_the_banner() -> None:
    down = action_sentence("The part was not inspected", OrchestratorDown())
    slow = action_sentence("The part was not inspected", OrchestratorDown(SLOW_SENTENCE))
    refused = action_sentence("Station x was not activated", OrchestratorError(409, "station_active"))

    assert down == "The part was not inspected: the orchestrator is not answering."
    assert DOWN_SENTENCE not in down and SLOW_SENTENCE not in slow and "too long" in slow
    assert refused == f"Station x was not activated. {SENTENCES['station_active']}"


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
async def test_the_log_names_the_orchestrator_url_with_its_slash(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = _client(refuse)

    with caplog.at_level(logging.DEBUG, logger="edge_interface.client"):
        with pytest.raises(OrchestratorDown):
            await client.system()
        with pytest.raises(OrchestratorDown):
            async with client.events(None):
                pass

    messages = [r.getMessage() for r in caplog.records]
    assert "orchestrator http://orchestrator.test/api/v1/system: ConnectError" in messages
    assert "orchestrator http://orchestrator.test/api/v1/events: ConnectError" in messages
    # The relay logs the stream's loss itself (once), so each failed attempt is only a debug line.
    assert [r.levelno for r in caplog.records if "events" in r.getMessage()] == [logging.DEBUG]


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


def test_the_health_level_and_the_model_server_badge_agree_with_the_sentences() -> None:
    ok = health_from(Readiness(ready=True, station="s", model_server="ready"))
    unreachable = health_from(Readiness(ready=False, station="s", model_server="model server unreachable"))
    not_ready = health_from(Readiness(ready=False, station="s", model_server="loading"))
    down = health_down(DOWN_SENTENCE)

    assert (ok.level, ok.model_server_state) == ("ok", "ready")
    assert (unreachable.level, unreachable.model_server_state) == ("degraded", "not answering")
    assert "not answering" in unreachable.model_server
    assert (not_ready.level, not_ready.model_server_state) == ("degraded", "not ready")
    assert "not ready" in not_ready.model_server
    # While the orchestrator is down nothing is known of the model server: the badge must not say "not ready".
    assert (down.level, down.model_server, down.model_server_state) == (
        "down",
        MODEL_SERVER_UNKNOWN,
        "unknown",
    )


# --- the station's configuration as cards ------------------------------------------------------------


def test_backticks_in_descriptions_become_code_after_escaping() -> None:
    html = str(inline_code("Where frames come from; `type` selects <b>the</b> kind, `a<b>` too."))

    assert html == (
        "Where frames come from; <code>type</code> selects &lt;b&gt;the&lt;/b&gt; kind,"
        " <code>a&lt;b&gt;</code> too."
    )
    assert str(inline_code("no code here")) == "no code here"
    assert str(inline_code("`unclosed")) == "`unclosed"


def test_config_values_never_wrap_short_words_and_break_long_ones_after_separators() -> None:
    assert str(config_value("duck-detector")) == '<span class="nobr">duck-detector</span>'
    path = str(config_value("/work/main/demo/duck-line/top"))
    assert path.count("<wbr>") == 5 and '<span class="nobr">duck-line/</span>' in path
    assert re.sub(r"<[^>]+>", "", path) == "/work/main/demo/duck-line/top"  # the text itself is unchanged
    assert str(config_value("<script>")) == '<span class="nobr">&lt;script&gt;</span>'


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


# --- the event relay -----------------------------------------------------------------------------------


class _Browser:
    """Stands for the browser's side of the request: never disconnects by itself."""

    async def is_disconnected(self) -> bool:
        return False


def _sse(*events: tuple[int, str]) -> bytes:
    return b"".join(
        f'id: {n}\nevent: {kind}\ndata: {{"id": {n}}}\n\n: ping\n\n'.encode() for n, kind in events
    )


def _relay_runtime(handler: Handler) -> Runtime:
    settings = InterfaceSettings(health_interval_s=0.2)
    metrics = InterfaceMetrics()
    client = OrchestratorClient(
        "http://orchestrator.test",
        ApiKeySource("k" * 20, None),
        metrics,
        transport=httpx.MockTransport(handler),
    )
    health = HealthMonitor(client, max_age_s=0.05)
    return Runtime(settings, client, health, metrics, Renderer(settings), asyncio.Event())


async def _read(stream: AsyncIterator[bytes], until: Callable[[list[str]], bool]) -> list[str]:
    """SSE blocks from the relay (events, health) until `until` is satisfied; fails after 5 s."""
    blocks: list[str] = []
    async with asyncio.timeout(5):
        async for chunk in stream:
            blocks.append(chunk.decode())
            if until(blocks):
                return blocks
    return blocks


def _healths(blocks: list[str]) -> list[Health]:
    return [
        Health.model_validate_json(b.split("data: ", 1)[1])
        for b in blocks
        if b.startswith("event: interface.health")
    ]


@pytest.mark.anyio
async def test_the_relay_survives_the_orchestrator_going_away_and_resumes_after_the_last_event(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(live, "BACKOFF_FIRST_S", 0.05)
    monkeypatch.setattr(live, "RESUME_S", 0.05)
    up = True
    resumed_after: list[str | None] = []
    refused = 0

    def orchestrator(request: httpx.Request) -> httpx.Response:
        nonlocal refused
        if not up:
            refused += request.url.path == "/api/v1/events"
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/health/ready":
            return httpx.Response(200, json={"ready": True, "station": "s", "model_server": "ready"})
        resumed_after.append(request.headers.get("last-event-id"))
        if len(resumed_after) == 1:
            return httpx.Response(200, content=_sse((5, "item.decided"), (6, "item.verdict")))
        return httpx.Response(200, content=_sse((7, "item.decided")))

    runtime = _relay_runtime(orchestrator)
    stream = live._Relay(runtime, "4").run(_Browser(), runtime.stopping)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="edge_interface"):
        # Given a browser that received events 5 and 6 through the relay
        blocks = await _read(stream, lambda b: any("id: 6" in x for x in b))
        assert blocks[0] == "retry: 2000\n\n"
        assert [x for x in blocks if x.startswith("id:")] == [
            'id: 5\nevent: item.decided\ndata: {"id": 5}\n\n',
            'id: 6\nevent: item.verdict\ndata: {"id": 6}\n\n',
        ]  # whole events, without the orchestrator's pings
        # When the orchestrator goes away (its stream ended, the next attempts are refused)
        up = False
        blocks = await _read(stream, lambda b: refused >= 3 and any(not h.ok for h in _healths(b)))
        # Then the stream stays open and tells the browser, in a health event, that it is down
        down = next(h for h in _healths(blocks) if not h.ok)
        assert down.orchestrator == DOWN_SENTENCE and down.problems == [DOWN_SENTENCE]
        # When it answers again
        up = True
        blocks = await _read(stream, lambda b: any("id: 7" in x for x in b))
        blocks = await _read(stream, lambda b: bool(_healths(b)))
    # Then the relay reconnected on its own, resuming after the last event it relayed, and the line is well
    # (this mock ends every stream at once, so the relay keeps resuming: always after the last relayed event)
    assert resumed_after[:2] == ["4", "6"] and set(resumed_after[2:]) <= {"7"}
    assert _healths(blocks)[-1].ok
    # And the log says it once when lost, once when back: not once per refused attempt
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    back = [r for r in caplog.records if "is back" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING
    assert "http://orchestrator.test/api/v1/events lost (ConnectError)" in lost[0].getMessage()
    assert len(back) == 1 and "resuming after event 6" in back[0].getMessage()
    # When the server stops, the stream ends cleanly (no exception, no cancellation)
    runtime.stopping.set()
    assert await _read(stream, lambda b: False) == []
    await runtime.client.close()


@pytest.mark.anyio
async def test_a_refused_stream_is_in_the_health_events_even_when_the_orchestrator_answers() -> None:
    def orchestrator(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health/ready":
            return httpx.Response(200, json={"ready": True, "station": "s", "model_server": "ready"})
        return httpx.Response(401, json={"detail": "bad key", "code": "unauthorized"})

    runtime = _relay_runtime(orchestrator)
    stream = live._Relay(runtime, None).run(_Browser(), runtime.stopping)  # type: ignore[arg-type]

    blocks = await _read(stream, lambda b: any(h.problems for h in _healths(b)))

    health = next(h for h in _healths(blocks) if h.problems)
    assert health.orchestrator == "ok"
    assert health.problems == [f"Live updates are not available: {SENTENCES['unauthorized']}"]
    runtime.stopping.set()
    assert await _read(stream, lambda b: False) == []
    await runtime.client.close()


def test_the_relay_backs_off_then_stays_at_its_ceiling() -> None:
    waits = [live.backoff_s(n) for n in range(1, 9)]

    assert waits[0] == live.BACKOFF_FIRST_S
    assert waits == sorted(waits) and waits[-1] == live.BACKOFF_MAX_S
