"""The same handshake over Modbus TCP (pymodbus), for PLCs without OPC UA: coils, inputs and registers."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_orchestrator.integrations.handshake import Handshake


class ModbusSettings(BaseModel):
    """TODO(helper): fields, descriptions and the server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["modbus"] = "modbus"
    host: str = Field(default="0.0.0.0", description="Interface to listen on.")
    port: int = Field(default=5020, ge=1, le=65535, description="TCP port (502 needs root).")

    def build(self, handshake: Handshake, base_dir: Path) -> ModbusServer:
        return ModbusServer(self, handshake, base_dir)


class ModbusServer:
    def __init__(self, settings: ModbusSettings, handshake: Handshake, base_dir: Path) -> None:
        self.name = "modbus"
        self._settings = settings
        self._handshake = handshake

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError
