"""Station files: what one inspection setup is (cameras, models, rules, storage, sinks, triggers), and where they live.

A station file is YAML validated by frozen pydantic models with `extra="forbid"`; every field carries a
description, which also feeds the JSON Schema the dashboard renders. The installed stations live as
`<id>.yaml` in one folder; the active station's id is kept in the data directory so it survives a restart.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_orchestrator import yamlfiles
from edge_orchestrator.cameras import CameraSettings, mask_url
from edge_orchestrator.errors import StationError, StationNotFoundError
from edge_orchestrator.model_client import ModelDescription
from edge_orchestrator.rules import AllOkRule, CameraRule, ItemRule, unknown_labels
from edge_orchestrator.sinks import SinkSettings
from edge_orchestrator.storage import StoragePolicy

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_ID = re.compile(ID_PATTERN)
MAX_STATION_BYTES = 256 * 1024


class ModelRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="Model name on the model server.")
    version: int | None = Field(
        default=None, ge=1, description="Pinned model version; empty = the server's latest ready version."
    )
    timeout_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Longest wait for one prediction before the camera is NO_DECISION.",
    )


class CameraConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=ID_PATTERN, description="Camera id (lowercase letters, digits, - and _).")
    source: CameraSettings = Field(description="Where frames come from; `type` selects the camera kind.")
    model: ModelRef = Field(description="The model that judges this camera's frames.")
    rules: list[CameraRule] = Field(
        min_length=1,
        description="Camera rules; the camera is OK only if every rule says OK (NO_DECISION if any is unsure).",
    )
    capture_timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="Longest wait for a frame before the camera is NO_DECISION."
    )

    @model_validator(mode="after")
    def _distinct_rule_names(self) -> CameraConfig:
        names = [rule.rule_name for rule in self.rules]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"camera {self.id}: rules {', '.join(repeated)} appear more than once; give each a distinct `name` "
                "so their outcomes can be told apart"
            )
        return self


class PeriodicTrigger(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    interval_ms: int = Field(ge=20, le=86_400_000, description="Trigger an inspection every this many ms.")
    enabled: bool = Field(default=True, description="Switch the periodic trigger off without removing it.")


class Triggers(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    periodic: PeriodicTrigger | None = Field(
        default=None, description="Continuous lines: inspect at a fixed period. Empty = API triggers only."
    )


class Station(BaseModel):
    """One inspection setup of a line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=ID_PATTERN, description="Station id; also the file name (<id>.yaml).")
    name: str = Field(min_length=1, max_length=200, description="Readable name shown to operators.")
    description: str = Field(default="", max_length=2000, description="What this station inspects.")
    cameras: list[CameraConfig] = Field(min_length=1, max_length=16, description="The cameras of one item.")
    item_rule: ItemRule = Field(
        default_factory=AllOkRule, description="How camera decisions make the item's decision."
    )
    storage: StoragePolicy = Field(
        default_factory=StoragePolicy, description="Images to keep and disk quota."
    )
    sinks: list[SinkSettings] = Field(default_factory=list, description="Where decisions are published.")
    triggers: Triggers = Field(default_factory=Triggers, description="Trigger sources besides the API.")

    @model_validator(mode="after")
    def _unique_cameras(self) -> Station:
        ids = [camera.id for camera in self.cameras]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"camera ids must be unique; repeated: {', '.join(duplicates)}")
        count = getattr(self.item_rule, "count", None)
        if count is not None and count > len(self.cameras):
            raise ValueError(
                f"item_rule min_ok needs {count} OK cameras but the station has {len(self.cameras)}: "
                "every item would be KO"
            )
        return self

    def public(self) -> dict[str, Any]:
        """The station as JSON for the API: URL credentials and secret-looking query values masked."""
        data = self.model_dump(mode="json")
        for camera in data["cameras"]:
            if isinstance(camera["source"].get("url"), str):
                camera["source"]["url"] = mask_url(camera["source"]["url"])
        return data

    @cached_property
    def revision(self) -> str:
        """A short hash of the validated content: stored with each item as its rules' version."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


_URL_CREDENTIALS = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"]+@")
_SECRET_LINE = re.compile(r"(?im)^([\s#-]*(?:password|token|secret)\s*:\s*)\S.*$")


def redact_source(text: str) -> str:
    """A station file as text with URL credentials and password-like values masked (for the API)."""
    return _SECRET_LINE.sub(r"\1'***'", _URL_CREDENTIALS.sub(r"\1***@", text))


def parse_station(text: str | bytes, source: str = "station") -> Station:
    """Parse YAML (JSON is YAML too) into a Station; every problem raises StationError with its location."""
    return yamlfiles.parse(
        text, Station, source, StationError, max_bytes=MAX_STATION_BYTES, keys_hint="id, name, cameras, ..."
    )


def load_station(path: Path) -> Station:
    return parse_station(yamlfiles.read(path, StationError), str(path))


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def check_models(
    station: Station, describe: Callable[[str], Awaitable[ModelDescription | None]]
) -> None:
    """Refuse a station whose models are not served, or whose rules name another task or unknown labels.

    A typo in a label would otherwise never match, and a "max 0 defects" rule would then pass every part.
    """
    errors: list[dict[str, Any]] = []
    for i, camera in enumerate(station.cameras):
        description = await describe(camera.model.name)
        where = f"cameras.{i}.model"
        if description is None:
            errors.append(
                {
                    "location": f"{where}.name",
                    "type": "unknown_model",
                    "message": f"the model server has no model {camera.model.name!r}",
                }
            )
            continue
        version = description.version(camera.model.version)
        if version is None and any(v.status == "loading" for v in description.versions):
            continue  # still loading: nothing to check yet; readiness and the predictions will say
        if version is None:
            wanted = camera.model.version or "latest"
            errors.append(
                {
                    "location": f"{where}.version",
                    "type": "unknown_version",
                    "message": f"model {camera.model.name} has no ready version {wanted}",
                }
            )
            continue
        for j, rule in enumerate(camera.rules):
            if version.task is not None and rule.task != version.task:
                errors.append(
                    {
                        "location": f"cameras.{i}.rules.{j}",
                        "type": "wrong_task",
                        "message": f"{rule.type} needs a {rule.task} model; {camera.model.name} "
                        f"v{version.version} is a {version.task} model",
                    }
                )
                continue
            unknown = unknown_labels(rule, version.labels)
            if unknown and version.labels:
                errors.append(
                    {
                        "location": f"cameras.{i}.rules.{j}",
                        "type": "unknown_label",
                        "message": f"{', '.join(unknown)} not among the labels of {camera.model.name} "
                        f"v{version.version} ({', '.join(version.labels)})",
                    }
                )
    if errors:
        raise StationError(f"station {station.id!r} does not fit the served models", errors)


class StationSummary(BaseModel):
    id: str
    name: str | None = None
    revision: str | None = None
    active: bool = False
    valid: bool
    errors: list[dict[str, Any]] = Field(default_factory=list, description="Why the file does not validate.")


class StationRepository:
    """The installed station files and the persisted choice of the active one (blocking: call off-loop)."""

    def __init__(self, stations_dir: Path, data_dir: Path) -> None:
        self.dir = stations_dir
        self._active_file = data_dir / "active_station"

    def _path(self, station_id: str) -> Path:
        if not _ID.match(station_id):
            raise StationNotFoundError(
                f"no station {station_id!r} (ids are lowercase letters, digits, - and _)"
            )
        return self.dir / f"{station_id}.yaml"

    def get(self, station_id: str) -> Station:
        path = self._path(station_id)
        if not path.is_file():
            raise StationNotFoundError(f"no station {station_id!r} is installed")
        return load_station(path)

    def raw(self, station_id: str) -> str:
        path = self._path(station_id)
        if not path.is_file():
            raise StationNotFoundError(f"no station {station_id!r} is installed")
        return path.read_text()

    def list(self, active: str | None) -> list[StationSummary]:
        summaries = []
        for path in sorted(self.dir.glob("*.yaml")):
            if not _ID.match(path.stem):
                continue
            try:
                station = load_station(path)
            except StationError as exc:
                summaries.append(
                    StationSummary(
                        id=path.stem,
                        valid=False,
                        errors=exc.errors or [{"location": "", "message": exc.detail, "type": "file"}],
                    )
                )
                continue
            summaries.append(
                StationSummary(
                    id=station.id,
                    name=station.name,
                    revision=station.revision,
                    active=station.id == active,
                    valid=station.id == path.stem,
                    errors=[]
                    if station.id == path.stem
                    else [
                        {
                            "location": "id",
                            "message": f"the file is {path.name} but its id is {station.id!r}",
                            "type": "id_mismatch",
                        }
                    ],
                )
            )
        return summaries

    def check(self, station_id: str, text: str | bytes) -> Station:
        """Validate a file for installation as station_id (the id in the URL and in the file must agree)."""
        self._path(station_id)
        station = parse_station(text, f"station {station_id}")
        if station.id != station_id:
            raise StationError(
                f"the station's id is {station.id!r} but it is installed as {station_id!r}",
                [{"location": "id", "message": f"must be {station_id!r}", "type": "id_mismatch"}],
            )
        return station

    def exists(self, station_id: str) -> bool:
        return self._path(station_id).is_file()

    def install(self, station_id: str, text: str | bytes) -> Station:
        """Validate then write atomically."""
        station = self.check(station_id, text)
        _atomic_write(self._path(station_id), text.encode() if isinstance(text, str) else text)
        return station

    def remove(self, station_id: str) -> None:
        path = self._path(station_id)
        if not path.is_file():
            raise StationNotFoundError(f"no station {station_id!r} is installed")
        path.unlink()

    def active_id(self) -> str | None:
        try:
            value = self._active_file.read_text().strip()
        except FileNotFoundError:
            return None
        return value if _ID.match(value) else None

    def set_active_id(self, station_id: str) -> None:
        _atomic_write(self._active_file, station_id.encode() + b"\n")
