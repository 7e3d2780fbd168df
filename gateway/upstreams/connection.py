"""Helpers around one SDK client connection: the streams it runs on, the end of the read side,
listing what the server offers, and saying why connecting failed."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, AsyncIterator, Awaitable, Callable

import anyio
import mcp_types as types
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CLIENT_CAPABILITIES_META_KEY

from gateway.routing import Catalog
from gateway.upstreams.transports import EXCHANGE_FAILED, StderrTail

MAX_LIST_PAGES = 100  # a paginator that never ends cannot hang a listing


class Streams:
    """A Transport (async context manager of two streams) around streams that are already open."""

    def __init__(self, streams: tuple[Any, Any]) -> None:
        self.streams = streams

    async def __aenter__(self) -> tuple[Any, Any]:
        return self.streams

    async def __aexit__(self, *exc: object) -> None:
        return None


@asynccontextmanager
async def watched(opener: Any, on_eof: Callable[[], None]) -> AsyncIterator[tuple[Any, Any]]:
    """The transport's streams, the read side watched so that its end (EOF, or the session closing
    it) calls ``on_eof``."""
    async with opener as (read, write):
        yield _Watched(read, on_eof), _Outgoing(write)


class _Watched:
    """The read side of an upstream transport, seen through as the session reads it: when it ends
    (EOF, closed or broken) or is closed, ``on_eof`` is called, once. A wrapper rather than a relay
    task, which cost every message from the upstream a hop through one more stream and task."""

    def __init__(self, stream: Any, on_eof: Callable[[], None]) -> None:
        self._stream = stream
        self._on_eof: Callable[[], None] | None = on_eof

    def _ended(self) -> None:
        on_eof, self._on_eof = self._on_eof, None
        if on_eof is not None:
            on_eof()

    async def receive(self) -> Any:
        try:
            return await self._stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._ended()
            raise

    def __aiter__(self) -> "_Watched":
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise StopAsyncIteration from None  # as the relay this replaces ended: quietly

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._ended()

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._ended()

    async def __aenter__(self) -> "_Watched":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


async def list_catalog(client: Client) -> Catalog:
    """Everything the upstream offers, following pagination, skipping what it does not support."""
    return await relist(client, Catalog(), {"tools", "prompts", "resources"})


async def relist(client: Client, catalog: Catalog, kinds: set[str]) -> Catalog:
    """``catalog`` with the lists of ``kinds`` fetched afresh (resources include templates)."""
    caps = client.server_capabilities
    session = client.session

    async def pages(fetch: Callable[[types.PaginatedRequestParams | None], Awaitable[Any]], field: str) -> tuple:
        items: list[Any] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            result = await fetch(types.PaginatedRequestParams(cursor=cursor) if cursor else None)
            items.extend(getattr(result, field))
            cursor = result.next_cursor
            if not cursor:
                break
        return tuple(items)

    changes: dict[str, tuple] = {}
    if "tools" in kinds:
        changes["tools"] = await pages(lambda p: session.list_tools(params=p), "tools") if caps.tools else ()
    if "prompts" in kinds:
        changes["prompts"] = await pages(lambda p: session.list_prompts(params=p), "prompts") if caps.prompts else ()
    if "resources" in kinds:
        changes["resources"] = (await pages(lambda p: session.list_resources(params=p), "resources")
                                if caps.resources else ())
        changes["resource_templates"] = (await pages(lambda p: session.list_resource_templates(params=p),
                                                     "resource_templates") if caps.resources else ())
    return replace(catalog, **changes)


def describe_failure(exc: BaseException, stderr: StderrTail) -> str:
    """One line saying why connecting failed, for logs, status and client errors (no secrets:
    exception texts of the SDK and httpx name URLs and commands, not headers or env values)."""
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return describe_failure(exc.exceptions[0], stderr)
    if isinstance(exc, TimeoutError):
        text = "timed out while connecting"
    elif isinstance(exc, FileNotFoundError):
        text = f"command not found: {exc.filename or exc}"
    elif isinstance(exc, MCPError):  # the gateway's own code for a failed HTTP exchange says nothing more
        text = exc.message if exc.code == EXCHANGE_FAILED else f"{exc.message} (code {exc.code})"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    last = stderr.last()
    return text + (f"; stderr: {last}" if last else "")


CALLER_CAPABILITIES = "io.mcpgw/callerCapabilities"  # request _meta key the gateway sets, renamed on the way out


class _Outgoing:
    """The write side of an upstream transport. On the 2026-07-28 wire every request declares the
    client's capabilities in ``_meta``; the SDK client fills in its own (the gateway's), so the
    gateway passes the calling client's under a key of its own and they take the place of the
    SDK's here, as the message leaves: the upstream then asks for input only what the client
    that called can give."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def send(self, item: Any) -> None:
        params = getattr(getattr(item, "message", None), "params", None)
        meta = params.get("_meta") if isinstance(params, dict) else None
        if isinstance(meta, dict) and CALLER_CAPABILITIES in meta:
            meta[CLIENT_CAPABILITIES_META_KEY] = meta.pop(CALLER_CAPABILITIES)
        await self._stream.send(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def __aenter__(self) -> "_Outgoing":
        await self._stream.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._stream.__aexit__(*exc)
