"""The OPC UA server driven by a real asyncua client over loopback: the PLC handshake, security, the real line."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import ValidationError

from edge_orchestrator.domain import Decision
from edge_orchestrator.errors import IntegrationError, QueueFullError
from edge_orchestrator.integrations.handshake import ErrorCode, Handshake
from edge_orchestrator.integrations.opcua import OpcUaSettings
from tests.conftest import AUTH, duck_station, free_port, install_station, run_orchestrator
from tests.fakes import FakeLine

NAMESPACE = "urn:edge-orchestrator:line"
PASSWORD = "plc-password-0123"
TYPES = {
    "Trigger": ua.VariantType.Boolean,
    "PartId": ua.VariantType.String,
    "ResultAck": ua.VariantType.Boolean,
    "RecipeIndex": ua.VariantType.Int32,
    "Ready": ua.VariantType.Boolean,
    "Busy": ua.VariantType.Boolean,
    "ResultReady": ua.VariantType.Boolean,
    "ResultOK": ua.VariantType.Boolean,
    "ResultKO": ua.VariantType.Boolean,
    "ResultNoDecision": ua.VariantType.Boolean,
    "DefectCode": ua.VariantType.Int32,
    "ErrorCode": ua.VariantType.Int32,
    "Heartbeat": ua.VariantType.UInt32,
    "ItemId": ua.VariantType.String,
    "ResultPartId": ua.VariantType.String,
    "ResultCount": ua.VariantType.UInt32,
}


class Plc:
    """A PLC as a real OPC UA client: writes (several values in one Write request) and polls the station."""

    def __init__(self, client: Client, nodes: dict[str, Node]) -> None:
        self.client = client
        self.nodes = nodes

    async def write(self, *values: tuple[str, object]) -> None:
        """One Write request carrying the values in this order (a name may repeat: a pulse)."""
        await self.client.write_values(
            [self.nodes[name] for name, _ in values],
            [ua.DataValue(ua.Variant(value, TYPES[name])) for name, value in values],
        )

    async def read(self, name: str) -> Any:
        return await self.nodes[name].read_value()

    async def result(self) -> dict[str, Any]:
        names = [
            "ResultReady",
            "ResultOK",
            "ResultKO",
            "ResultNoDecision",
            "DefectCode",
            "ItemId",
            "ResultPartId",
        ]
        return dict(zip(names, await self.client.read_values([self.nodes[n] for n in names]), strict=True))

    async def until(self, name: str, value: object, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while (seen := await self.read(name)) != value:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} stayed {seen!r}, expected {value!r}")
            await asyncio.sleep(0.005)

    async def pulse(self, name: str) -> None:
        await self.write((name, False), (name, True))


@asynccontextmanager
async def connect(
    url: str,
    user: str | None = "plc",
    password: str = PASSWORD,
    *,
    certificates: Path | None = None,
    login_certificate: str | None = None,
) -> AsyncIterator[Plc]:
    """A connected client; `certificates` (a folder from make_certificates) signs and encrypts the channel."""
    client = Client(url, timeout=5)
    client.application_uri = "urn:test:plc"
    if user is not None:
        client.set_user(user)
        client.set_password(password)
    if certificates is not None:
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            str(certificates / "plc.pem"),
            str(certificates / "plc-key.pem"),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
    if login_certificate is not None:
        assert certificates is not None
        await client.load_client_certificate(str(certificates / f"{login_certificate}.pem"))
        await client.load_private_key(certificates / f"{login_certificate}-key.pem")
    async with client:
        ns = await client.get_namespace_index(NAMESPACE)
        station = await client.nodes.objects.get_child(f"{ns}:Station")
        nodes = {name: await station.get_child(f"{ns}:{name}") for name in TYPES}
        yield Plc(client, nodes)


def settings(port: int, **fields: Any) -> OpcUaSettings:
    return OpcUaSettings.model_validate(
        {
            "endpoint": f"opc.tcp://127.0.0.1:{port}/edge/",
            "allow_unsecured": True,
            "users": [{"username": "plc", "password": {"env": "TEST_OPCUA_PASSWORD"}}],
            **fields,
        }
    )


@asynccontextmanager
async def device(line: FakeLine, base_dir: Path = Path("."), **fields: Any) -> AsyncIterator[str]:
    """The real Handshake on a FakeLine, shown through the OPC UA server; yields its endpoint URL."""
    port = free_port()
    handshake = Handshake(
        "opcua",
        line,
        recipes={1: "duck-line", 2: "duck-line-b"},
        defect_codes={"scratch": 10},
        heartbeat_s=0.1,
    )
    server = settings(port, **fields).build(handshake, base_dir)
    await server.start()
    try:
        yield f"opc.tcp://127.0.0.1:{port}/edge/"
    finally:
        await server.stop()


def run(coro: Any, timeout: float = 30.0) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPCUA_PASSWORD", PASSWORD)


# --- the handshake ---------------------------------------------------------------------------------


def test_a_part_goes_through_the_whole_handshake() -> None:
    async def go() -> None:
        # given a ready device and a PLC logged in
        line = FakeLine()
        async with device(line) as url, connect(url) as plc:
            await plc.until("Ready", True)
            assert await plc.read("RecipeIndex") == 1
            heartbeat = await plc.read("Heartbeat")

            # when the PLC writes PartId and Trigger in one request
            await plc.write(("PartId", "P0001"), ("Trigger", True))

            # then the device is busy with exactly one item for that part
            await plc.until("Busy", True)
            assert await plc.read("Ready") is False
            assert [item.part_id for item in line.submitted] == ["P0001"]

            # when the line decides KO, then the result is held with its values
            line.decide(line.submitted[0].item_id, Decision.KO)
            await plc.until("ResultReady", True)
            assert await plc.result() == {
                "ResultReady": True,
                "ResultOK": False,
                "ResultKO": True,
                "ResultNoDecision": False,
                "DefectCode": 1,
                "ItemId": line.submitted[0].item_id,
                "ResultPartId": "P0001",
            }
            assert await plc.read("Busy") is False
            assert await plc.read("Ready") is False
            assert await plc.read("ResultCount") == 1

            # when the PLC acknowledges, then the result bits clear and the device is ready again
            await plc.write(("Trigger", False), ("ResultAck", True))
            await plc.until("Ready", True)
            result = await plc.result()
            assert (result["ResultReady"], result["ResultOK"], result["ResultKO"], result["DefectCode"]) == (
                False,
                False,
                False,
                0,
            )

            # and a second part gets its own OK result
            await plc.write(("ResultAck", False), ("PartId", "P0002"), ("Trigger", True))
            await plc.until("Busy", True)
            line.decide(line.submitted[1].item_id, Decision.OK)
            await plc.until("ResultReady", True)
            result = await plc.result()
            assert (result["ResultOK"], result["ResultKO"], result["ResultPartId"]) == (True, False, "P0002")
            assert result["ItemId"] == line.submitted[1].item_id
            assert await plc.read("ResultCount") == 2
            assert await plc.read("ErrorCode") == ErrorCode.NONE
            # and the heartbeat counts up (every 0.1 s here)
            await plc.until("Heartbeat", heartbeat + 3, within=3)

    run(go())


def test_triggers_that_cannot_start_an_inspection_are_refused() -> None:
    async def go() -> None:
        # given an orchestrator that refuses the next trigger (too many items in flight)
        line = FakeLine()
        line.refuse = QueueFullError("too many items in flight")
        async with device(line) as url, connect(url) as plc:
            await plc.until("Ready", True)

            # when the PLC triggers, then ErrorCode 4, nothing starts and the device stays ready
            await plc.write(("PartId", "P0"), ("Trigger", True))
            await plc.until("ErrorCode", ErrorCode.QUEUE_FULL)
            await plc.until("Ready", True)
            assert line.submitted == []

            # given an inspection running
            await plc.write(("Trigger", False), ("PartId", "P1"), ("Trigger", True))
            await plc.until("Busy", True)

            # when Trigger rises again, then ErrorCode 2 and still exactly one item
            await plc.write(("Trigger", False))
            await plc.write(("Trigger", True))
            await plc.until("ErrorCode", ErrorCode.BUSY)
            assert len(line.submitted) == 1
            assert await plc.read("Busy") is True

            # given its result held for the PLC
            line.decide(line.submitted[0].item_id, Decision.OK)
            await plc.until("ResultReady", True)
            held = await plc.result()

            # when Trigger rises before ResultAck, then ErrorCode 3, nothing starts and the result is unchanged
            await plc.write(("PartId", "P2"), ("Trigger", False))
            await plc.write(("Trigger", True))
            await plc.until("ErrorCode", ErrorCode.RESULT_NOT_ACKNOWLEDGED)
            assert await plc.result() == held
            assert len(line.submitted) == 1

            # when ResultAck goes 0 → 1 → 0 inside one request (the node ends where it started)
            await plc.write(("ResultAck", True), ("ResultAck", False))

            # then that rising edge was seen: the result is acknowledged
            await plc.until("Ready", True)
            assert await plc.read("ResultReady") is False

    run(go())


def test_recipe_index_switches_the_station_or_is_written_back() -> None:
    async def go() -> None:
        line = FakeLine()
        async with device(line) as url, connect(url) as plc:
            await plc.until("Ready", True)

            # when the PLC asks for a recipe that is not in the table
            await plc.write(("RecipeIndex", 7))

            # then ErrorCode 5, RecipeIndex shows the active recipe again, and nothing switched
            await plc.until("ErrorCode", ErrorCode.UNKNOWN_RECIPE)
            await plc.until("RecipeIndex", 1)
            assert line.switches == []

            # when it asks for recipe 2, then the line switches to its station and RecipeIndex stays 2
            await plc.write(("RecipeIndex", 2))
            await plc.until("ErrorCode", ErrorCode.NONE)
            assert line.switches == ["duck-line-b"]
            assert await plc.read("RecipeIndex") == 2
            await plc.until("Ready", True)

    run(go())


# --- security --------------------------------------------------------------------------------------


def test_only_known_users_may_log_in_by_default() -> None:
    async def go() -> None:
        async with device(FakeLine()) as url:
            # when a client connects without a login, then it is refused
            with pytest.raises(UaStatusCodeError) as anonymous:
                async with connect(url, user=None):
                    pass
            assert anonymous.value.code == StatusCodes.BadIdentityTokenRejected

            # when a client gives a wrong password or an unknown name, then it is refused
            for user, password in [
                ("plc", "wrong-password"),
                ("intruder", PASSWORD),
                ("plc", ""),
                ("PLC", PASSWORD),
            ]:
                with pytest.raises(UaStatusCodeError) as refused:
                    async with connect(url, user=user, password=password):
                        pass
                assert refused.value.code == StatusCodes.BadUserAccessDenied, (user, password)

            # when the right password is given, then the client is in
            async with connect(url) as plc:
                await plc.until("Ready", True)

    run(go())


def test_anonymous_clients_may_read_but_nobody_writes_what_the_device_shows() -> None:
    async def go() -> None:
        line = FakeLine()
        async with device(line, allow_anonymous=True) as url:
            async with connect(url, user=None) as viewer:
                # when an anonymous client reads, it sees the device
                await viewer.until("Ready", True)
                # when it writes Trigger, then the server refuses and nothing starts
                with pytest.raises(UaStatusCodeError) as refused:
                    await viewer.write(("PartId", "X"), ("Trigger", True))
                assert refused.value.code == StatusCodes.BadUserAccessDenied
                await asyncio.sleep(0.1)
                assert line.submitted == []
                assert await viewer.read("Trigger") is False

            async with connect(url) as plc:
                # when even the PLC writes a variable the device shows, then the server refuses it
                for name, value in (("ResultReady", True), ("ErrorCode", 42), ("ItemId", "forged")):
                    with pytest.raises(UaStatusCodeError) as denied:
                        await plc.write((name, value))
                    assert denied.value.code in (
                        StatusCodes.BadNotWritable,
                        StatusCodes.BadUserAccessDenied,
                    )
                assert (
                    await plc.read("ResultReady"),
                    await plc.read("ErrorCode"),
                    await plc.read("ItemId"),
                ) == (
                    False,
                    0,
                    "",
                )

    run(go())


def make_certificate(folder: Path, name: str, uri: str) -> None:
    key = generate_private_key()
    certificate = generate_self_signed_app_certificate(
        key,
        name,
        {"organizationName": "Edge tests"},
        [
            x509.UniformResourceIdentifier(uri),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
    )
    (folder / f"{name}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}-key.pem").write_bytes(dump_private_key_as_pem(key))


@pytest.fixture
def certificates(tmp_path: Path) -> Path:
    """A server certificate and key, a PLC's application certificate, and two login certificates (one trusted)."""
    folder = tmp_path / "pki"
    folder.mkdir()
    make_certificate(folder, "server", "urn:edge-orchestrator:opcua")
    for name in ("plc", "robot", "stranger"):
        make_certificate(folder, name, "urn:test:plc")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    der = x509.load_pem_x509_certificate((folder / "robot.pem").read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    (trusted / "robot.der").write_bytes(der)  # DER in the trust folder, PEM for the server: both are read
    return folder


def test_sign_and_encrypt_with_a_user_and_certificate_logins(certificates: Path, tmp_path: Path) -> None:
    async def go() -> None:
        # given a production configuration: server certificate, no None policy, anonymous off
        line = FakeLine(auto=Decision.OK)
        secure = {
            "allow_unsecured": False,
            "certificate_file": "pki/server.pem",
            "private_key_file": "pki/server-key.pem",
            "trusted_clients_dir": "trusted",
        }
        async with device(line, tmp_path, **secure) as url:
            # then a client without encryption finds no endpoint it may use
            with pytest.raises(UaError, match="No matching endpoints"):
                async with connect(url):
                    pass

            # when the PLC logs in with its password over SignAndEncrypt, it runs a part
            async with connect(url, certificates=certificates) as plc:
                await plc.until("Ready", True)
                await plc.write(("PartId", "S1"), ("Trigger", True))
                await plc.until("ResultReady", True)
                assert await plc.read("ResultPartId") == "S1"
                await plc.write(("Trigger", False), ("ResultAck", True))
                await plc.until("Ready", True)

            # when a client logs in with a trusted certificate, it may write too
            async with connect(url, user=None, certificates=certificates, login_certificate="robot") as robot:
                await robot.write(("ResultAck", False), ("PartId", "S2"), ("Trigger", True))
                await robot.until("ResultPartId", "S2")

            # and a certificate that is not in the trust folder is refused
            with pytest.raises(UaStatusCodeError) as stranger:
                async with connect(url, user=None, certificates=certificates, login_certificate="stranger"):
                    pass
            assert stranger.value.code == StatusCodes.BadUserAccessDenied
        assert [item.part_id for item in line.submitted] == ["S1", "S2"]

    run(go())


# --- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"users": []}, "nobody could write"),
        ({"allow_unsecured": False}, "allow_unsecured"),
        ({"certificate_file": "server.pem"}, "together"),
        ({"endpoint": "http://127.0.0.1:4840/"}, "opc.tcp://"),
        (
            {
                "users": [
                    {"username": "plc", "password": {"env": "A"}},
                    {"username": "plc", "password": {"env": "B"}},
                ]
            },
            "distinct",
        ),
    ],
)
def test_settings_that_cannot_work_do_not_validate(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(4840, **fields)


def test_a_missing_secret_or_certificate_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        # given a password variable that is not set
        monkeypatch.delenv("TEST_OPCUA_PASSWORD")
        with pytest.raises(IntegrationError, match="TEST_OPCUA_PASSWORD is not set"):
            async with device(FakeLine(), tmp_path):
                pass
        monkeypatch.setenv("TEST_OPCUA_PASSWORD", PASSWORD)
        # given a certificate file that does not exist
        with pytest.raises(IntegrationError, match=r"missing\.pem"):
            async with device(
                FakeLine(), tmp_path, certificate_file="missing.pem", private_key_file="missing-key.pem"
            ):
                pass

    run(go())


# --- against the real orchestrator -----------------------------------------------------------------


@contextmanager
def orchestrator(tmp_path: Path, model_server: str, port: int) -> Iterator[str]:
    stations = tmp_path / "stations"
    install_station(stations, duck_station("duck-line"))
    install_station(stations, duck_station("duck-line-b"))
    integrations = tmp_path / "integrations.yaml"
    integrations.write_text(
        yaml.safe_dump(
            {
                "recipes": {1: "duck-line", 2: "duck-line-b"},
                "heartbeat_s": 0.2,
                "opcua": {
                    "endpoint": f"opc.tcp://127.0.0.1:{port}/edge/",
                    "allow_unsecured": True,
                    "users": [{"username": "plc", "password": {"env": "EDGE_TEST_PLC_PASSWORD"}}],
                },
            }
        )
    )
    with run_orchestrator(
        tmp_path / "data",
        stations,
        model_server,
        default_station="duck-line",
        EDGE_ORCHESTRATOR_INTEGRATIONS_FILE=str(integrations),
        EDGE_TEST_PLC_PASSWORD=PASSWORD,
    ) as (base, _):
        yield base


@pytest.mark.slow
def test_a_plc_runs_100_parts_through_the_real_orchestrator(tmp_path: Path, model_server: str) -> None:
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/edge/"
    parts = [f"P{n:04d}" for n in range(1, 101)]

    async def plc_cycle() -> tuple[dict[str, str], list[int]]:
        seen: dict[str, str] = {}
        refusals: list[int] = []
        async with connect(url) as plc:
            await plc.until("Ready", True, within=20)
            for n, part in enumerate(parts):
                if n == 40:
                    # Trigger pulses again inside the same request, while the inspection is already running
                    await plc.write(
                        ("PartId", part), ("Trigger", True), ("Trigger", False), ("Trigger", True)
                    )
                else:
                    await plc.write(("PartId", part), ("Trigger", True))
                await plc.until("ResultReady", True, within=10)
                result = await plc.result()
                assert result["ResultPartId"] == part
                assert [result["ResultOK"], result["ResultKO"], result["ResultNoDecision"]].count(True) == 1
                seen[part] = "OK" if result["ResultOK"] else "KO" if result["ResultKO"] else "NO_DECISION"
                if n == 40:
                    refusals.append(await plc.read("ErrorCode"))
                await plc.write(("Trigger", False))
                if n == 70:
                    # a trigger before the acknowledge: refused, the held result stays
                    await plc.write(("Trigger", True))
                    await plc.until("ErrorCode", ErrorCode.RESULT_NOT_ACKNOWLEDGED)
                    refusals.append(await plc.read("ErrorCode"))
                    assert await plc.result() == result
                    await plc.write(("Trigger", False))
                await plc.write(("ResultAck", True))
                await plc.until("Ready", True)
                await plc.write(("ResultAck", False))
            # then switch to recipe 2 between parts
            await plc.write(("RecipeIndex", 2))
            await plc.until("RecipeIndex", 2, within=20)
            await plc.until("Ready", True, within=20)
            assert await plc.read("ErrorCode") == ErrorCode.NONE
        return seen, refusals

    with orchestrator(tmp_path, model_server, port) as base:
        seen, refusals = run(plc_cycle(), timeout=45)

        assert refusals == [ErrorCode.BUSY, ErrorCode.RESULT_NOT_ACKNOWLEDGED]
        assert len(seen) == 100
        with httpx.Client(base_url=base, headers=AUTH, timeout=10) as http:
            for part in parts:
                page = http.get("/api/v1/inspections", params={"part_id": part}).json()
                assert len(page["items"]) == 1, part
                item = page["items"][0]
                assert (item["source"], item["decision"]) == ("opcua", seen[part])
            everything = http.get("/api/v1/inspections", params={"limit": 500}).json()["items"]
            assert len(everything) == 100
            active = http.get("/api/v1/stations/active").json()
            assert active["station_id"] == "duck-line-b"
