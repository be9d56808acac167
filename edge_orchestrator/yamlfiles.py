"""Reading the YAML files people write (stations, integrations): every problem named with its location."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from edge_orchestrator.errors import OrchestratorError

M = TypeVar("M", bound=BaseModel)
FileError = Callable[[str, list[dict[str, object]]], OrchestratorError]


def format_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as {location, message, type}, location joined with dots (cameras.0.rules.1.max)."""
    return [
        {
            "location": ".".join(str(part) for part in error["loc"]),
            "message": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors(include_url=False)
    ]


def parse(
    text: str | bytes, model: type[M], source: str, error: FileError, *, max_bytes: int, keys_hint: str
) -> M:
    """YAML (JSON is YAML too) into `model`; a problem raises `error(detail, errors)` with its location."""
    if len(text) > max_bytes:
        raise error(f"{source}: larger than {max_bytes // 1024} KiB", [])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "unreadable YAML"
        context = getattr(exc, "context", None)
        message = f"{context}, {problem}" if context else problem
        location = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(
            f"{source}: not valid YAML{where}: {message}",
            [{"location": location, "message": message, "type": "yaml"}],
        ) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{source}: the file must be a mapping ({keys_hint})", [])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = format_errors(exc)
        detail = "; ".join(f"{e['location'] or '(file)'}: {e['message']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise error(f"{source}: {len(errors)} validation error(s): {detail}{more}", errors) from exc


def read(path: Path, error: FileError) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror})", []) from exc
