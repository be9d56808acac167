"""How each integration is doing, as /api/v1/system and the dashboard show it (no protocol imports here)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LinkStatus(BaseModel):
    name: str = Field(description="opcua, modbus, mqtt or webhook:<name>.")
    up: bool = Field(
        description="Listening (OPC UA, Modbus), connected (MQTT), last delivery accepted (webhook)."
    )
    state: str = Field(description="PLC handshake state, or the client's connection state.")
    detail: str | None = Field(default=None, description="The last refusal or error, if any.")
    results: int | None = Field(default=None, description="Results handed to the PLC since the start.")
