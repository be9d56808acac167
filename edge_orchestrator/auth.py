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
    if env_key:
        return ApiKey(env_key.strip(), "environment (EDGE_API_KEY)")
    if key_file is not None:
        try:
            value = key_file.read_text().strip()
        except OSError as exc:
            raise ApiKeyError(f"EDGE_API_KEY_FILE {key_file} cannot be read ({exc.strerror})") from exc
        if len(value) < 16:
            raise ApiKeyError(f"the key in {key_file} is shorter than 16 characters")
        return ApiKey(value, str(key_file))
    path = data_dir / GENERATED_KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return ApiKey(path.read_text().strip(), str(path))
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(32) + "\n")
        file.flush()
        os.fsync(file.fileno())
    log.warning("generated an API key in %s (mode 0600)", path)
    return ApiKey(path.read_text().strip(), str(path))
