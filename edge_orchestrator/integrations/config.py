"""The integrations file: how this device is wired into the line (PLC handshakes, MQTT, webhooks, recipes).

It belongs to the device, not to a station: a recipe change from the PLC switches stations under it.
Secrets are named (environment variable or file), never written in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_orchestrator import yamlfiles
from edge_orchestrator.errors import IntegrationError
from edge_orchestrator.integrations.modbus import ModbusSettings
from edge_orchestrator.integrations.mqtt import MqttSettings
from edge_orchestrator.integrations.opcua import OpcUaSettings
from edge_orchestrator.integrations.secrets import SecretRef
from edge_orchestrator.integrations.webhooks import WebhookSettings
from edge_orchestrator.station import ID_PATTERN

MAX_BYTES = 256 * 1024
RecipeIndex = Annotated[int, Field(ge=1, le=32767)]


class IntegrationsConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    recipes: dict[RecipeIndex, Annotated[str, Field(pattern=ID_PATTERN)]] = Field(
        default_factory=dict,
        description="RecipeIndex (PLC) or recipe number (MQTT) → installed station id. 0 means none.",
    )
    defect_codes: dict[Annotated[str, Field(min_length=1)], Annotated[int, Field(ge=10, le=32767)]] = Field(
        default_factory=dict,
        description=(
            "Model label → DefectCode shown to the PLC for a KO with that label; the first listed label found"
            " wins. 0 = OK, 1 = KO without a listed label, 2 = NO_DECISION are reserved."
        ),
    )
    heartbeat_s: float = Field(
        default=1.0, gt=0, le=60, description="How often Heartbeat counts up (the PLC's watchdog)."
    )
    opcua: OpcUaSettings | None = Field(default=None, description="The OPC UA server (PLC handshake).")
    modbus: ModbusSettings | None = Field(default=None, description="The Modbus TCP server (PLC handshake).")
    mqtt: MqttSettings | None = Field(
        default=None, description="The MQTT client (results, status, triggers)."
    )
    webhooks: list[WebhookSettings] = Field(
        default_factory=list, description="URLs each decision is POSTed to."
    )

    @model_validator(mode="after")
    def _distinct(self) -> IntegrationsConfig:
        names = [w.name for w in self.webhooks]
        if duplicated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"webhook names must be distinct: {', '.join(duplicated)}")
        codes = list(self.defect_codes.values())
        if duplicated_codes := sorted({c for c in codes if codes.count(c) > 1}):
            raise ValueError(f"defect codes must be distinct: {', '.join(map(str, duplicated_codes))}")
        return self


def parse_integrations(text: str | bytes, source: str = "integrations") -> IntegrationsConfig:
    return yamlfiles.parse(
        text,
        IntegrationsConfig,
        source,
        IntegrationError,
        max_bytes=MAX_BYTES,
        keys_hint="recipes:, opcua:, modbus:, mqtt:, webhooks:, ...",
    )


def load_integrations(path: Path) -> IntegrationsConfig:
    return parse_integrations(yamlfiles.read(path, IntegrationError), str(path))


def secrets(config: IntegrationsConfig) -> list[tuple[str, SecretRef]]:
    """Every secret the file names, with where (so a check can say which one is missing)."""
    found: list[tuple[str, SecretRef]] = []
    if config.mqtt is not None and config.mqtt.password is not None:
        found.append(("mqtt.password", config.mqtt.password))
    for index, webhook in enumerate(config.webhooks):
        found.append((f"webhooks.{index}.secret", webhook.secret))
    if config.opcua is not None:
        for index, user in enumerate(config.opcua.users):
            found.append((f"opcua.users.{index}.password", user.password))
    return found
