"""The OPC UA server a PLC runs the handshake against (asyncua): one station object, its variables, security."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from asyncua import ua
from asyncua.common.callback import CallbackService, CallbackType, ServerItemCallback
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_orchestrator.errors import IntegrationError
from edge_orchestrator.integrations import opcua_security as security
from edge_orchestrator.integrations.handshake import Handshake, Signals
from edge_orchestrator.integrations.secrets import SecretRef

log = logging.getLogger(__name__)

# a PLC writes a few values per part: this many waiting means the handshake is stuck, not a busy line
MAX_PENDING_WRITES = 10_000


class OpcUaUser(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    username: str = Field(min_length=1, max_length=64, description="Login name.")
    password: SecretRef = Field(description="Where the password is (environment variable or file).")


class OpcUaSettings(BaseModel):
    """The OPC UA server: where it listens, how its station object is named, and who may write to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["opcua"] = "opcua"
    endpoint: str = Field(
        default="opc.tcp://0.0.0.0:4840/edge/",
        description="Endpoint URL the server listens on (opc.tcp://host:port/path; 0.0.0.0 = every interface).",
    )
    application_uri: str = Field(
        default="urn:edge-orchestrator:opcua",
        min_length=1,
        max_length=256,
        description=(
            "The server's ApplicationUri; a server certificate should carry the same URI in its"
            " subjectAltName, or strict clients refuse it."
        ),
    )
    namespace_uri: str = Field(
        default="urn:edge-orchestrator:line",
        min_length=1,
        max_length=256,
        description="Namespace of the station object and its variables (clients look its index up by this URI).",
    )
    object_name: str = Field(
        default="Station",
        pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$",
        description="Browse name of the object under Objects holding the handshake variables.",
    )
    users: list[OpcUaUser] = Field(
        default_factory=list, description="Users who may read and write (the PLC), with their passwords."
    )
    allow_anonymous: bool = Field(
        default=False,
        description=(
            "Let clients without a login connect to read and browse (dashboards). They can never write."
            " Off in production: anonymous clients are refused."
        ),
    )
    certificate_file: Path | None = Field(
        default=None,
        description=(
            "The server certificate (PEM or DER), relative to the integrations file. With private_key_file it"
            " enables the Basic256Sha256 Sign and SignAndEncrypt endpoints."
        ),
    )
    private_key_file: Path | None = Field(
        default=None,
        description="The server certificate's private key (PEM or DER), relative to the integrations file.",
    )
    private_key_password: SecretRef | None = Field(
        default=None, description="Where the private key's password is, when the key file is encrypted."
    )
    allow_unsecured: bool = Field(
        default=False,
        description=(
            "Also offer the None security policy: nothing on that connection is signed or encrypted (values can"
            " be read and forged on the network). Passwords are encrypted with the server certificate when"
            " there is one and the client follows the endpoint's token policy; without a certificate they travel"
            " in clear text. Needed when there is no certificate; avoid in production."
        ),
    )
    trusted_clients_dir: Path | None = Field(
        default=None,
        description=(
            "Folder of client certificates (.der, .pem, .crt, .cer) allowed to log in by certificate, with write"
            " access; relative to the integrations file. Needs the server certificate."
        ),
    )

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, value: str) -> str:
        url = urlparse(value)
        try:
            port = url.port
        except ValueError as exc:
            raise ValueError(f"{value!r} has an invalid port") from exc
        if url.scheme != "opc.tcp" or not url.hostname or port is None:
            raise ValueError("the endpoint must look like opc.tcp://host:port/path")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSettings:
        if (self.certificate_file is None) != (self.private_key_file is None):
            raise ValueError("give certificate_file and private_key_file together")
        if self.certificate_file is None and not self.allow_unsecured:
            raise ValueError(
                "no certificate_file/private_key_file: give a server certificate, or set allow_unsecured: true"
                " to serve without encryption"
            )
        if self.trusted_clients_dir is not None and self.certificate_file is None:
            raise ValueError("trusted_clients_dir needs a server certificate (certificate logins are signed)")
        if not self.users and self.trusted_clients_dir is None:
            raise ValueError(
                "nobody could write Trigger: give at least one user (or trusted_clients_dir) for the PLC"
            )
        names = [u.username for u in self.users]
        if duplicated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"usernames must be distinct: {', '.join(duplicated)}")
        return self

    def build(self, handshake: Handshake, base_dir: Path) -> OpcUaServer:
        return OpcUaServer(self, handshake, base_dir)


@dataclasses.dataclass(frozen=True, slots=True)
class _Variable:
    name: str
    kind: ua.VariantType
    initial: bool | int | str
    plc_writes: bool
    description: str


VARIABLES = (
    _Variable("Trigger", ua.VariantType.Boolean, False, True, "PLC: rising edge starts an inspection."),
    _Variable("PartId", ua.VariantType.String, "", True, "PLC: the part's id, written before Trigger."),
    _Variable("ResultAck", ua.VariantType.Boolean, False, True, "PLC: rising edge after reading the result."),
    _Variable("RecipeIndex", ua.VariantType.Int32, 0, True, "PLC: recipe to activate; shows the active one."),
    _Variable("Ready", ua.VariantType.Boolean, False, False, "A trigger would start an inspection now."),
    _Variable("Busy", ua.VariantType.Boolean, False, False, "An inspection runs."),
    _Variable("ResultReady", ua.VariantType.Boolean, False, False, "A result is held until ResultAck."),
    _Variable("ResultOK", ua.VariantType.Boolean, False, False, "The held result is OK."),
    _Variable("ResultKO", ua.VariantType.Boolean, False, False, "The held result is KO."),
    _Variable("ResultNoDecision", ua.VariantType.Boolean, False, False, "The held result is NO_DECISION."),
    _Variable("DefectCode", ua.VariantType.Int32, 0, False, "0 OK, 1 KO, 2 NO_DECISION, >= 10 defect table."),
    _Variable("ErrorCode", ua.VariantType.Int32, 0, False, "Why the last request was refused; 0 none."),
    _Variable("Heartbeat", ua.VariantType.UInt32, 0, False, "Counts up while the device runs (watchdog)."),
    _Variable("ItemId", ua.VariantType.String, "", False, "Item id of the held (or last) result."),
    _Variable("ResultPartId", ua.VariantType.String, "", False, "PartId of the held (or last) result."),
    _Variable("ResultCount", ua.VariantType.UInt32, 0, False, "Results produced since the device started."),
)

_KINDS = {v.name: v.kind for v in VARIABLES}

# Values first, flags last (Busy, ResultReady, Ready): a PLC that sees ResultReady=1 reads a complete result.
_SHOW_ORDER: tuple[tuple[str, Callable[[Signals], bool | int | str]], ...] = (
    ("ResultOK", lambda s: s.result_ok),
    ("ResultKO", lambda s: s.result_ko),
    ("ResultNoDecision", lambda s: s.result_no_decision),
    ("DefectCode", lambda s: s.defect_code),
    ("ErrorCode", lambda s: s.error_code),
    ("ItemId", lambda s: s.item_id),
    ("ResultPartId", lambda s: s.part_id),
    ("ResultCount", lambda s: s.results),
    ("RecipeIndex", lambda s: s.recipe_index),
    ("Heartbeat", lambda s: s.heartbeat),
    ("Busy", lambda s: s.busy),
    ("ResultReady", lambda s: s.result_ready),
    ("Ready", lambda s: s.ready),
)


@dataclasses.dataclass(frozen=True, slots=True)
class _Write:
    name: str
    value: Any


class OpcUaServer:
    def __init__(self, settings: OpcUaSettings, handshake: Handshake, base_dir: Path) -> None:
        self.name = "opcua"
        self._settings = settings
        self._handshake = handshake
        self._base_dir = base_dir
        self._server: Server | None = None
        self._nodes: dict[str, ua.NodeId] = {}
        self._plc_nodes: dict[ua.NodeId, str] = {}
        self._shown: dict[str, bool | int | str] = {}
        self._writes: asyncio.Queue[_Write] = asyncio.Queue(MAX_PENDING_WRITES)
        self._consumer: asyncio.Task[None] | None = None
        # the PLC's last written values, in the order its writes were processed (edges are computed from them)
        self._trigger = False
        self._ack = False
        self._part_id = ""

    async def start(self) -> None:
        settings = self._settings
        self._shown, self._trigger, self._ack, self._part_id = {}, False, False, ""
        passwords = {
            u.username: (await asyncio.to_thread(u.password.read, self._base_dir)).encode()
            for u in settings.users
        }
        if empty := [name for name, password in passwords.items() if not password]:
            raise IntegrationError(f"opcua: the password of user {empty[0]!r} is empty")
        certificates = await asyncio.to_thread(security.trusted_clients, self._trusted_dir())
        if not passwords and not certificates:
            raise IntegrationError(
                f"opcua: nobody could write Trigger: no users and no certificate in {self._trusted_dir()}"
            )

        identity = None
        if settings.certificate_file is not None and settings.private_key_file is not None:
            key_password = settings.private_key_password
            identity = await asyncio.to_thread(
                security.server_identity,
                self._path(settings.certificate_file),
                self._path(settings.private_key_file),
                key_password.read(self._base_dir).encode() if key_password else None,
            )

        server = Server(user_manager=security.Logins(passwords, certificates, settings.allow_anonymous))
        await server.init()  # builds the standard address space (in a thread): about 1.5 s
        server.set_endpoint(settings.endpoint)
        server.set_server_name("Edge orchestrator")
        server.allow_remote_admin(False)
        await server.set_application_uri(settings.application_uri)
        policies = [ua.SecurityPolicyType.NoSecurity] if settings.allow_unsecured else []
        if identity is not None:
            certificate, key = identity
            await server.load_certificate(certificate, format="der")
            await server.load_private_key(key, format="der")
            policies += [
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ua.SecurityPolicyType.Basic256Sha256_Sign,
            ]
        server.set_security_policy(policies, permission_ruleset=security.Permissions())
        tokens: list[type] = []
        if passwords:
            tokens.append(ua.UserNameIdentityToken)
        if certificates:
            tokens.append(ua.X509IdentityToken)
        if settings.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        await self._add_station(server)

        server.subscribe_server_callback(CallbackType.PostWrite, self._on_write)
        try:
            await server.start()
        except OSError as exc:
            raise IntegrationError(
                f"opcua: cannot listen on {settings.endpoint} ({exc.strerror or exc})"
            ) from exc
        self._server = server
        self._handshake.watch(self._show)
        try:
            await self._handshake.start()
        except BaseException:
            self._server = None
            await server.stop()
            raise
        # writes that arrived meanwhile wait in the queue, in order
        self._consumer = asyncio.create_task(self._consume(), name="opcua-writes")
        log.info(
            "opcua: listening on %s (%d user(s), %d trusted certificate(s), anonymous %s, unsecured %s)",
            settings.endpoint,
            len(passwords),
            len(certificates),
            "read-only" if settings.allow_anonymous else "refused",
            "offered" if settings.allow_unsecured else "refused",
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.unsubscribe_server_callback(CallbackType.PostWrite, self._on_write)
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
            self._consumer = None
        try:
            await self._handshake.stop()
        finally:
            await server.stop()

    # --- address space -----------------------------------------------------------------------------

    async def _add_station(self, server: Server) -> None:
        settings = self._settings
        ns = await server.register_namespace(settings.namespace_uri)
        station = await server.nodes.objects.add_object(
            ua.NodeId(ua.String(settings.object_name), ua.Int16(ns)),
            ua.QualifiedName(settings.object_name, ns),
        )
        for variable in VARIABLES:
            node_id = ua.NodeId(ua.String(f"{settings.object_name}.{variable.name}"), ua.Int16(ns))
            node = await station.add_variable(
                node_id, ua.QualifiedName(variable.name, ns), variable.initial, varianttype=variable.kind
            )
            await node.write_attribute(
                AttributeIds.Description,
                ua.DataValue(
                    ua.Variant(ua.LocalizedText(variable.description), ua.VariantType.LocalizedText)
                ),
            )
            if variable.plc_writes:
                await node.set_writable()
                self._plc_nodes[node_id] = variable.name
            self._nodes[variable.name] = node_id

    # --- device → PLC ------------------------------------------------------------------------------

    async def _show(self, signals: Signals) -> None:
        server = self._server
        if server is None:
            return
        now = ua.DateTime.now(UTC)
        for name, value_of in _SHOW_ORDER:
            value = value_of(signals)
            if name in self._shown and self._shown[name] == value:
                continue  # unchanged: no write, no data change notification
            # server-side writes skip the session (no access checks, no PostWrite callback): not a PLC write
            await server.write_attribute_value(
                self._nodes[name],
                ua.DataValue(ua.Variant(value, _KINDS[name]), SourceTimestamp=now, ServerTimestamp=now),
            )
            self._shown[name] = value

    # --- PLC → device ------------------------------------------------------------------------------

    def _on_write(self, event: ServerItemCallback, dispatcher: CallbackService) -> None:
        """Runs inside the Write request: only queues, so a running inspection never delays the PLC's writes."""
        if not event.is_external:
            return
        for request, status in zip(event.request_params.NodesToWrite, event.response_params, strict=False):
            name = self._plc_nodes.get(request.NodeId)
            if name is None or request.AttributeId != AttributeIds.Value or not status.is_good():
                continue
            variant = request.Value.Value
            try:
                self._writes.put_nowait(_Write(name, variant.Value if variant is not None else None))
            except asyncio.QueueFull:
                log.error(
                    "opcua: %d writes are waiting; the write of %s is dropped", MAX_PENDING_WRITES, name
                )

    async def _consume(self) -> None:
        while True:
            write = await self._writes.get()
            try:
                await self._apply(write)
            except Exception:
                log.exception("opcua: handling the write of %s failed", write.name)

    async def _apply(self, write: _Write) -> None:
        if write.name == "PartId":
            self._part_id = write.value or ""
        elif write.name == "Trigger":
            rising, self._trigger = bool(write.value) and not self._trigger, bool(write.value)
            if rising:
                await self._handshake.trigger(self._part_id)
        elif write.name == "ResultAck":
            rising, self._ack = bool(write.value) and not self._ack, bool(write.value)
            if rising:
                await self._handshake.acknowledge()
        elif write.name == "RecipeIndex":
            self._shown.pop(
                "RecipeIndex", None
            )  # the PLC overwrote it: show the active recipe again if refused
            await self._handshake.select_recipe(int(write.value or 0))

    # --- files -------------------------------------------------------------------------------------

    def _path(self, path: Path) -> Path:
        return path if path.is_absolute() else self._base_dir / path

    def _trusted_dir(self) -> Path | None:
        folder = self._settings.trusted_clients_dir
        return None if folder is None else self._path(folder)
