"""Roll-outs' vocabulary: the request and response models of the API, their statuses, and the roll-out errors."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hub.errors import ConflictError, HubError, InvalidInputError

Playbook = Literal["deploy_edge", "update_models", "rollback", "facts"]
RolloutStatus = Literal["pending", "running", "successful", "failed", "canceled"]
HostStatus = Literal["pending", "running", "ok", "changed", "failed", "unreachable", "skipped"]
FINAL: tuple[str, ...] = ("successful", "failed", "canceled")
FINISHED_EVENT = "rollout_finished"
# An Ansible host pattern (groups, hosts, wildcards, `:`/`,` unions, `&` intersections, `!` exclusions). No `@file`
# (reads hosts from a file on the hub), no `~regex`, nothing that could read as an option.
TARGET_PATTERN = r"^[A-Za-z0-9_*!][A-Za-z0-9_.*:!&,\[\]-]{0,254}$"
DETAIL_CHARS = 500
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def clip(text: Any) -> str | None:
    """One stored detail: no colour codes, at most DETAIL_CHARS, None when empty."""
    if text is None or text == "":
        return None
    value = text if isinstance(text, str) else str(text)
    value = ANSI.sub("", value).strip()
    return value[:DETAIL_CHARS] if value else None


class RolloutRunningError(ConflictError):
    code = "rollout_running"


class RolloutNotRunningError(ConflictError):
    code = "rollout_not_running"


class NoInventoryError(HubError):
    status = 503
    code = "no_inventory"


class InventoryError(HubError):
    status = 503
    code = "inventory_error"


class UnknownTargetError(InvalidInputError):
    code = "unknown_target"


class ModelSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="Model name, e.g. duck-detector."
    )
    version: str = Field(pattern=r"^[0-9]{1,9}$", description="Model version (a number).")


class RolloutRequest(BaseModel):
    """What to roll out where; each playbook takes exactly the fields it uses."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    playbook: Playbook = Field(description="The playbook of hub/ansible to run.")
    target: str = Field(
        pattern=TARGET_PATTERN, description="Inventory group or host pattern (`--limit`), e.g. line_lyon_1."
    )
    version: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$",
        description="The edge release to install (deploy_edge only).",
    )
    model: ModelSpec | None = Field(
        default=None, description="The model version to ship (update_models only)."
    )

    @model_validator(mode="after")
    def _fits_playbook(self) -> RolloutRequest:
        if (self.version is not None) != (self.playbook == "deploy_edge"):
            raise ValueError("deploy_edge needs a version; the other playbooks take none")
        if (self.model is not None) != (self.playbook == "update_models"):
            raise ValueError("update_models needs a model (name and version); the other playbooks take none")
        return self


class HostRow(BaseModel):
    host: str
    status: HostStatus
    ok: int = Field(description="Tasks that succeeded on this host (changed ones included).")
    changed: int
    failed: int
    last_task: str | None
    updated_at: datetime


class Rollout(BaseModel):
    id: int
    playbook: Playbook
    target: str
    version: str | None
    models: list[ModelSpec]
    status: RolloutStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    rc: int | None = Field(description="ansible-playbook's exit code.")
    detail: str | None = Field(description="Why it failed or was canceled, in a sentence.")
    hosts: list[HostRow] = Field(description="The target's hosts first (from the inventory), then any other.")


class RolloutEvent(BaseModel):
    id: int
    at: datetime
    host: str | None
    event: str = Field(description=f"ansible-runner's event name (runner_on_ok, ...), or {FINISHED_EVENT}.")
    task: str | None
    detail: str | None
    host_status: HostRow | None = Field(description="The host's row as it is now.")
    rollout_status: RolloutStatus = Field(description="The roll-out's status as it is now.")
