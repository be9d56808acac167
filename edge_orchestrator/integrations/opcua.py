"""The OPC UA server a PLC runs the handshake against (asyncua): one station object, its variables, security."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_orchestrator.integrations.handshake import Handshake
from edge_orchestrator.integrations.secrets import SecretRef


class OpcUaUser(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    username: str = Field(min_length=1, max_length=64, description="Login name.")
    password: SecretRef = Field(description="Where the password is (environment variable or file).")


class OpcUaSettings(BaseModel):
    """TODO(helper): fields, descriptions and the server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["opcua"] = "opcua"
    endpoint: str = Field(
        default="opc.tcp://0.0.0.0:4840/edge/", description="Endpoint URL the server listens on."
    )
    users: list[OpcUaUser] = Field(default_factory=list, description="Users who may write (the PLC).")
    allow_anonymous: bool = Field(default=False, description="Let anonymous clients read (never write).")

    def build(self, handshake: Handshake, base_dir: Path) -> OpcUaServer:
        return OpcUaServer(self, handshake, base_dir)


class OpcUaServer:
    def __init__(self, settings: OpcUaSettings, handshake: Handshake, base_dir: Path) -> None:
        self.name = "opcua"
        self._settings = settings
        self._handshake = handshake
        self._base_dir = base_dir

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError
