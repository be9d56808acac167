"""The API key: from EDGE_API_KEY, else the file EDGE_API_KEY_FILE, else one generated in the data directory."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from edge_orchestrator.errors import OrchestratorError

log = logging.getLogger(__name__)
GENERATED_KEY_FILE = "api-key"


class ApiKeyError(OrchestratorError):
    code = "api_key_unavailable"


@dataclass(frozen=True)
class ApiKey:
    value: str
    source: str  # "environment" or the file's path: safe to log and to show, unlike the key

    def matches(self, presented: str) -> bool:
        return secrets.compare_digest(presented.encode(), self.value.encode())


def resolve_api_key(env_key: str | None, key_file: Path | None, data_dir: Path) -> ApiKey:
    try:
        value, source = resolve_key(env_key, key_file, data_dir / GENERATED_KEY_FILE, "EDGE_API_KEY")
    except ValueError as exc:
        raise ApiKeyError(str(exc)) from exc
    return ApiKey(value, source)


def resolve_key(
    env_key: str | None, key_file: Path | None, generated: Path, env_name: str
) -> tuple[str, str]:
    """A service key and where it came from (safe to log, unlike the key): the environment variable `env_name`,
    else `key_file` (at least 16 characters), else the file `generated`, created once with a random key (mode
    0600). The hub's admin key is resolved the same way. Raises ValueError with the sentence to show."""
    if env_key and env_key.strip():
        return env_key.strip(), f"environment ({env_name})"
    if key_file is not None:
        try:
            value = key_file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"{env_name}_FILE {key_file} cannot be read ({exc.strerror})") from exc
        if len(value) < 16:
            raise ValueError(f"the key in {key_file} is shorter than 16 characters")
        return value, str(key_file)
    generated.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(generated, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return generated.read_text().strip(), str(generated)
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(32) + "\n")
        file.flush()
        os.fsync(file.fileno())
    log.warning("generated a key for %s in %s (mode 0600)", env_name, generated)
    return generated.read_text().strip(), str(generated)
