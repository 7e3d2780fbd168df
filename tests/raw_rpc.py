"""Raw JSON-RPC over HTTP, for tests that must see exactly what the gateway answers (status,
headers, body) rather than what a client library makes of it."""

from __future__ import annotations

from typing import Any

import httpx2

LEGACY = "2025-11-25"
JSON_AND_SSE = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def rpc(method: str, id: int | str | None = None, **params: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        message["id"] = id
    if params:
        message["params"] = params
    return message


def initialize(id: int = 1, client_name: str = "raw") -> dict[str, Any]:
    return rpc("initialize", id, protocolVersion=LEGACY, capabilities={},
               clientInfo={"name": client_name, "version": "1"})


def call(tool: str, id: int = 2, **arguments: Any) -> dict[str, Any]:
    return rpc("tools/call", id, name=tool, arguments=arguments)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error(code: int, message: str, id: Any = None, data: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return {"jsonrpc": "2.0", "id": id, "error": body}


def without_key(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != "Authorization"}


def answer_text(response: httpx2.Response) -> str:
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert not result.get("isError"), result
    return "".join(c.get("text", "") for c in result["content"])


def refused(response: httpx2.Response, status: int, body: dict[str, Any], challenge: str | None = None) -> None:
    assert (response.status_code, response.json()) == (status, body), response.headers
    if challenge is not None:
        assert response.headers["www-authenticate"] == challenge


async def open_session(http: httpx2.AsyncClient, url: str, key: str | None = None) -> dict[str, str]:
    """A handshake-era session (initialize, then notifications/initialized); the headers that
    carry it, and the key, to every later request."""
    headers = {**JSON_AND_SSE, **(bearer(key) if key else {})}
    opened = await http.post(url, headers=headers, json=initialize())
    assert opened.status_code == 200, opened.text
    session = {**headers, "Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": LEGACY}
    initialized = await http.post(url, headers=session, json=rpc("notifications/initialized"))
    assert initialized.status_code == 202, initialized.text
    return session
