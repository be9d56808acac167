"""The devices the hub knows: registration (the token is shown once), token rotation and revocation, and who a
presented token belongs to. Functions take a Connection: callers run them in one transaction (Database.run)."""

from __future__ import annotations

import re
import time
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import Connection, Row, select, update

from hub.auth import issue_token, token_hash
from hub.db import dialect_insert, from_db_time, utcnow
from hub.errors import ConflictError, InvalidInputError, InvalidTokenError, NotFoundError
from hub.schema import devices

DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class DeviceNotFoundError(NotFoundError):
    code = "device_not_found"


class DeviceExistsError(ConflictError):
    code = "device_exists"


class InvalidDeviceIdError(InvalidInputError):
    code = "invalid_device_id"


class TokenRevokedError(InvalidTokenError):
    code = "token_revoked"


class DeviceSpec(BaseModel):
    """What an operator states when registering a device."""

    device_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=f"^{DEVICE_ID.pattern}$",
        description="The device's name, as its orchestrator sends it (EDGE_ORCHESTRATOR_DEVICE_ID): 1-64 of "
        "letters, digits, '.', '_' and '-', starting with a letter or digit.",
    )
    site: str | None = Field(default=None, max_length=64, description="The plant, e.g. lyon.")
    line: str | None = Field(
        default=None, max_length=64, description="The production line, for per-line KPIs."
    )
    description: str | None = Field(default=None, max_length=1000, description="Free text for the operators.")


class Device(BaseModel):
    device_id: str
    site: str | None
    line: str | None
    description: str | None
    registered_at: datetime
    revoked_at: datetime | None = Field(
        description="Set once the token was revoked: the device cannot write."
    )
    last_heartbeat_at: datetime | None = Field(
        description="When the hub last heard from it (the hub's clock)."
    )
    interval_s: float | None = Field(description="The heartbeat interval the device announced.")
    version: str | None = Field(description="The orchestrator's version, from the latest heartbeat.")
    station_id: str | None
    ready: bool | None


class Registration(Device):
    token: str = Field(description="The device's token: shown only in this answer; the hub keeps its hash.")


_COLUMNS = [c for c in devices.c if c.name not in ("token_hash", "heartbeat")]


def _device(row: Row[tuple[object, ...]]) -> Device:
    values = row._mapping
    return Device(
        device_id=values["device_id"],
        site=values["site"],
        line=values["line"],
        description=values["description"],
        registered_at=from_db_time(values["registered_at"]),
        revoked_at=from_db_time(values["revoked_at"]),
        last_heartbeat_at=from_db_time(values["last_heartbeat_at"]),
        interval_s=values["interval_s"],
        version=values["version"],
        station_id=values["station_id"],
        ready=values["ready"],
    )


def check_device_id(device_id: str) -> None:
    if not DEVICE_ID.fullmatch(device_id):
        raise InvalidDeviceIdError(
            f"{device_id[:80]!r} is not a device id: 1-64 of letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )


def register(conn: Connection, spec: DeviceSpec) -> Registration:
    """A new device and its token; 409 `device_exists` if the id is taken (rotate its token instead)."""
    check_device_id(spec.device_id)
    token = issue_token()
    values = {**spec.model_dump(), "token_hash": token_hash(token), "registered_at": utcnow()}
    # ON CONFLICT DO NOTHING: two concurrent registrations of one id give one 201 and one 409, never a 500.
    stmt = dialect_insert(conn, devices).values(**values).on_conflict_do_nothing().returning(*_COLUMNS)
    row = conn.execute(stmt).first()
    if row is None:
        raise DeviceExistsError(
            f"device {spec.device_id} is already registered: rotate its token (POST "
            f"/api/v1/devices/{spec.device_id}/token) if it lost it"
        )
    return Registration(**_device(row).model_dump(), token=token)


def rotate_token(conn: Connection, device_id: str) -> Registration:
    """A new token for the device (the old one stops working now); also lifts a revocation."""
    token = issue_token()
    stmt = (
        update(devices)
        .where(devices.c.device_id == device_id)
        .values(token_hash=token_hash(token), revoked_at=None)
        .returning(*_COLUMNS)
    )
    row = conn.execute(stmt).first()
    if row is None:
        raise DeviceNotFoundError(f"no device {device_id} is registered")
    return Registration(**_device(row).model_dump(), token=token)


def revoke_token(conn: Connection, device_id: str) -> Device:
    """The device can no longer write (its data stays); rotating its token lets it write again."""
    existing = conn.execute(select(devices.c.revoked_at).where(devices.c.device_id == device_id)).first()
    if existing is None:
        raise DeviceNotFoundError(f"no device {device_id} is registered")
    # Revoking twice keeps the first time: that is when the device stopped being trusted.
    stmt = (
        update(devices)
        .where(devices.c.device_id == device_id)
        .values(revoked_at=existing.revoked_at or utcnow())
        .returning(*_COLUMNS)
    )
    row = conn.execute(stmt).one()
    return _device(row)


def get_device(conn: Connection, device_id: str) -> Device:
    row = conn.execute(select(*_COLUMNS).where(devices.c.device_id == device_id)).first()
    if row is None:
        raise DeviceNotFoundError(f"no device {device_id} is registered")
    return _device(row)


def list_devices(conn: Connection) -> list[Device]:
    return [_device(row) for row in conn.execute(select(*_COLUMNS).order_by(devices.c.device_id))]


def device_for_token(conn: Connection, token: str) -> str:
    """The id of the device `token` was issued to; 401 `invalid_token` or `token_revoked` otherwise."""
    row = conn.execute(
        select(devices.c.device_id, devices.c.revoked_at).where(devices.c.token_hash == token_hash(token))
    ).first()
    if row is None:
        raise InvalidTokenError("the device token is not valid: register the device or rotate its token")
    if row.revoked_at is not None:
        raise TokenRevokedError(f"the token of device {row.device_id} was revoked: rotate it to write again")
    return str(row.device_id)


class TokenCache:
    """Recently seen valid tokens (by hash): most requests of a device then cost no query for authentication.

    Entries live `ttl_s`; rotating or revoking a token through this process clears the cache at once (another
    hub process sharing the database sees it within `ttl_s`).
    """

    def __init__(self, ttl_s: float = 30.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[str, float]] = {}

    def get(self, digest: str) -> str | None:
        entry = self._entries.get(digest)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, digest: str, device_id: str) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # a fleet is far smaller: this only bounds memory against abuse
        self._entries[digest] = (device_id, time.monotonic() + self.ttl_s)

    def clear(self) -> None:
        self._entries.clear()
