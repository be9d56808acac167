"""Where the interface finds the orchestrator and how it presents the line (env vars prefixed EDGE_INTERFACE_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class InterfaceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGE_INTERFACE_", frozen=True)

    host: str = Field(default="127.0.0.1", description="Interface to bind; 0.0.0.0 inside a container.")
    port: int = Field(default=8080, ge=1, le=65535)
    orchestrator_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Base URL of edge_orchestrator (the only service we call).",
    )
    strip_size: int = Field(default=12, ge=1, le=100, description="Items in the live page's strip.")
    history_page_size: int = Field(default=25, ge=1, le=500, description="Rows per history page.")
    request_timeout_s: float = Field(
        default=3.0, gt=0, le=60, description="Longest wait for one answer of the orchestrator."
    )
    health_interval_s: float = Field(
        default=2.0, gt=0, le=60, description="How often the live page is told the health of the line."
    )
    title: str = Field(
        default="Duck line", max_length=100, description="The line's name, shown in every page."
    )
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("EDGE_API_KEY", "api_key"),
        description="The orchestrator's API key (the same variable the orchestrator reads); else api_key_file.",
    )
    api_key_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("EDGE_API_KEY_FILE", "api_key_file"),
        description="File holding the orchestrator's API key (e.g. the one it generated in its data directory).",
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")
