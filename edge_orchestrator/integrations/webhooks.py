"""Webhooks: each decision POSTed to a URL with an HMAC-SHA256 signature, retried with backoff from the outbox."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from edge_orchestrator.integrations.secrets import SecretRef


class WebhookSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="Names this webhook's queue.")
    url: AnyHttpUrl = Field(description="Where each decision is POSTed.")
    secret: SecretRef = Field(description="The HMAC key the receiver verifies the signature with.")
