"""The HTTP client of an upstream keeps its connections for the next calls, however many are in
flight at once (gateway/upstreams/transports.py ``http_client``): httpx2 keeps 20 by default, and
each call beyond the 20th in flight paid a new TCP connection, to the gateway and to the upstream."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from gateway.upstreams.transports import http_client

pytestmark = pytest.mark.anyio
IN_FLIGHT = 40  # calls at once, twice the library's default keep-alive pool
WAIT = 20


class CountingServer:
    """HTTP/1.1 on 127.0.0.1 that answers nothing until ``IN_FLIGHT`` requests are waiting (so that
    many connections are in use at once), and counts the connections it accepts."""

    def __init__(self) -> None:
        self.connections = 0
        self.waiting: list[asyncio.Future[None]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                released = asyncio.get_running_loop().create_future()
                self.waiting.append(released)
                if len(self.waiting) == IN_FLIGHT:
                    for each in self.waiting:
                        each.set_result(None)
                    self.waiting = []
                await released
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_every_connection_of_a_busy_upstream_is_kept_for_the_next_calls() -> None:
    counting = CountingServer()
    server = await asyncio.start_server(counting.handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp"
    with anyio.fail_after(WAIT):
        try:
            async with http_client() as http:
                for _ in range(2):
                    answers = await asyncio.gather(*(http.get(url) for _ in range(IN_FLIGHT)))
                    assert all(answer.text == "ok" for answer in answers)
        finally:
            server.close()
            await server.wait_closed()
    assert counting.connections == IN_FLIGHT, "the second round reuses the first round's connections"
