"""Webhooks: each decision POSTed to a URL with an HMAC-SHA256 signature, retried with backoff from the outbox.

The receiver checks `X-Edge-Signature: t=<unix seconds>,v1=<hex>` where hex = HMAC-SHA256(secret,
"<t>.<raw body>"), refuses old timestamps (replay), and deduplicates by `X-Edge-Delivery` (the item id):
delivery is at least once, in order per webhook. 2xx is delivered; 408, 425, 429, 5xx and network errors are
retried for ever with backoff (Retry-After honoured); any other status counts as a rejection, and after
`max_attempts` rejections the message is parked in the outbox (kept and reported, never dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from pathlib import Path

import httpx
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from edge_orchestrator import __version__
from edge_orchestrator.integrations.secrets import SecretRef
from edge_orchestrator.outbox import Message, Outbox, RejectedError, TransientError, retry_after

log = logging.getLogger(__name__)
_RETRY = {408, 425, 429}


class WebhookSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="Names this webhook's queue.")
    url: AnyHttpUrl = Field(description="Where each decision is POSTed.")
    secret: SecretRef = Field(description="The HMAC key the receiver verifies the signature with.")
    timeout_s: float = Field(default=5.0, gt=0, le=120, description="Per request (connect, read, write).")
    max_attempts: int = Field(
        default=5, ge=1, le=1000, description="Rejections (4xx) before a message is parked."
    )
    backoff_initial_s: float = Field(default=1.0, gt=0, description="First retry delay; doubles each time.")
    backoff_max_s: float = Field(default=60.0, gt=0, description="Longest retry delay.")
    verify_tls: bool = Field(default=True, description="Check the receiver's certificate (keep it on).")
    ca_file: Path | None = Field(default=None, description="CA bundle for a receiver with a private CA.")

    @property
    def channel(self) -> str:
        return f"webhook:{self.name}"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Edge-Signature header value for this body at this time."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance_s: float = 300.0, now: float | None = None
) -> bool:
    """What a receiver does (Python receivers can import this): signature matches and is recent."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


class WebhookLink:
    def __init__(self, settings: WebhookSettings, base_dir: Path, outbox: Outbox) -> None:
        self.name = settings.channel
        self._settings = settings
        self._outbox = outbox
        self._secret = settings.secret.read(base_dir)
        verify_tls: bool | str = settings.verify_tls
        if settings.ca_file is not None and settings.verify_tls:
            verify_tls = str(
                settings.ca_file if settings.ca_file.is_absolute() else base_dir / settings.ca_file
            )
        self._client = httpx.AsyncClient(
            timeout=settings.timeout_s,
            verify=verify_tls,
            headers={"User-Agent": f"edge-orchestrator/{__version__}"},
            follow_redirects=False,
        )
        self._task: asyncio.Task[None] | None = None
        self.problem: str | None = None  # why the last attempt failed; None once a delivery succeeds

    @property
    def up(self) -> bool:
        return self.problem is None

    async def start(self) -> None:
        s = self._settings
        self._task = asyncio.create_task(
            self._outbox.deliver(
                s.channel,
                self._send,
                max_attempts=s.max_attempts,
                backoff_s=(s.backoff_initial_s, s.backoff_max_s),
            ),
            name=s.channel,
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()

    async def _send(self, message: Message) -> None:
        body = message.body.encode()
        headers = {
            "Content-Type": "application/json",
            "X-Edge-Event": "inspection.decided",
            "X-Edge-Delivery": message.item_id,
            "X-Edge-Signature": sign(self._secret, int(time.time()), body),
        }
        try:
            response = await self._client.post(str(self._settings.url), content=body, headers=headers)
        except httpx.HTTPError as exc:
            self.problem = f"{type(exc).__name__}: {exc}"
            raise TransientError(self.problem) from exc
        status = response.status_code
        if 200 <= status < 300:
            self.problem = None
            return
        if status in _RETRY or status >= 500:
            self.problem = f"HTTP {status}"
            raise TransientError(self.problem, retry_after(response.headers.get("Retry-After")))
        self.problem = f"HTTP {status}: {response.text[:200]}"
        raise RejectedError(self.problem)
