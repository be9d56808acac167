"""MQTT: every decision published (QoS 1, from the outbox, in order), retained online/offline status with a
last will, and triggers and recipe changes received on their topics, each answered on a replies topic.

The session is clean: a trigger sent while the device was away is not replayed later (that part has moved
on). Results are never lost that way: they wait in the outbox, on disk, until the broker acknowledged them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import aiomqtt
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from edge_orchestrator import __version__
from edge_orchestrator.domain import Inspection, TriggerRequest
from edge_orchestrator.errors import IntegrationError, OrchestratorError
from edge_orchestrator.events import EventBus
from edge_orchestrator.integrations.secrets import SecretRef
from edge_orchestrator.outbox import Message, Outbox, TransientError

log = logging.getLogger(__name__)
CHANNEL = "mqtt"


class MqttTls(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ca_file: Path | None = Field(
        default=None, description="CA bundle the broker's certificate is checked with."
    )
    cert_file: Path | None = Field(default=None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(default=None, description="Client certificate's private key.")


class MqttSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(description="Broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port (8883 for TLS, usually).")
    client_id: str | None = Field(
        default=None, max_length=64, description="MQTT client id; default edge-<device id>."
    )
    username: str | None = Field(default=None, description="Login, when the broker asks for one.")
    password: SecretRef | None = Field(default=None, description="Where the password is.")
    tls: MqttTls | None = Field(default=None, description="TLS to the broker (system CAs unless ca_file).")
    topic_prefix: str | None = Field(
        default=None,
        pattern=r"^[^#+]+$",
        description=(
            "Prefix of every topic (no wildcards); default edge/<device id>. Topics: <prefix>/results,"
            " <prefix>/status (retained), <prefix>/trigger, <prefix>/recipe, <prefix>/replies."
        ),
    )
    qos: Literal[1, 2] = Field(default=1, description="QoS of results, status and subscriptions.")
    keepalive_s: int = Field(
        default=30,
        ge=5,
        le=3600,
        description="Keep-alive; the broker sends the last will (offline) after 1.5 times this without news.",
    )
    reconnect_max_s: float = Field(
        default=5.0, gt=0, description="Longest wait between reconnection attempts."
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> MqttSettings:
        if self.tls is not None and (self.tls.cert_file is None) != (self.tls.key_file is None):
            raise ValueError("tls: give both cert_file and key_file, or neither")
        return self


class MqttTrigger(TriggerRequest):
    """A trigger's payload: the REST trigger body, plus an optional key and a request id echoed in the reply."""

    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=128, description="As the REST Idempotency-Key header."
    )
    request_id: str | None = Field(default=None, max_length=128, description="Echoed in the reply.")


class MqttRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    station_id: str | None = Field(default=None, max_length=64, description="Activate this station ...")
    recipe: int | None = Field(default=None, ge=1, description="... or the station of this recipe number.")
    request_id: str | None = Field(default=None, max_length=128, description="Echoed in the reply.")

    @model_validator(mode="after")
    def _one(self) -> MqttRecipe:
        if (self.station_id is None) == (self.recipe is None):
            raise ValueError("give exactly one of station_id or recipe")
        return self


class MqttLine(Protocol):
    @property
    def station_id(self) -> str | None: ...

    async def submit(self, trigger: TriggerRequest, source: str) -> Inspection: ...

    async def submit_once(
        self, trigger: TriggerRequest, source: str, key: str
    ) -> tuple[Inspection, bool]: ...

    async def switch(self, station_id: str) -> None: ...


class MqttLink:
    """One connection, kept up for ever: status, subscriptions and the outbox's MQTT channel."""

    def __init__(
        self,
        settings: MqttSettings,
        base_dir: Path,
        outbox: Outbox,
        line: MqttLine,
        events: EventBus,
        device_id: str,
        recipes: dict[int, str],
    ) -> None:
        self.name = "mqtt"
        self._settings = settings
        self._base_dir = base_dir
        self._outbox = outbox
        self._line = line
        self._events = events
        self._device_id = device_id
        self._recipes = recipes
        prefix = (settings.topic_prefix or f"edge/{device_id}").rstrip("/")
        self.topics = {
            name: f"{prefix}/{name}" for name in ("results", "status", "trigger", "recipe", "replies")
        }
        self._password = settings.password.read(base_dir) if settings.password else None
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.problem: str | None = "not connected yet"

    @property
    def up(self) -> bool:
        return self.connected.is_set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt")

    async def stop(self) -> None:
        client = self._client
        if client is not None and self.connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(2.0):  # a clean stop says offline itself (the will is for crashes)
                    await client.publish(
                        self.topics["status"], self._status(False), qos=self._settings.qos, retain=True
                    )
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- the connection ----------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                async with self._connect() as client:
                    self._client = client
                    delay = 0.5
                    await self._session(client)
            # The session's task group wraps what ended it in an ExceptionGroup: a lost connection, or a bug
            # that must not end MQTT for good either.
            except* aiomqtt.MqttError as lost:
                self.problem = str(lost.exceptions[0])
                log.warning(
                    "MQTT %s:%d: %s; reconnecting in %.1f s",
                    self._settings.host,
                    self._settings.port,
                    lost.exceptions[0],
                    delay,
                )
            except* Exception as failed:
                self.problem = f"internal error: {failed.exceptions[0]!r}"
                log.exception("MQTT session failed; reconnecting in %.1f s", delay)
            finally:
                self.connected.clear()
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._settings.reconnect_max_s)

    def _connect(self) -> aiomqtt.Client:
        s = self._settings
        tls_context = None
        if s.tls is not None:
            tls_context = ssl.create_default_context(cafile=self._path(s.tls.ca_file))
            if s.tls.cert_file is not None and s.tls.key_file is not None:
                tls_context.load_cert_chain(str(self._path(s.tls.cert_file)), self._path(s.tls.key_file))
        return aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.client_id or f"edge-{self._device_id}",
            username=s.username,
            password=self._password,
            keepalive=s.keepalive_s,
            clean_session=True,
            tls_context=tls_context,
            will=aiomqtt.Will(self.topics["status"], self._status(False), qos=s.qos, retain=True),
            timeout=10.0,
            # paho leaves Nagle on: each small QoS 1 publish then waits for a delayed ACK (~40 ms per hop)
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    def _path(self, path: Path | None) -> str | None:
        if path is None:
            return None
        return str(path if path.is_absolute() else self._base_dir / path)

    async def _session(self, client: aiomqtt.Client) -> None:
        qos = self._settings.qos
        await client.publish(self.topics["status"], self._status(True), qos=qos, retain=True)
        await client.subscribe(self.topics["trigger"], qos=qos)
        await client.subscribe(self.topics["recipe"], qos=qos)
        self.connected.set()
        self.problem = None
        log.info(
            "MQTT connected to %s:%d as %s", self._settings.host, self._settings.port, self.topics["status"]
        )

        async def send(message: Message) -> None:
            try:
                await client.publish(self.topics["results"], message.body, qos=qos, timeout=10.0)
            except aiomqtt.MqttError as exc:
                raise TransientError(str(exc)) from exc

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._outbox.deliver(CHANNEL, send, backoff_s=(0.2, 5.0)))
            tasks.create_task(self._follow_station(client))
            async for message in client.messages:  # ends with MqttError when the connection drops
                await self._handle(client, message)

    async def _follow_station(self, client: aiomqtt.Client) -> None:
        async for event in self._events.subscribe():
            if event.type == "station.activated":
                await client.publish(
                    self.topics["status"], self._status(True), qos=self._settings.qos, retain=True
                )

    def _status(self, online: bool) -> str:
        return json.dumps(
            {
                "device_id": self._device_id,
                "state": "online" if online else "offline",
                "station_id": self._line.station_id if online else None,
                "version": __version__,
                "at": datetime.now(UTC).isoformat(),
            }
        )

    # --- what the line sends ---------------------------------------------------------------------

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        if topic == self.topics["trigger"]:
            reply = await self._trigger(bytes(payload))
        elif topic == self.topics["recipe"]:
            reply = await self._recipe(bytes(payload))
        else:
            return
        reply = {"topic": topic, **reply}
        await client.publish(self.topics["replies"], json.dumps(reply), qos=self._settings.qos)

    async def _trigger(self, payload: bytes) -> dict[str, JsonValue]:
        try:
            request = MqttTrigger.model_validate_json(payload or b"{}")
        except ValidationError as exc:
            return _refused("invalid_trigger", _errors(exc), None)
        trigger = TriggerRequest(
            part_id=request.part_id, lot=request.lot, recipe=request.recipe, metadata=request.metadata
        )
        key = request.idempotency_key or request.part_id
        try:
            if key is None:
                item, replayed = await self._line.submit(trigger, "mqtt"), False
            else:
                item, replayed = await self._line.submit_once(trigger, "mqtt", key)
        except OrchestratorError as exc:
            return _refused(exc.code, exc.detail, request.request_id)
        return {"request_id": request.request_id, "ok": True, "item_id": item.item_id, "replayed": replayed}

    async def _recipe(self, payload: bytes) -> dict[str, JsonValue]:
        try:
            request = MqttRecipe.model_validate_json(payload)
        except ValidationError as exc:
            return _refused("invalid_recipe", _errors(exc), None)
        station_id = request.station_id
        if request.recipe is not None:
            station_id = self._recipes.get(request.recipe)
            if station_id is None:
                return _refused(
                    "unknown_recipe",
                    f"recipe {request.recipe} is not in the recipes table",
                    request.request_id,
                )
        assert station_id is not None
        try:
            await self._line.switch(station_id)
        except OrchestratorError as exc:
            return _refused(exc.code, exc.detail, request.request_id)
        return {"request_id": request.request_id, "ok": True, "station_id": station_id}


def _refused(code: str, detail: str, request_id: str | None) -> dict[str, JsonValue]:
    log.warning("MQTT request refused: %s: %s", code, detail)
    return {"request_id": request_id, "ok": False, "code": code, "detail": detail}


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(payload)'}: {e['msg']}"
        for e in exc.errors(include_url=False)
    )


def check_settings(settings: MqttSettings, base_dir: Path) -> None:
    """Fail at start with a clear sentence rather than reconnecting for ever on a config mistake."""
    if settings.password is not None:
        settings.password.read(base_dir)
    if settings.tls is not None:
        for path in (settings.tls.ca_file, settings.tls.cert_file, settings.tls.key_file):
            if path is not None and not (path if path.is_absolute() else base_dir / path).is_file():
                raise IntegrationError(f"mqtt.tls: {path} is not a file")
