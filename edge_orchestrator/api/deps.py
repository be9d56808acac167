"""The runtime object the lifespan builds, and the dependency aliases routes receive it through."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edge_orchestrator.auth import ApiKey
from edge_orchestrator.errors import OrchestratorError
from edge_orchestrator.events import EventBus
from edge_orchestrator.inspector import Inspector
from edge_orchestrator.integrations.service import Integrations
from edge_orchestrator.metrics import OrchestratorMetrics
from edge_orchestrator.model_client import ModelClient
from edge_orchestrator.outbox import Outbox
from edge_orchestrator.settings import OrchestratorSettings
from edge_orchestrator.station import StationRepository
from edge_orchestrator.storage import Store


class UnauthorizedError(OrchestratorError):
    code = "unauthorized"


@dataclass
class Runtime:
    settings: OrchestratorSettings
    api_key: ApiKey
    store: Store
    models: ModelClient
    events: EventBus
    metrics: OrchestratorMetrics
    inspector: Inspector
    stations: StationRepository
    outbox: Outbox
    integrations: Integrations | None = None
    started_at: float = field(default_factory=time.time)


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
_bearer = HTTPBearer(auto_error=False, description="The orchestrator's API key.")


def _check(runtime: Runtime, credentials: HTTPAuthorizationCredentials | None) -> None:
    if credentials is None:
        raise UnauthorizedError("this route needs the API key: send 'Authorization: Bearer <key>'")
    if not runtime.api_key.matches(credentials.credentials):
        raise UnauthorizedError("the API key is not valid")


async def require_key(
    runtime: RuntimeDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Every mutating route."""
    _check(runtime, credentials)


async def require_read(
    runtime: RuntimeDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Read routes: open only when the settings say the line's network may read without a key."""
    if not runtime.settings.open_reads:
        _check(runtime, credentials)


WriteAccess = Depends(require_key)
ReadAccess = Depends(require_read)
