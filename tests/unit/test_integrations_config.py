"""The integrations file: every mistake named with its location, secrets never written in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_orchestrator.__main__ import check_integrations
from edge_orchestrator.errors import IntegrationError
from edge_orchestrator.integrations.config import parse_integrations
from edge_orchestrator.integrations.secrets import SecretRef
from edge_orchestrator.integrations.service import channels

REPO = Path(__file__).resolve().parents[2]


def locations(text: str) -> list[str]:
    with pytest.raises(IntegrationError) as caught:
        parse_integrations(text)
    assert caught.value.code == "invalid_integrations"
    return [str(e["location"]) for e in caught.value.errors]


def test_the_shipped_files_are_valid() -> None:
    for path in (REPO / "deployment" / "integrations").glob("*.yaml"):
        config = parse_integrations(path.read_text(), str(path))
        assert config.opcua is not None and config.modbus is not None and config.mqtt is not None


def test_an_empty_file_enables_nothing() -> None:
    config = parse_integrations("")
    assert channels(config) == [] and config.opcua is None and config.recipes == {}


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("mqtt: {host: broker, colour: red}", "mqtt.colour"),
        ("recipes: {0: duck-line}", "recipes.0.[key]"),
        ("recipes: {1: Duck Line}", "recipes.1"),
        ("defect_codes: {stain: 2}", "defect_codes.stain"),
        ("modbus: {port: 70000}", "modbus.port"),
        ("webhooks: [{name: mes, url: not-a-url, secret: {env: S}}]", "webhooks.0.url"),
        ("webhooks: [{name: mes, url: 'http://x', secret: {env: S, file: s.txt}}]", "webhooks.0.secret"),
        ("mqtt: {host: broker, topic_prefix: 'edge/#'}", "mqtt.topic_prefix"),
    ],
)
def test_each_mistake_is_named_with_its_location(text: str, location: str) -> None:
    assert location in locations(text)


def test_duplicates_are_refused() -> None:
    hooks = "webhooks: [{name: mes, url: 'http://a', secret: {env: S}}, {name: mes, url: 'http://b', secret: {env: S}}]"
    with pytest.raises(IntegrationError, match="webhook names must be distinct: mes"):
        parse_integrations(hooks)
    with pytest.raises(IntegrationError, match="defect codes must be distinct: 10"):
        parse_integrations("defect_codes: {stain: 10, missing_eye: 10}")


def test_not_yaml_or_not_a_mapping() -> None:
    with pytest.raises(IntegrationError, match="not valid YAML at line 1"):
        parse_integrations("recipes: {1: [")
    with pytest.raises(IntegrationError, match="must be a mapping"):
        parse_integrations("- opcua")


def test_channels_follow_the_configuration() -> None:
    config = parse_integrations(
        "mqtt: {host: broker}\nwebhooks: [{name: mes, url: 'http://x', secret: {env: S}}]"
    )
    assert channels(config) == ["mqtt", "webhook:mes"]


def test_secrets_are_read_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_TEST_SECRET", "s3cret")
    assert SecretRef(env="EDGE_TEST_SECRET").read(tmp_path) == "s3cret"
    (tmp_path / "secret.txt").write_text("from-file\n")
    assert SecretRef(file=Path("secret.txt")).read(tmp_path) == "from-file"
    with pytest.raises(IntegrationError, match="EDGE_TEST_MISSING is not set"):
        SecretRef(env="EDGE_TEST_MISSING").read(tmp_path)
    with pytest.raises(IntegrationError, match="cannot be read"):
        SecretRef(file=Path("absent.txt")).read(tmp_path)


def test_the_check_command_reports_missing_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "integrations.yaml"
    path.write_text("webhooks: [{name: mes, url: 'http://x', secret: {file: absent.txt}}]")
    # Checking a file elsewhere notes the secret; starting with it refuses
    assert check_integrations(path) == 0
    assert check_integrations(path, secrets_required=True) == 1
    out = capsys.readouterr().out
    assert "OK: webhook mes" in out and "webhooks.0.secret: ERROR" in out
    path.write_text("opcua: {users: []}")
    assert check_integrations(path) == 1
    assert "INVALID" in capsys.readouterr().out
