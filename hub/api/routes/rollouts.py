"""Roll-outs: start a playbook against part of the fleet, follow it host by host (SSE), cancel it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse

from hub.api.deps import AdminDep, ReaderDep, RuntimeDep
from hub.rollouts import Rollout, RolloutRequest

router = APIRouter(tags=["rollouts"])


class RolloutList(BaseModel):
    rollouts: list[Rollout] = Field(description="Newest first.")


@router.post("/api/v1/rollouts", status_code=202)
async def start_rollout(request: RolloutRequest, runtime: RuntimeDep, _: AdminDep) -> Rollout:
    """Start a playbook of hub/ansible against a group or host pattern of the inventory (one roll-out at a time:
    409 `rollout_running`). Answers at once; follow it with GET .../events."""
    return await runtime.rollouts.start(request)


@router.get("/api/v1/rollouts")
async def list_rollouts(runtime: RuntimeDep, _: ReaderDep) -> RolloutList:
    """The 50 latest roll-outs with their hosts."""
    return RolloutList(rollouts=await runtime.rollouts.recent(limit=50))


@router.get("/api/v1/rollouts/{rollout_id}")
async def get_rollout(rollout_id: int, runtime: RuntimeDep, _: ReaderDep) -> Rollout:
    """One roll-out: its status, and each host's status and task counts."""
    return await runtime.rollouts.get(rollout_id)


@router.get("/api/v1/rollouts/{rollout_id}/events", response_class=EventSourceResponse)
async def rollout_events(
    rollout_id: int,
    runtime: RuntimeDep,
    _: ReaderDep,
    after: Annotated[int, Query(ge=0, description="Only the events after this event id.")] = 0,
) -> EventSourceResponse:
    """Server-Sent Events: every stored event of the roll-out after `after`, then each new one as ansible
    reports it; the stream ends after the final event (`rollout_finished`). Each `data:` is a RolloutEvent."""
    await runtime.rollouts.get(rollout_id)  # 404 before the stream starts

    async def stream() -> AsyncIterator[dict[str, str]]:
        async for event in runtime.rollouts.follow(rollout_id, after):
            # No SSE `event:` field: a browser's EventSource.onmessage only sees unnamed events.
            yield {"id": str(event.id), "data": event.model_dump_json()}

    return EventSourceResponse(stream(), ping=15, send_timeout=10)


@router.post("/api/v1/rollouts/{rollout_id}/cancel", status_code=202)
async def cancel_rollout(rollout_id: int, runtime: RuntimeDep, _: AdminDep) -> Rollout:
    """Stop the running playbook (409 `rollout_not_running` otherwise). ansible-playbook is killed at once: a
    device in the middle of a task may be left half-way; run the playbook, or rollback, again."""
    return await runtime.rollouts.cancel(rollout_id)
