"""Health, metrics, and the dashboard's login session (POST /login, POST /logout)."""

from __future__ import annotations

import asyncio
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import Connection, text

from hub.api.deps import RuntimeDep
from hub.auth import SESSION_COOKIE, SESSION_TTL_S, safe_next, session_cookie

router = APIRouter()


@router.get("/health/live", tags=["health"])
async def live() -> dict[str, str]:
    """The process answers."""
    return {"status": "live"}


class Readiness(BaseModel):
    ready: bool
    database: str = Field(description="ok, or why the database does not answer.")


@router.get("/health/ready", tags=["health"], responses={503: {"model": Readiness}})
async def ready(runtime: RuntimeDep) -> JSONResponse:
    """Ready: the database answers (within 5 s)."""

    def ping(conn: Connection) -> None:
        conn.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(runtime.db.run(ping), timeout=5)
        readiness = Readiness(ready=True, database="ok")
    except TimeoutError:
        readiness = Readiness(ready=False, database="no answer within 5 s")
    except Exception as exc:  # any driver error means "not ready", said in a sentence (never a 500)
        readiness = Readiness(ready=False, database=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return JSONResponse(readiness.model_dump(), status_code=200 if readiness.ready else 503)


@router.get("/metrics", tags=["health"], response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus text format: hub_heartbeats_total, hub_results_total{outcome}, hub_images_total{outcome},
    hub_request_errors_total{code}, hub_images_bytes, hub_retention_deleted_total{what}."""
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post("/login", tags=["session"], status_code=303, response_class=RedirectResponse)
async def login(
    request: Request,
    runtime: RuntimeDep,
    key: Annotated[str, Form(description="The hub's admin key.")],
    next: Annotated[str | None, Form(description="Where to go once logged in (a path of this site).")] = None,
) -> RedirectResponse:
    """Log in to the dashboard with the admin key: sets the `hub_session` cookie (12 h) and goes to `next`.
    A wrong key goes back to `/login?error=invalid_key&next=...` (the login page shows why)."""
    target = safe_next(next or request.query_params.get("next"))
    if not runtime.admin_key.matches(key.strip()):
        runtime.metrics.request_errors.labels("invalid_key").inc()
        await asyncio.sleep(0.25)  # a wrong guess costs time: slows down anyone trying keys by hand or script
        return RedirectResponse(f"/login?error=invalid_key&next={quote(target, safe='/')}", status_code=303)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_cookie(runtime.admin_key),
        max_age=SESSION_TTL_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout", tags=["session"], status_code=303, response_class=RedirectResponse)
async def logout() -> RedirectResponse:
    """Forget the session cookie and go to the login page."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
