"""Where the hub finds things (env vars prefixed HUB_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class HubSettings(BaseSettings):
    # HUB_KEEP_RESULTS_DAYS=none keeps results forever.
    model_config = SettingsConfigDict(env_prefix="HUB_", frozen=True, env_parse_none_str="none")

    host: str = Field(default="127.0.0.1", description="Interface to bind; 0.0.0.0 inside a container.")
    port: int = Field(default=8100, ge=1, le=65535)
    data_dir: Path = Field(
        default=Path("data/hub"), description="SQLite database, images, roll-out runs, key."
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://hub@db/hub; default: SQLite in data_dir/hub.db.",
    )
    admin_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("HUB_ADMIN_KEY", "admin_key"),
        description="Key for the fleet's operators (register devices, export, roll out); else admin_key_file; "
        "else generated in data_dir (mode 0600).",
    )
    admin_key_file: Path | None = Field(default=None)
    open_reads: bool = Field(
        default=False, description="Serve the dashboard and GET routes without logging in (closed network)."
    )
    stale_after_beats: float = Field(
        default=2.5, gt=1, description="A device is stale once this many heartbeat intervals passed silently."
    )
    offline_after_s: float = Field(
        default=600.0, gt=0, description="A device is offline once silent this long (and stale before that)."
    )
    keep_heartbeats_days: int = Field(default=30, ge=1, description="Heartbeat history kept for the trends.")
    keep_results_days: int | None = Field(
        default=365,
        ge=1,
        description="Delete results (and their images) decided more than this many days ago; none keeps them "
        "forever.",
    )
    images_quota_gb: float = Field(
        default=50.0,
        gt=0,
        description="Images may use at most this many GiB (the sum of their sizes): over it the oldest go, those "
        "of OK items first.",
    )
    min_free_gb: float = Field(
        default=2.0,
        ge=0,
        description="Keep at least this many GiB free on the images' file system, deleting the oldest images.",
    )
    retention_interval_s: float = Field(
        default=300.0, ge=0, description="Seconds between retention passes; 0 turns retention off."
    )
    ansible_dir: Path = Field(default=Path("hub/ansible"), description="The playbooks roll-outs run.")
    inventory: Path | None = Field(
        default=None, description="The fleet's Ansible inventory (roll-outs need it)."
    )
    vault_password_file: Path | None = Field(
        default=None, description="Ansible Vault password for the inventory."
    )
    ansible_extra_env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment for ansible-playbook (JSON), e.g. ANSIBLE_* settings.",
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'hub.db').resolve()}"
