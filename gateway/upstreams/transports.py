"""Opening the byte streams to an upstream, one function per transport, all through the SDK.

Each opener is an async context manager yielding the SDK's (read, write) stream pair; leaving it
closes the connection (for stdio: the child's whole process group is stopped, by the SDK's
function; the streams are gateway/upstreams/pipes.py, the SDK's ``stdio_client`` without its relay
tasks). A stdio child's stderr is not inherited: it is read line by line into our log under the
server's name and kept as a short tail for diagnosis, so a chatty or flooding server cannot reach
the gateway's own stderr.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator, Any

import httpx2
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT, MCP_DEFAULT_TIMEOUT

from gateway.config.model import ServerConfig
from gateway.redact import REDACT
from gateway.upstreams.pipes import stdio_pipes

log = logging.getLogger("mcpgw.upstream")

STDERR_LINE_LIMIT = 4096  # bytes of one stderr line kept; the rest of an over-long line is dropped
STDERR_TAIL_LINES = 50


class StderrTail:
    """The last lines a stdio server wrote to stderr (bounded, for status pages and errors)."""

    def __init__(self, size: int = STDERR_TAIL_LINES) -> None:
        self.lines: deque[str] = deque(maxlen=size)

    def last(self) -> str | None:
        return self.lines[-1] if self.lines else None


def connection_fingerprint(server: ServerConfig) -> str:
    """What defines the connection to ``server`` (transport, command, args, env, cwd, url, headers,
    credentials), hashed: equal fingerprints can share a live connection across a reload, while a
    change of prefix, filters, timeouts or limits keeps it. Secrets go in revealed, so a rotated token
    reconnects; the hash is never shown anywhere."""
    auth = server.auth
    spec = {
        "transport": server.transport, "protocol": server.protocol, "command": server.command, "args": list(server.args), "cwd": server.cwd,
        "env": {k: v.reveal() for k, v in server.env.items()}, "url": server.url,
        "headers": {k: v.reveal() for k, v in server.headers.items()},
        "auth": None if auth is None else {
            "type": auth.type, "token": auth.token.reveal() if auth.token else None, "client_id": auth.client_id,
            "client_secret": auth.client_secret.reveal() if auth.client_secret else None,
            "token_url": auth.token_url, "scopes": list(auth.scopes), "audience": auth.audience,
            "resource": auth.resource, "token_file": auth.token_file},
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


@asynccontextmanager
async def open_streams(server: ServerConfig, tail: StderrTail,
                       auth: httpx2.Auth | None = None) -> AsyncIterator[tuple[Any, Any]]:
    """The (read, write) streams of a new connection to ``server`` (``auth``: its OAuth credentials)."""
    if server.transport == "stdio":
        async with _stdio(server, tail) as streams:
            yield streams
    elif server.transport == "sse":
        async with sse_client(server.url or "", headers=_headers(server), timeout=server.connect_timeout,
                              sse_read_timeout=max(server.timeout, 300.0), auth=auth,
                              httpx_client_factory=http_client) as streams:
            yield streams
    else:
        timeout = httpx2.Timeout(server.connect_timeout, read=max(server.timeout, 300.0))
        async with http_client(headers=_headers(server), timeout=timeout, auth=auth, contained=True) as http:
            async with streamable_http_client(server.url or "", http_client=http) as streams:
                yield streams[0], streams[1]


EXCHANGE_FAILED = -32098  # JSON-RPC server-error range: the request's own HTTP exchange failed (below)


class _OneRequestFails(httpx2.AsyncBaseTransport):
    """A POST to a Streamable HTTP upstream whose HTTP exchange fails fails that request alone. The
    SDK's client (2.3) lets such an error escape its task group, and that ends the whole session:
    every call in flight on it failed ("closed the connection during the request") and the gateway
    connected again, for one dropped connection (python-sdk#3522; seen under 64 sessions,
    docs/benchmarks.md). Before the answer's head (the connection dropped, refused, timed out), the
    request is answered here as its own JSON-RPC error (``EXCHANGE_FAILED``, status 502; a
    notification's or an answer's failure as a bare 502, which the SDK drops). While its body is
    read, the failure becomes the ``StreamError`` the SDK already turns into that request's error.
    GET and DELETE failures the SDK handles itself."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx2.TransportError as exc:
            if request.method != "POST":
                raise
            return _failed_exchange(request, exc)
        if request.method == "POST":
            response.stream = _BodyFails(response.stream)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _BodyFails(httpx2.AsyncByteStream):
    """An answer's body whose read failing mid-way is a ``StreamError`` (see ``_OneRequestFails``)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx2.TransportError as exc:
            raise httpx2.StreamError(f"the HTTP exchange failed ({_why(exc)})") from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


def _failed_exchange(request: httpx2.Request, exc: httpx2.TransportError) -> httpx2.Response:
    try:
        message = json.loads(request.content)
    except (ValueError, httpx2.RequestNotRead):
        message = None
    request_id = message.get("id") if isinstance(message, dict) and "method" in message else None
    if request_id is None:  # a notification, or an answer to the server: nothing waits for a reply
        return httpx2.Response(502, request=request)
    error = {"code": EXCHANGE_FAILED, "message": f"the HTTP exchange failed ({_why(exc)})"}
    return httpx2.Response(502, json={"jsonrpc": "2.0", "id": request_id, "error": error}, request=request)


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# Connections to one HTTP upstream: each request in flight holds one, and every one is kept alive
# for the next. httpx2 keeps 20 by default: with more calls than that in flight, every response
# beyond the 20th closed its connection and the next request opened a new one (a TCP handshake
# and a new connection in the upstream's server, per call). Concurrency beyond this many waits
# for a connection (``connect_timeout``).
UPSTREAM_CONNECTIONS = 512


def http_client(headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None,
                auth: httpx2.Auth | None = None, contained: bool = False) -> httpx2.AsyncClient:
    """What the SDK's ``create_mcp_http_client`` makes (its timeouts, redirects left off: the SDK's
    transports follow them within the origin themselves), keeping ``UPSTREAM_CONNECTIONS``
    connections alive instead of 20; ``contained``: a failed POST exchange is that request's error
    (``_OneRequestFails``), for the SDK's Streamable HTTP client."""
    limits = httpx2.Limits(max_connections=UPSTREAM_CONNECTIONS, max_keepalive_connections=UPSTREAM_CONNECTIONS)
    kwargs: dict[str, Any] = {"timeout": timeout or httpx2.Timeout(MCP_DEFAULT_TIMEOUT, read=MCP_DEFAULT_SSE_READ_TIMEOUT)}
    if contained:
        kwargs["transport"] = _OneRequestFails(httpx2.AsyncHTTPTransport(limits=limits))
    else:
        kwargs["limits"] = limits
    if headers is not None:
        kwargs["headers"] = headers
    if auth is not None:
        kwargs["auth"] = auth
    return httpx2.AsyncClient(**kwargs)


def _headers(server: ServerConfig) -> dict[str, str]:
    headers = {name: value.reveal() for name, value in server.headers.items()}
    if server.auth is not None and server.auth.type == "bearer" and server.auth.token is not None:
        headers["Authorization"] = f"Bearer {server.auth.token.reveal()}"
    return headers


@asynccontextmanager
async def _stdio(server: ServerConfig, tail: StderrTail) -> AsyncIterator[tuple[Any, Any]]:
    params = StdioServerParameters(
        command=server.command or "",
        args=list(server.args),
        env={name: value.reveal() for name, value in server.env.items()} or None,
        cwd=server.cwd,
    )
    read_fd, write_fd = os.pipe()
    errlog = os.fdopen(write_fd, "w")
    reader = threading.Thread(target=_pump_stderr, args=(read_fd, server.name, tail),
                              name=f"stderr-{server.name}", daemon=True)
    reader.start()
    try:
        async with stdio_pipes(params, errlog) as streams:
            errlog.close()  # the child holds its own copy: EOF reaches the reader when the child exits
            yield streams
    finally:
        if not errlog.closed:
            errlog.close()


def _pump_stderr(fd: int, server: str, tail: StderrTail) -> None:
    """Thread body: log each stderr line of one child, until EOF."""
    with os.fdopen(fd, "rb") as pipe:
        while chunk := pipe.readline(STDERR_LINE_LIMIT):
            line = chunk.decode("utf-8", "replace").rstrip("\r\n")
            if not chunk.endswith(b"\n"):
                while (rest := pipe.readline(STDERR_LINE_LIMIT)) and not rest.endswith(b"\n"):
                    pass  # drop the remainder of an over-long line
            tail.lines.append(REDACT(line))  # masked once, here: the tail feeds errors, status and logs
            log.info("%s", line, extra={"server": server, "stream": "stderr"})
