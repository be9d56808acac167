"""Device registration and tokens (admin): the token is shown once, at registration or rotation."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from hub.api.deps import AdminAccess, RuntimeDep
from hub.devices import (
    Device,
    DeviceSpec,
    Registration,
    get_device,
    list_devices,
    register,
    revoke_token,
    rotate_token,
)

router = APIRouter(prefix="/api/v1/devices", tags=["devices"], dependencies=[AdminAccess])


class DeviceList(BaseModel):
    devices: list[Device]


@router.post("", status_code=201)
async def register_device(spec: DeviceSpec, runtime: RuntimeDep) -> Registration:
    """Register a device: answers its token, ONCE (the hub keeps only its hash). Give it to the device as
    EDGE_HUB_TOKEN (or a token file). 409 `device_exists` when the id is taken."""
    return await runtime.db.run(lambda conn: register(conn, spec), write=True)


@router.get("")
async def devices(runtime: RuntimeDep) -> DeviceList:
    """Every registered device, by id, with its latest heartbeat's summary."""
    return DeviceList(devices=await runtime.db.run(list_devices))


@router.get("/{device_id}")
async def device(device_id: str, runtime: RuntimeDep) -> Device:
    """One device; 404 `device_not_found`."""
    return await runtime.db.run(lambda conn: get_device(conn, device_id))


@router.post("/{device_id}/token")
async def rotate(device_id: str, runtime: RuntimeDep) -> Registration:
    """A new token for the device, answered once; the previous token stops working now (a revoked device
    can write again with the new one)."""
    registration = await runtime.db.run(lambda conn: rotate_token(conn, device_id), write=True)
    runtime.tokens.clear()
    return registration


@router.delete("/{device_id}/token")
async def revoke(device_id: str, runtime: RuntimeDep) -> Device:
    """Revoke the device's token: its writes are refused (401 `token_revoked`) until the token is rotated.
    Its data stays."""
    revoked = await runtime.db.run(lambda conn: revoke_token(conn, device_id), write=True)
    runtime.tokens.clear()
    return revoked
