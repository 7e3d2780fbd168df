"""Upstream servers protected by OAuth 2.1, behind the real gateway.

A local authorization server and a protected fixture upstream on 127.0.0.1
(``tests/oauth_servers.py``). Users get: with client credentials the gateway obtains a token and
calls go through; a revoked token costs one re-authentication, not a failed call; refused client
credentials show the server as ``unauthorized`` (with the reason) while other servers keep
working; ``mcpgw login`` runs the authorization-code flow once (the test acts as the browser),
stores the tokens owner-only, and the gateway serves with them; a secret given as ``${file:...}``
is read and never shown.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from gateway_harness import MCPGW, eventually, gateway_http, write_config
from mcp import Client
from oauth_servers import protected_upstream, running_auth_server
from upstreams import fixture_args

pytestmark = pytest.mark.anyio
WAIT = 60
SECRET = "mcpgw-secret"


def text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def config(tmp_path: Path, url: str, auth: dict[str, Any]) -> Path:
    (tmp_path / "client_secret").write_text(SECRET + "\n")
    servers = {"web": {"url": url, "auth": auth},
               "local": {"command": sys.executable, "args": fixture_args("local", "stdio")}}
    return write_config(tmp_path, json.dumps({"version": 1, "servers": servers}))


def client_credentials(tmp_path: Path, client_id: str = "mcpgw") -> dict[str, Any]:
    return {"type": "oauth_client_credentials", "client_id": client_id,
            "client_secret": f"${{file:{tmp_path / 'client_secret'}}}", "scopes": ["mcp"]}


async def servers_status(gw: Any) -> dict[str, dict[str, Any]]:
    async with httpx2.AsyncClient() as http:
        return {s["name"]: s for s in (await http.get(gw.base + "/health/servers")).json()["servers"]}


async def test_client_credentials_are_exchanged_and_a_revoked_token_costs_one_reauthentication(tmp_path: Path) -> None:
    async with running_auth_server() as issuer, protected_upstream(issuer.issuer) as url:
        path = config(tmp_path, url, client_credentials(tmp_path))
        with anyio.fail_after(WAIT):
            async with gateway_http(path) as gw, Client(gw.url) as client:
                assert text(await client.call_tool("web__token_subject", {})) == "mcpgw"
                assert issuer.granted("client_credentials") == 1
                issuer.revoke_all_access_tokens()
                assert text(await client.call_tool("web__echo", {"text": "still in"})) == "still in"
                assert issuer.granted("client_credentials") == 2
                log = gw.stderr()
    assert SECRET not in log


async def test_refused_client_credentials_are_unauthorized_and_the_rest_keeps_working(tmp_path: Path) -> None:
    async with running_auth_server() as issuer, protected_upstream(issuer.issuer) as url:
        path = config(tmp_path, url, client_credentials(tmp_path, client_id="stranger"))
        with anyio.fail_after(WAIT):
            async with gateway_http(path) as gw, Client(gw.url) as client:
                web = (await servers_status(gw))["web"]
                assert web["state"] == "unauthorized" and web["last_error"]
                assert text(await client.call_tool("local__whoami", {})) == "local"
                refused = await client.call_tool("web__echo", {"text": "x"})
                assert refused.is_error and "web" in text(refused)
                shown = json.dumps(web) + gw.stderr()
    assert SECRET not in shown


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_login_runs_the_browser_flow_once_and_the_gateway_refreshes_from_the_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens" / "web.json"
    async with running_auth_server(clients={"mcpgw": None}) as issuer, protected_upstream(issuer.issuer) as url:
        auth = {"type": "oauth_refresh_token", "client_id": "mcpgw", "token_file": str(token_file),
                "redirect_port": _free_port(), "scopes": ["mcp"]}
        path = config(tmp_path, url, auth)
        with anyio.fail_after(WAIT):
            process = await anyio.open_process([MCPGW, "login", "web", str(path), "--no-browser"],
                                               env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)})
            assert process.stderr is not None
            printed = b""
            while b"http" not in printed.split(b"authorize mcpgw", 1)[-1]:
                printed += await process.stderr.receive()
            address = next(w for w in printed.decode().split() if w.startswith("http://127.0.0.1") and "authorize?" in w)
            async with httpx2.AsyncClient(follow_redirects=True) as browser:  # the user, in their browser
                landing = await browser.get(address)
            assert "authorized" in landing.text
            assert await process.wait() == 0
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            assert issuer.granted("authorization_code") == 1
            async with gateway_http(path) as gw, Client(gw.url) as client:
                assert text(await client.call_tool("web__echo", {"text": "with the stored token"})) \
                    == "with the stored token"
                stored = json.loads(token_file.read_text())
                issuer.revoke_all_access_tokens()
                assert text(await client.call_tool("web__echo", {"text": "refreshed"})) == "refreshed"
                assert issuer.granted("refresh_token") == 1
                assert json.loads(token_file.read_text())["refresh_token"] != stored["refresh_token"]  # rotated, kept
                issuer.expire_all_refresh_tokens()
                issuer.revoke_all_access_tokens()
                refused = await client.call_tool("web__echo", {"text": "x"})
                assert refused.is_error
                web = await eventually(lambda: _unauthorized_web(gw))
                assert "login" in web["last_error"]


async def _unauthorized_web(gw: Any) -> dict[str, Any] | None:
    web = (await servers_status(gw))["web"]
    return web if web["state"] == "unauthorized" else None


async def test_an_expired_token_is_replaced_without_a_failed_call(tmp_path: Path) -> None:
    async with running_auth_server() as issuer, protected_upstream(issuer.issuer) as url:
        issuer.next_token_lifetime = -10  # the first token the gateway gets has already expired
        path = config(tmp_path, url, client_credentials(tmp_path))
        with anyio.fail_after(WAIT):
            async with gateway_http(path) as gw, Client(gw.url) as client:
                assert text(await client.call_tool("web__echo", {"text": "fresh"})) == "fresh"
                assert (await servers_status(gw))["web"]["state"] == "ready"
    assert issuer.granted("client_credentials") >= 2
