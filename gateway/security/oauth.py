"""OAuth 2.1 access tokens (JWT) for the gateway as a resource server, and its RFC 9728 metadata.

A token is accepted when its signature verifies with a key of the authorization server's JWKS
(asymmetric algorithms only: never ``none``, never a shared secret the JWKS could not hold), its
``iss`` and ``aud`` are the configured ones, it has not expired (30 s of clock skew allowed) and
it carries every ``required_scopes`` scope (``scope`` string or ``scp`` list). The JWKS is fetched
when first needed and again when a token names a key it does not hold (a key rotation), at most
once a minute, so tokens with made-up key ids cannot make the gateway hammer the server.

Clients find out where to get a token from the Protected Resource Metadata (RFC 9728), served at
``/.well-known/oauth-protected-resource<endpoint path>`` and named in every 401's
``WWW-Authenticate`` (``resource_metadata=``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
import jwt
from mcp.shared.auth import ProtectedResourceMetadata

from gateway.config.model import OAuthResourceServer
from gateway.security.auth import Principal

log = logging.getLogger("mcpgw.security")

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
LEEWAY = 30.0  # seconds of clock skew between the gateway and the authorization server
REFRESH_INTERVAL = 60.0  # at most one JWKS fetch a minute
FETCH_TIMEOUT = 10.0
WELL_KNOWN = "/.well-known/oauth-protected-resource"


@dataclass(frozen=True, slots=True)
class InsufficientScope:
    """A valid token without the scopes the gateway requires (403, not 401: a new token won't help
    unless it is asked for with more scopes)."""

    missing: tuple[str, ...]


class TokenValidator:
    def __init__(self, config: OAuthResourceServer) -> None:
        self.config = config
        self._keys: dict[str | None, Any] = {}
        self._fetched_at = -REFRESH_INTERVAL
        self._lock = anyio.Lock()

    async def principal(self, token: str) -> Principal | InsufficientScope | None:
        """Who the token speaks for; None if it is not a valid token for this gateway."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        key = await self._key(header.get("kid"))
        if key is None:
            return None
        try:
            claims = jwt.decode(token, key=key, algorithms=ALGORITHMS, audience=self.config.audience,
                                issuer=self.config.issuer, leeway=LEEWAY,
                                options={"require": ["exp", "iss", "aud"]})
        except jwt.PyJWTError as exc:
            log.debug("refused an access token: %s", type(exc).__name__)
            return None
        missing = tuple(s for s in self.config.required_scopes if s not in _scopes(claims))
        if missing:
            return InsufficientScope(missing)
        subject = claims.get("sub") or claims.get("client_id") or "unknown"
        return Principal(f"oauth:{subject}")

    async def _key(self, kid: str | None) -> Any:
        async with self._lock:
            key = self._pick(kid)
            if key is None and time.monotonic() - self._fetched_at >= REFRESH_INTERVAL:
                await self._fetch()
                key = self._pick(kid)
            return key

    def _pick(self, kid: str | None) -> Any:
        if kid is None and len(self._keys) == 1:  # a JWKS of one key: tokens need not name it
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            async with httpx2.AsyncClient(timeout=FETCH_TIMEOUT) as http:
                response = await http.get(self.config.jwks_url)
                response.raise_for_status()
                keys = jwt.PyJWKSet.from_dict(response.json()).keys
        except (httpx2.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("could not fetch the JWKS from %s: %s", self.config.jwks_url, type(exc).__name__)
            return
        self._keys = {k.key_id: k.key for k in keys if k.key_type in ("RSA", "EC", "OKP")}


def _scopes(claims: dict[str, Any]) -> set[str]:
    scope, scp = claims.get("scope"), claims.get("scp")
    found = set(scope.split()) if isinstance(scope, str) else set()
    if isinstance(scp, list):
        found |= {s for s in scp if isinstance(s, str)}
    elif isinstance(scp, str):
        found |= set(scp.split())
    return found


def metadata_url(base_url: str, endpoint_path: str) -> str:
    """Where the metadata of the resource at ``base_url + endpoint_path`` is (RFC 9728 §3.1)."""
    return f"{base_url.rstrip('/')}{WELL_KNOWN}{endpoint_path}"


def metadata(config: OAuthResourceServer, resource: str) -> dict[str, Any]:
    """The Protected Resource Metadata document. The SDK's model checks its shape; the URLs go out
    as configured (the model would add a trailing slash to an issuer, which clients compare
    character for character)."""
    document: dict[str, Any] = {"resource": config.resource or resource,
                                "authorization_servers": list(config.authorization_servers or (config.issuer,)),
                                "bearer_methods_supported": ["header"]}
    if config.required_scopes:
        document["scopes_supported"] = list(config.required_scopes)
    ProtectedResourceMetadata.model_validate(document)
    return document


def base_url_of(scheme: str, host: str | None, fallback: str) -> str:
    """The gateway's own base URL as the client addressed it (behind a proxy, ``resource`` in the
    configuration says what clients use)."""
    netloc = host or urlsplit(fallback).netloc
    return f"{scheme}://{netloc}"
