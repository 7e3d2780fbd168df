"""``mcpgw login SERVER CONFIG``: authorize the gateway once, in the user's browser, for an upstream
that only offers the authorization-code flow (``auth.type: oauth_refresh_token``).

The SDK's ``OAuthClientProvider`` runs the flow (discovery, PKCE, the token exchange); this
module gives it its two edges: the URL goes to the browser (or is printed, when there is none),
and a one-shot listener on ``127.0.0.1:<redirect_port>/callback`` takes the code the
authorization server redirects back with. The tokens land in ``token_file`` (owner-only), from
which ``mcpgw serve`` refreshes them thereafter.
"""

from __future__ import annotations

import sys
import webbrowser
from urllib.parse import parse_qs, urlsplit

import anyio
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import AuthorizationCodeResult

from gateway.config.model import ServerConfig
from gateway.upstreams.credentials import FileTokens, client_information, client_metadata

LOGIN_TIMEOUT = 600.0  # seconds the user has to finish in the browser
_PAGE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nmcpgw is authorized; you can close this tab.\n"
_REFUSED = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nNo code in this request.\n"


async def login(server: ServerConfig, open_browser: bool = True) -> None:
    """Run the authorization-code flow for ``server`` and store its tokens."""
    auth = server.auth
    assert auth is not None and server.url is not None
    storage = FileTokens(auth.token_file or "", client_information(auth))
    storage.tokens = None  # a login always asks anew

    async def show(url: str) -> None:
        print(f"Open this address to authorize mcpgw for '{server.name}':\n\n  {url}\n", file=sys.stderr, flush=True)
        if open_browser:
            webbrowser.open(url)

    provider = OAuthClientProvider(server.url, client_metadata(auth), storage, redirect_handler=show,
                                   callback_handler=lambda: _callback(auth.redirect_port))
    with anyio.fail_after(LOGIN_TIMEOUT):
        async with create_mcp_http_client(auth=provider) as http, \
                Client(streamable_http_client(server.url, http_client=http), mode="legacy") as client:
            await client.list_tools()  # one authorized request: the tokens are stored by now


async def _callback(port: int) -> AuthorizationCodeResult:
    """Wait for the browser to be redirected to the callback, and take the code from it."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port) as listener:
        while True:
            stream = await listener.listeners[0].accept()
            async with stream:
                request = await stream.receive(65536)
                target = request.split(b" ", 2)[1].decode("latin-1") if request.count(b" ") >= 2 else ""
                query = parse_qs(urlsplit(target).query)
                if "code" not in query:
                    await stream.send(_REFUSED)
                    continue
                await stream.send(_PAGE)
                return AuthorizationCodeResult(code=query["code"][0], state=(query.get("state") or [None])[0],
                                               iss=(query.get("iss") or [None])[0])
