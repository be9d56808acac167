"""Who may do what on the OPC UA server: logins (passwords, trusted certificates, anonymous), permissions,
and the server's own certificate, read from PEM or DER files."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import USER_TYPES, SimpleRoleRuleset, User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.user_managers import UserManager
from asyncua.ua.object_ids import ObjectIds
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edge_orchestrator.errors import IntegrationError

log = logging.getLogger(__name__)

CERTIFICATE_SUFFIXES = (".der", ".pem", ".crt", ".cer")

# Anonymous clients may browse, read and subscribe; never write or call methods.
_READ_ONLY_TYPES = [
    t
    for t in USER_TYPES
    if t not in (ObjectIds.WriteRequest_Encoding_DefaultBinary, ObjectIds.CallRequest_Encoding_DefaultBinary)
]


class Permissions(SimpleRoleRuleset):
    """Users (password or trusted certificate) read and write; anonymous clients only read; nobody is Admin."""

    def __init__(self) -> None:
        self._allowed: dict[UserRole, set[ua.NodeId]] = {
            UserRole.User: {ua.NodeId(ua.Int32(t)) for t in USER_TYPES},
            UserRole.Anonymous: {ua.NodeId(ua.Int32(t)) for t in _READ_ONLY_TYPES},
        }

    def check_validity(self, user: User, action_type_id: ua.NodeId, body: Any) -> bool:
        return action_type_id in self._allowed.get(user.role, set())


class Logins(UserManager):
    """Who a session is: a user whose password matches, a trusted certificate, or (if allowed) anonymous."""

    def __init__(
        self, passwords: dict[str, bytes], certificates: dict[bytes, str], allow_anonymous: bool
    ) -> None:
        self._passwords = passwords
        self._certificates = certificates
        self._allow_anonymous = allow_anonymous

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username:
            expected = self._passwords.get(username)
            given = (password or "").encode()
            # compare against something even for an unknown name, so timing does not reveal which names exist
            match = hmac.compare_digest(given, expected if expected is not None else b"\x00" * 32)
            if expected is None or not match:
                log.warning("opcua: login refused for user %r", username[:64])
                return None
            return User(role=UserRole.User, name=username)
        # asyncua passes the verified X509 token certificate, or else the secure channel's client certificate
        name = self._certificates.get(der(certificate)) if certificate else None
        if name is not None:
            return User(role=UserRole.User, name=f"certificate:{name}")
        if self._allow_anonymous:
            return User(role=UserRole.Anonymous)
        return None


def server_identity(cert_path: Path, key_path: Path, key_password: bytes | None) -> tuple[bytes, bytes]:
    """The certificate and key as DER (asyncua guesses PEM from a file's suffix; read them ourselves)."""
    certificate = der(read_file(cert_path, "certificate"))
    if not certificate:
        raise IntegrationError(f"opcua: {cert_path} is not a PEM or DER certificate")
    data = read_file(key_path, "private key")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, key_password)
        else:
            key = serialization.load_der_private_key(data, key_password)
    except (ValueError, TypeError) as exc:
        raise IntegrationError(
            f"opcua: {key_path} is not a PEM or DER private key, or its password is wrong or missing"
        ) from exc
    der_key = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate, der_key


def trusted_clients(folder: Path | None) -> dict[bytes, str]:
    """The client certificates (DER) allowed to log in, named after their files."""
    if folder is None:
        return {}
    if not folder.is_dir():
        raise IntegrationError(f"opcua: the trusted clients folder {folder} does not exist")
    trusted: dict[bytes, str] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in CERTIFICATE_SUFFIXES or not path.is_file():
            continue
        certificate = der(read_file(path, "client certificate"))
        if not certificate:
            log.warning("opcua: %s is not a PEM or DER certificate; ignored", path)
            continue
        trusted[certificate] = path.stem
    return trusted


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IntegrationError(f"opcua: the {what} file {path} cannot be read ({exc.strerror})") from exc


def der(data: bytes | None) -> bytes:
    """One certificate as DER (the first of a chain), from PEM or DER; b"" when it is not one."""
    if not data:
        return b""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            certificate: x509.Certificate | None = x509.load_pem_x509_certificate(data)
        else:
            # also takes a DER chain (an X509 user token may carry one)
            certificate = uacrypto.x509_from_der(data)  # type: ignore[no-untyped-call]
    except ValueError:
        return b""
    return b"" if certificate is None else certificate.public_bytes(serialization.Encoding.DER)
