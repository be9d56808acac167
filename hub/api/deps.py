"""The runtime object the lifespan builds, and the dependency aliases routes receive it and their caller through:
`RuntimeDep`, `AdminDep` (admin key or dashboard session), `ReaderDep` (the same, or nothing under open_reads),
`DeviceDep` (a device token → its device id)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter, Gauge

from hub.auth import SESSION_COOKIE, AdminKey, session_valid, token_hash
from hub.db import Database
from hub.devices import TokenCache, device_for_token
from hub.errors import InvalidTokenError, UnauthorizedError
from hub.ingest import Ingest
from hub.rollouts import Rollouts
from hub.settings import HubSettings


class HubMetrics:
    """Prometheus metrics of one hub (a registry per app, so tests and reloads never collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.heartbeats = Counter("hub_heartbeats", "Heartbeats received.", registry=self.registry)
        self.results = Counter(
            "hub_results",
            "Results received, by outcome: accepted (stored or verdict applied) or duplicate (ignored).",
            ["outcome"],
            registry=self.registry,
        )
        self.images = Counter(
            "hub_images",
            "Images received, by outcome: stored or duplicate.",
            ["outcome"],
            registry=self.registry,
        )
        self.request_errors = Counter(
            "hub_request_errors",
            "Requests answered with an error, by code.",
            ["code"],
            registry=self.registry,
        )
        self.images_bytes = Gauge(
            "hub_images_bytes",
            "Sum of the stored images' sizes, as of the last retention pass.",
            registry=self.registry,
        )
        self.retention_deleted = Counter(
            "hub_retention_deleted",
            "Rows deleted by retention, by what: results (too old) or images (with their result, or pruned).",
            ["what"],
            registry=self.registry,
        )
        for what in ("results", "images"):
            self.retention_deleted.labels(what)  # shown at 0 before the first deletion


@dataclass
class Runtime:
    settings: HubSettings
    db: Database
    admin_key: AdminKey
    images_dir: Path  # the image files; images.path is relative to it
    metrics: HubMetrics
    ingest: Ingest
    rollouts: Rollouts
    tokens: TokenCache = field(default_factory=TokenCache)
    started_at: float = field(default_factory=time.time)


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
_admin_bearer = HTTPBearer(
    auto_error=False, description="The hub's admin key (or log in: hub_session cookie)."
)
_device_bearer = HTTPBearer(auto_error=False, description="The device's token (hubd_...).")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)]


def is_admin(runtime: Runtime, request: Request, credentials: HTTPAuthorizationCredentials | None) -> bool:
    """The admin key as a Bearer token, or a valid dashboard session cookie."""
    if credentials is not None:
        return runtime.admin_key.matches(credentials.credentials)
    return session_valid(runtime.admin_key, request.cookies.get(SESSION_COOKIE))


async def require_admin(runtime: RuntimeDep, request: Request, credentials: Bearer) -> None:
    """Every route that changes the fleet (register, tokens, exports, roll-outs)."""
    if not is_admin(runtime, request, credentials):
        raise UnauthorizedError(
            "this route needs the admin key: send 'Authorization: Bearer <key>' or log in at /login"
        )


async def require_reader(runtime: RuntimeDep, request: Request, credentials: Bearer) -> None:
    """Read routes and pages: open when HUB_OPEN_READS says the network may read without logging in."""
    if not runtime.settings.open_reads:
        await require_admin(runtime, request, credentials)


async def require_device(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_device_bearer)],
) -> str:
    """The device id the presented token was issued to (401 `invalid_token` / `token_revoked` otherwise)."""
    if credentials is None:
        raise InvalidTokenError("this route needs a device token: send 'Authorization: Bearer <token>'")
    digest = token_hash(credentials.credentials)
    device_id = runtime.tokens.get(digest)
    if device_id is None:
        device_id = await runtime.db.run(lambda conn: device_for_token(conn, credentials.credentials))
        runtime.tokens.put(digest, device_id)
    return device_id


AdminDep = Annotated[None, Depends(require_admin)]
ReaderDep = Annotated[None, Depends(require_reader)]
DeviceDep = Annotated[str, Depends(require_device)]
# For `dependencies=[...]` on routes and routers that do not need the value.
AdminAccess = Depends(require_admin)
ReaderAccess = Depends(require_reader)
