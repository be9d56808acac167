"""Station files: the demo validates, every error has a location, the CLI prints them, the repository persists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_orchestrator.errors import StationError, StationNotFoundError
from edge_orchestrator.station import StationRepository, load_station, parse_station, redact_source
from tests.conftest import REPO

DEMO = REPO / "deployment" / "stations" / "duck-line.yaml"

MINIMAL = """
id: line-2
name: Line 2
cameras:
  - id: top
    source: {type: replay, path: frames}
    model: {name: duck-detector}
    rules: [{type: label_count, max: 0}]
"""


def test_the_demo_station_validates_and_uses_the_bundled_models() -> None:
    station = load_station(DEMO)
    assert [c.id for c in station.cameras] == ["top", "side"]
    for camera in station.cameras:
        assert (REPO / "models" / camera.model.name).is_dir()
        assert (DEMO.parent / camera.source.path).is_dir()  # type: ignore[union-attr]


def test_defaults_are_filled_and_the_revision_follows_the_content() -> None:
    station = parse_station(MINIMAL)
    assert station.item_rule.type == "all_ok"
    assert station.storage.save_images == "all"
    assert parse_station(MINIMAL).revision == station.revision
    assert parse_station(MINIMAL.replace("max: 0", "max: 1")).revision != station.revision


@pytest.mark.parametrize(
    ("text", "location"),
    [
        (MINIMAL.replace("name: Line 2", "name: Line 2\ncolour: red"), "colour"),
        (MINIMAL.replace("type: replay", "type: webcam"), "cameras.0.source"),
        (MINIMAL.replace("max: 0", "min: 3, max: 1"), "cameras.0.rules.0"),
        (MINIMAL.replace("rules: [{type: label_count, max: 0}]", "rules: []"), "cameras.0.rules"),
        (MINIMAL.replace("id: top", "id: Top Camera"), "cameras.0.id"),
        (
            MINIMAL.replace("{name: duck-detector}", "{name: duck-detector, version: 0}"),
            "cameras.0.model.version",
        ),
        (MINIMAL + "triggers: {periodic: {interval_ms: 5}}\n", "triggers.periodic.interval_ms"),
        (MINIMAL + "item_rule: {type: min_ok}\n", "item_rule.min_ok.count"),
    ],
    ids=[
        "unknown-field",
        "unknown-camera",
        "min-above-max",
        "no-rules",
        "bad-id",
        "version-0",
        "too-fast",
        "missing",
    ],
)
def test_each_error_names_its_location(text: str, location: str) -> None:
    with pytest.raises(StationError) as caught:
        parse_station(text)
    assert any(str(e["location"]).startswith(location) for e in caught.value.errors), caught.value.errors


def test_duplicate_camera_ids_and_bad_yaml_are_refused() -> None:
    doubled = MINIMAL + MINIMAL.split("cameras:\n")[1]  # the same camera listed twice
    with pytest.raises(StationError) as caught:
        parse_station(doubled)
    assert any("camera ids must be unique; repeated: top" in str(e["message"]) for e in caught.value.errors)
    with pytest.raises(StationError, match="not valid YAML at line"):
        parse_station("id: [unclosed\n")
    with pytest.raises(StationError, match="mapping"):
        parse_station("- just a list\n")


def test_check_config_prints_every_error_with_its_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        MINIMAL.replace("max: 0", "min: 3, max: 1").replace("name: Line 2", "name: Line 2\ncolour: red")
    )
    result = subprocess.run(
        [sys.executable, "-m", "edge_orchestrator", "--check-config", str(DEMO), str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"{DEMO}: OK" in result.stdout
    assert f"{bad}: INVALID" in result.stdout
    assert "  colour: Extra inputs are not permitted" in result.stdout
    assert "cameras.0.rules.0.label_count" in result.stdout


def test_the_repository_installs_lists_and_remembers_the_active_station(tmp_path: Path) -> None:
    repo = StationRepository(tmp_path / "stations", tmp_path / "data")
    repo.install("line-2", MINIMAL)
    (tmp_path / "stations" / "broken.yaml").write_text("id: broken\n")
    summaries = {s.id: s for s in repo.list(active="line-2")}
    assert summaries["line-2"].valid and summaries["line-2"].active
    assert not summaries["broken"].valid and summaries["broken"].errors
    with pytest.raises(StationError, match="installed as"):
        repo.install("line-3", MINIMAL)
    with pytest.raises(StationNotFoundError):
        repo.get("../../etc/passwd")
    assert repo.active_id() is None
    repo.set_active_id("line-2")
    assert StationRepository(tmp_path / "stations", tmp_path / "data").active_id() == "line-2"
    assert not list((tmp_path / "stations").glob("*.tmp"))


def test_secrets_never_leave_through_the_api_view() -> None:
    text = (
        MINIMAL.replace(
            "source: {type: replay, path: frames}",
            "source: {type: rtsp, url: 'rtsp://admin:hunter2@10.0.0.9/stream?token=abc'}",
        )
        + "# password: hunter2\n"
    )
    station = parse_station(text)
    shown = str(station.public())
    assert "hunter2" not in shown and "abc" not in shown and "10.0.0.9" in shown
    assert "hunter2" not in redact_source(text) and "10.0.0.9" in redact_source(text)
    snapshot = MINIMAL.replace(
        "source: {type: replay, path: frames}",
        "source:\n      type: http\n      url: http://cam/snap.jpg\n      username: op\n      password: hunter2",
    )
    assert "hunter2" not in str(parse_station(snapshot).public()) and "hunter2" not in redact_source(snapshot)


def test_a_yaml_error_says_where_and_what_without_parser_noise() -> None:
    with pytest.raises(StationError) as caught:
        parse_station(b"id: x\ncameras: [\n  - id: top\n")
    message = caught.value.detail
    assert "line" in message and "byte string" not in message
