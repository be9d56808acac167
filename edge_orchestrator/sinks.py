"""Where decisions go besides storage and SSE: each sink kind is a settings class plus its implementation.

MQTT, OPC UA, Modbus and webhooks join this union with the industrial-integration work; the file sink is
for MES systems that collect a JSON-lines file.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from edge_orchestrator.domain import Inspection


class Sink(Protocol):
    name: str

    async def open(self) -> None: ...

    async def publish(self, item: Inspection) -> None: ...

    async def close(self) -> None: ...


class FileSinkSettings(BaseModel):
    """Append every decided item as one JSON line to a file (fsync'd, so a power cut loses no line)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["file"] = "file"
    path: Path = Field(description="JSON-lines file; relative paths resolve from the data directory.")
    fsync: bool = Field(default=True, description="fsync after each line (durable; costs a disk flush).")

    def build(self, data_dir: Path) -> Sink:
        return FileSink(self, data_dir)


class FileSink:
    def __init__(self, settings: FileSinkSettings, data_dir: Path) -> None:
        self.name = f"file:{settings.path}"
        self._path = settings.path if settings.path.is_absolute() else data_dir / settings.path
        self._fsync = settings.fsync
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        await asyncio.to_thread(self._path.parent.mkdir, parents=True, exist_ok=True)

    async def publish(self, item: Inspection) -> None:
        line = item.model_dump_json() + "\n"
        async with self._lock:  # lines from concurrent items never interleave
            await asyncio.to_thread(self._append, line.encode())

    def _append(self, data: bytes) -> None:
        with self._path.open("ab") as file:
            file.write(data)
            file.flush()
            if self._fsync:
                os.fsync(file.fileno())

    async def close(self) -> None:
        return None


SinkSettings = Annotated[FileSinkSettings, Field(discriminator="type")]
