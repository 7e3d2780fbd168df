"""Credentials for upstream servers protected by OAuth 2.1, on top of the SDK's client auth.

``servers.<name>.auth`` of type ``oauth_client_credentials`` uses the SDK's
``ClientCredentialsOAuthProvider``; ``oauth_refresh_token`` its ``OAuthClientProvider`` with the
tokens that ``mcpgw login`` stored in ``token_file``. Either is an ``httpx2.Auth`` on the upstream's
HTTP client: the SDK discovers the authorization server from the upstream's Protected Resource
Metadata (or ``token_url``), obtains and caches the token, refreshes it when it expired, and on a
401 from the upstream authenticates once more and retries the request. One provider lives as long
as its upstream, so reconnects reuse the token.

Token files are written whole (a temporary file renamed over the old one) with owner-only
permissions: they hold a refresh token, which is as good as the user's consent.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.exceptions import OAuthFlowError
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from gateway.config.model import ServerConfig, UpstreamAuth


class LoginNeeded(OAuthFlowError):
    """An ``oauth_refresh_token`` server has no usable token yet: ``mcpgw login`` gets one."""


class MemoryTokens:
    """Token storage for client credentials: a token is cheap to get again after a restart."""

    def __init__(self, client: OAuthClientInformationFull | None = None) -> None:
        self.tokens: OAuthToken | None = None
        self.client = client

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class FileTokens(MemoryTokens):
    """Tokens kept in ``path`` (owner-only), read at start and written on every refresh."""

    def __init__(self, path: str | Path, client: OAuthClientInformationFull | None = None) -> None:
        super().__init__(client)
        self.path = Path(path).expanduser()
        self.tokens = read_tokens(self.path)

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        write_tokens(self.path, tokens)


def read_tokens(path: Path) -> OAuthToken | None:
    try:
        return OAuthToken.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def write_tokens(path: Path, tokens: OAuthToken) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".tokens-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(tokens.model_dump_json(exclude_none=True))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class _ClientCredentials(ClientCredentialsOAuthProvider):
    """The SDK's provider, honouring a configured ``token_url`` where discovery finds none."""

    def __init__(self, *args: Any, token_url: str | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._token_url = token_url

    def _get_token_endpoint(self) -> str:
        discovered = self.context.oauth_metadata and self.context.oauth_metadata.token_endpoint
        return str(discovered) if discovered else self._token_url or super()._get_token_endpoint()


def client_metadata(auth: UpstreamAuth) -> OAuthClientMetadata:
    return OAuthClientMetadata(redirect_uris=[f"http://127.0.0.1:{auth.redirect_port}/callback"],  # type: ignore[list-item]
                               grant_types=["authorization_code", "refresh_token"], response_types=["code"],
                               token_endpoint_auth_method="client_secret_post" if auth.client_secret else "none",
                               scope=" ".join(auth.scopes) or None)


def client_information(auth: UpstreamAuth) -> OAuthClientInformationFull:
    metadata = client_metadata(auth)
    return OAuthClientInformationFull(client_id=auth.client_id or "",
                                      client_secret=auth.client_secret.reveal() if auth.client_secret else None,
                                      **metadata.model_dump(exclude_none=True))


class _RefreshingProvider(OAuthClientProvider):
    """The SDK's provider, which on a 401 starts the browser flow again even when it holds a refresh
    token; a gateway has no browser, so it refreshes first (and asks for ``mcpgw login`` only when the
    refresh token was refused too). Also the path of a restart: a stored access token that expired
    meanwhile gets a 401, and the refresh token (with the token endpoint discovered by then) a new one."""

    async def _perform_authorization(self) -> httpx2.Request:
        tokens = self.context.current_tokens
        if tokens is not None and tokens.refresh_token:
            return await self._refresh_token()
        return await super()._perform_authorization()


async def _no_browser(url: str) -> None:
    raise LoginNeeded("no usable token: run `mcpgw login SERVER CONFIG` once to authorize the gateway")


def auth_for(server: ServerConfig) -> httpx2.Auth | None:
    """The ``httpx2.Auth`` of an OAuth-protected HTTP upstream; None for the others."""
    auth = server.auth
    if auth is None or server.url is None or auth.type == "bearer":
        return None
    if auth.type == "oauth_client_credentials":
        return _ClientCredentials(server.url, MemoryTokens(), auth.client_id or "",
                                  auth.client_secret.reveal() if auth.client_secret else "",
                                  scope=" ".join(auth.scopes) or None, token_url=auth.token_url)
    storage = FileTokens(auth.token_file or "", client_information(auth))
    return _RefreshingProvider(server.url, client_metadata(auth), storage, redirect_handler=_no_browser)
