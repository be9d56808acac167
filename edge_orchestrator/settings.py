"""Where the orchestrator finds things and how much it may hold (env vars prefixed EDGE_ORCHESTRATOR_)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import AliasChoices, AnyHttpUrl, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrchestratorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGE_ORCHESTRATOR_", frozen=True)

    host: str = Field(default="127.0.0.1", description="Interface to bind; 0.0.0.0 inside a container.")
    port: int = Field(default=8000, ge=1, le=65535)
    data_dir: Path = Field(default=Path("data"), description="Results database, images, active station, key.")
    stations_dir: Path = Field(
        default=Path("deployment/stations"),
        description="Installed station files (<id>.yaml); relative paths inside them resolve from here.",
    )
    default_station: str | None = Field(
        default=None, description="Station activated when none was active before (first start)."
    )
    model_server_url: str = Field(
        default="http://127.0.0.1:8501", description="Base URL of edge_model_serving."
    )
    model_connect_timeout_s: float = Field(
        default=1.0, gt=0, description="Connect timeout to the model server."
    )
    max_in_flight: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="Inspections accepted but not yet decided beyond which triggers are refused (429).",
    )
    max_wait_s: float = Field(default=30.0, gt=0, description="Upper bound of a trigger's ?wait=.")
    open_reads: bool = Field(
        default=False,
        description="Serve GET routes without the API key (on a closed line network); writes always need it.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("EDGE_API_KEY", "api_key"),
        description="The API key; else read from api_key_file; else generated in data_dir (mode 0600).",
    )
    api_key_file: Path | None = Field(
        default=None, validation_alias=AliasChoices("EDGE_API_KEY_FILE", "api_key_file")
    )
    retention_interval_s: float = Field(
        default=30.0, ge=0, description="How often retention runs; 0 disables."
    )
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, description="How long a stop waits for inspections in flight before leaving them."
    )
    idempotency_window_s: float = Field(
        default=86400.0,
        ge=0,
        description="How long a trigger's Idempotency-Key (or part id) returns the same item when repeated.",
    )
    device_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=64,
        description="This device's name in MQTT topics, client ids and published results (default: host name).",
    )
    integrations_file: Path | None = Field(
        default=None,
        description="How the device is wired into the line: PLC handshakes, MQTT, webhooks, recipes (YAML).",
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")
    outbox_quota_mb: float = Field(
        default=512,
        gt=0,
        description="The outbox (results waiting for MQTT, webhooks, the hub) may hold this many MiB; over it "
        "the oldest OK results go first, then the oldest others. Checked with retention.",
    )
    hub_url: AnyHttpUrl | None = Field(
        default=None, description="The fleet hub (e.g. http://hub:8100); empty: no heartbeats, no uploads."
    )
    hub_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("EDGE_ORCHESTRATOR_HUB_TOKEN", "EDGE_HUB_TOKEN", "hub_token"),
        description="This device's token on the hub (`python -m hub register`); else read from hub_token_file.",
    )
    hub_token_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "EDGE_ORCHESTRATOR_HUB_TOKEN_FILE", "EDGE_HUB_TOKEN_FILE", "hub_token_file"
        ),
    )
    hub_heartbeat_s: float = Field(
        default=30.0, gt=0, le=3600, description="How often the hub hears from us."
    )
    hub_ok_image_share: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Share of OK items whose images go to the hub (chosen from the item id, so always the same "
        "items); KO, NO_DECISION and overridden items always send theirs.",
    )
    hub_timeout_s: float = Field(default=10.0, gt=0, le=300, description="Per request to the hub.")

    @model_validator(mode="after")
    def _hub_needs_a_token(self) -> OrchestratorSettings:
        if self.hub_url is not None and self.hub_token is None and self.hub_token_file is None:
            raise ValueError(
                "hub_url is set but there is no hub token: set EDGE_HUB_TOKEN (or EDGE_ORCHESTRATOR_HUB_TOKEN) "
                "or EDGE_ORCHESTRATOR_HUB_TOKEN_FILE to the token `python -m hub register` gave this device"
            )
        return self
