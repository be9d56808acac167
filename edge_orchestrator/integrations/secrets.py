"""Secrets named in integration files, never written in them: an environment variable or a file."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_orchestrator.errors import IntegrationError


class SecretRef(BaseModel):
    """Exactly one of `env` or `file`; the value is read when the integration starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    env: str | None = Field(default=None, description="Name of the environment variable holding the secret.")
    file: Path | None = Field(
        default=None, description="File holding the secret (mode 0600); relative to the integrations file."
    )

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of `env` or `file`")
        return self

    def read(self, base_dir: Path) -> str:
        """The secret, stripped of a trailing newline; a missing one is an IntegrationError saying where."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise IntegrationError(f"the environment variable {self.env} is not set")
            return value
        assert self.file is not None
        path = self.file if self.file.is_absolute() else base_dir / self.file
        try:
            return path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise IntegrationError(f"the secret file {path} cannot be read ({exc.strerror})") from exc
