"""API keys and the rules for which JSON-RPC messages need one. Pure: no I/O, no clock.

A key is known only by the SHA-256 of its value. A key given by ``${ENV}`` is hashed once when the
key ring is built; a key given as ``key_sha256`` never exists in the gateway at all. A presented
token is hashed and compared with every configured hash, always all of them, with
``hmac.compare_digest``, so neither the bytes of a key nor which key matched shows in the timing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config.model import ApiKey, AuthConfig

ROOT_ENDPOINT = ""

LAZY_OPEN_METHODS = frozenset({
    "initialize", "notifications/initialized", "ping", "server/discover",
    "tools/list", "prompts/list", "resources/list", "resources/templates/list",
})
"""What a registry needs to describe the gateway; nothing here runs an upstream tool or reads data."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The holder of a valid key. ``name`` is for logs and metrics; the key itself is never kept."""

    name: str
    namespaces: tuple[str, ...] | None = None

    def may_use(self, endpoint: str) -> bool:
        """A key limited to namespaces reaches exactly those: the root endpoint shows every server,
        so it would undo the limit."""
        return self.namespaces is None or (endpoint != ROOT_ENDPOINT and endpoint in self.namespaces)


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The configured keys as (SHA-256 digest, principal). ``enabled`` is whether ``auth`` is
    configured at all: an ``auth`` section without API keys (OAuth only, not served yet) accepts no
    key rather than opening the gateway."""

    entries: tuple[tuple[bytes, Principal], ...] = field(default=(), repr=False)
    enabled: bool = False

    @classmethod
    def from_config(cls, auth: AuthConfig | None) -> KeyRing:
        if auth is None:
            return cls()
        return cls(tuple((_digest_of(key), Principal(key.name, key.namespaces)) for key in auth.api_keys), enabled=True)

    def __repr__(self) -> str:
        """Names only: the digest of a weak key given by reference would be worth brute-forcing."""
        return f"KeyRing(enabled={self.enabled}, keys={[p.name for _, p in self.entries]!r})"

    def identify(self, authorization: str | None) -> Principal | None:
        """The principal a ``Bearer`` token belongs to; None for no token, another scheme or an
        unknown key. Every configured digest is compared, whatever matched before."""
        token = bearer_token(authorization)
        if token is None:
            return None
        presented = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: Principal | None = None
        for digest, principal in self.entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = principal
        return found


def _digest_of(key: ApiKey) -> bytes:
    if key.key is not None:
        return hashlib.sha256(key.key.reveal().encode("utf-8", "surrogateescape")).digest()
    assert key.key_sha256 is not None, "the schema requires key or key_sha256"
    return bytes.fromhex(key.key_sha256)


def bearer_token(authorization: str | None) -> str | None:
    """The token of ``Bearer <token>`` (the scheme in any case, RFC 7235); None otherwise."""
    if authorization is None:
        return None
    parts = authorization.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    token = parts[1].strip()
    return token if token and not any(c.isspace() for c in token) else None


def needs_credentials(method: str, lazy: bool) -> bool:
    """Without lazy auth every message needs a key. With it, what lets a registry inspect the
    gateway is open, and client notifications too (they ask for no work); anything that runs a
    tool, reads data, subscribes or changes state, and any method not known here, needs a key."""
    if not lazy:
        return True
    return method not in LAZY_OPEN_METHODS and not method.startswith("notifications/")


def message_needs_credentials(message: Mapping[str, Any], lazy: bool) -> bool:
    """A request or notification by its method. A response the client sends answers a question the
    gateway asked on a call that was already let through, so with lazy auth it needs nothing more,
    like a notification; without lazy auth it needs a key like everything else."""
    method = message.get("method")
    if isinstance(method, str):
        return needs_credentials(method, lazy)
    return not lazy
