"""MQTT: every decision published (QoS 1, from the outbox, in order), retained online/offline status with a
last will, and triggers and recipe changes received on their topics."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edge_orchestrator.integrations.secrets import SecretRef


class MqttSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(description="Broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port (8883 for TLS, usually).")
    username: str | None = Field(default=None, description="Login, when the broker asks for one.")
    password: SecretRef | None = Field(default=None, description="Where the password is.")
