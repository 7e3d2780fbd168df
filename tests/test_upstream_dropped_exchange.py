"""One request to a Streamable HTTP upstream whose connection drops before the answer fails alone:
the other calls in flight on the same upstream session are answered, and later calls need no new
session (gateway/upstreams/transports.py ``_OneRequestFails``; the SDK's client would end the whole
session, python-sdk#3522). The fault is real: a TCP relay between gateway and upstream that cuts the
connection carrying a marked request."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
from gateway_harness import gateway_stdio, write_config
from mcp.shared.exceptions import MCPError
from upstreams import http_upstream, wait_for_event

pytestmark = pytest.mark.anyio
WAIT = 60
MARK = b"cut-this-one"  # the connection is cut before the upstream sees the request
MARK_BODY = b"cut-its-answer"  # the request goes through; its answer is cut after the head


class CuttingRelay:
    """Relays TCP to the upstream; a connection whose request carries ``MARK`` is closed at once,
    before any answer (as a server that drops a kept-alive connection does), one carrying
    ``MARK_BODY`` once its answer's head and a byte of the body have passed. Counts the cuts."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.cuts = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        cut_answer = asyncio.Event()

        async def to_upstream() -> None:
            while chunk := await reader.read(65536):
                if MARK in chunk:
                    self.cuts += 1
                    return
                if MARK_BODY in chunk:
                    cut_answer.set()
                upstream_writer.write(chunk)
                await upstream_writer.drain()

        async def to_client() -> None:
            held = b""
            while chunk := await upstream_reader.read(65536):
                if cut_answer.is_set():
                    held += chunk
                    head = held.find(b"\r\n\r\n")
                    if head >= 0:
                        self.cuts += 1
                        writer.write(held[:head + 5])  # the head and one byte of the body
                        await writer.drain()
                        return
                    continue
                writer.write(chunk)
                await writer.drain()

        tasks = [asyncio.ensure_future(to_upstream()), asyncio.ensure_future(to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # a reset connection is the point
            writer.transport.abort()
            upstream_writer.transport.abort()


def _text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def test_a_dropped_request_fails_alone_and_the_session_goes_on(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    with anyio.fail_after(WAIT):
        async with http_upstream("alpha", event_log=events) as url:
            target = urlsplit(url)
            relay = CuttingRelay(target.hostname or "127.0.0.1", target.port or 80)
            server = await asyncio.start_server(relay.handle, "127.0.0.1", 0)
            relayed = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}{target.path}"
            config = write_config(tmp_path, json.dumps({"version": 1, "servers": {"alpha": {"url": relayed}}}))
            try:
                async with gateway_stdio(config) as client:
                    async with anyio.create_task_group() as tg:
                        slow: dict[str, Any] = {}

                        async def in_flight() -> None:
                            slow["result"] = await client.call_tool("alpha__slow", {"seconds": 1.0})

                        tg.start_soon(in_flight)
                        await wait_for_event(events, "STARTED slow")
                        cut = await client.call_tool("alpha__echo", {"text": MARK.decode()})
                    assert relay.cuts == 1
                    assert cut.is_error and "server 'alpha' failed this request" in _text(cut), _text(cut)
                    assert "the HTTP exchange failed" in _text(cut)
                    assert not slow["result"].is_error and _text(slow["result"]) == "done"  # not taken down with it
                    after = await client.call_tool("alpha__echo", {"text": "after"})
                    assert not after.is_error and "after" in _text(after)

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(in_flight)
                        await wait_for_event(events, "STARTED slow", count=2)
                        with pytest.raises(MCPError, match="the HTTP exchange failed"):
                            await client.call_tool("alpha__echo", {"text": MARK_BODY.decode()})
                    assert relay.cuts == 2
                    assert not slow["result"].is_error and _text(slow["result"]) == "done"
                    after = await client.call_tool("alpha__echo", {"text": "after the answer was cut"})
                    assert not after.is_error and "after the answer was cut" in _text(after)
            finally:
                server.close()
                await server.wait_closed()
    assert Path(events).read_text(encoding="utf-8").count("STARTED slow") == 2


async def test_an_unreachable_upstream_is_described_by_its_connection_error(tmp_path: Path) -> None:
    """Connecting fails the same way (the first request's exchange fails): the reason a client and
    the logs get names the connection error, not the gateway's internal error code."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed again before the gateway tries it: nothing listens
    config = write_config(tmp_path, json.dumps({"version": 1, "servers": {"down": {"url": f"http://127.0.0.1:{port}/mcp"}}}))
    with anyio.fail_after(WAIT):
        async with gateway_stdio(config) as client:
            answer = await client.call_tool("down__anything", {})
    assert answer.is_error and "ConnectError" in _text(answer), _text(answer)
    assert "-32098" not in _text(answer)
