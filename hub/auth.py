"""Who may do what on the hub: the admin key (HUB_ADMIN_KEY, else its file, else one generated in the data
directory), device tokens (stored only as their sha256), and the dashboard's signed session cookie."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from edge_orchestrator.auth import resolve_key
from hub.errors import ConfigurationError

log = logging.getLogger(__name__)
GENERATED_KEY_FILE = "admin-key"
TOKEN_PREFIX = "hubd_"
SESSION_COOKIE = "hub_session"
SESSION_TTL_S = 12 * 3600


@dataclass(frozen=True)
class AdminKey:
    value: str
    source: str  # "environment (HUB_ADMIN_KEY)" or the file's path: safe to log and to show, unlike the key

    def matches(self, presented: str) -> bool:
        return secrets.compare_digest(presented.encode(), self.value.encode())

    def session_key(self) -> bytes:
        # Derived, so the cookie never carries anything from which the key itself could be recovered, and a
        # new admin key logs every session out.
        return hmac.new(self.value.encode(), b"hub session cookie v1", hashlib.sha256).digest()


def resolve_admin_key(env_key: str | None, key_file: Path | None, data_dir: Path) -> AdminKey:
    """The key from the environment, else from `key_file`, else from data_dir/admin-key (created mode 0600)."""
    try:
        value, source = resolve_key(env_key, key_file, data_dir / GENERATED_KEY_FILE, "HUB_ADMIN_KEY")
    except ValueError as exc:
        raise ConfigurationError(str(exc), code="admin_key_unavailable") from exc
    return AdminKey(value, source)


def issue_token() -> str:
    """A new device token (shown once; the hub keeps only `token_hash(token)`)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    # A plain sha256 is enough: tokens are 256 random bits, so there is nothing to brute-force (unlike passwords),
    # and a lookup by hash is one indexed query.
    return hashlib.sha256(token.encode()).hexdigest()


def session_cookie(key: AdminKey, now: float | None = None) -> str:
    """`<expiry>.<hmac>`: valid until the expiry (unix seconds), for whoever proved they had the admin key."""
    expires = int((now if now is not None else time.time()) + SESSION_TTL_S)
    return f"{expires}.{_sign(key, expires)}"


def session_valid(key: AdminKey, cookie: str | None, now: float | None = None) -> bool:
    if not cookie:
        return False
    expires_text, _, signature = cookie.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12:
        return False
    expires = int(expires_text)
    if not hmac.compare_digest(signature.encode(), _sign(key, expires).encode()):
        return False
    return expires > (now if now is not None else time.time())


def _sign(key: AdminKey, expires: int) -> str:
    return hmac.new(key.session_key(), str(expires).encode(), hashlib.sha256).hexdigest()


def safe_next(target: str | None) -> str:
    """Where to go after logging in: only a path of this site (never `//evil.example` or `https://...`)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 32 for c in target):
        return "/"
    return target
