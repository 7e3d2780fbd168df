"""A real ``redis-server`` for tests, on a free loopback port, with nothing written to disk.

Import as ``from redis_server import RedisServer, redis_binary`` (``tests/`` is on ``sys.path``).

* ``redis_binary()`` is the path of ``redis-server``; without one the test is skipped, or fails
  when ``CI`` is set (CI installs it: ``.ci/run``), so a missing server never passes silently.
* ``async with RedisServer.running(password=...) as server:`` a started server; ``server.url`` is
  its ``redis://`` URL. ``await server.kill()`` stops it at once (an outage), ``await
  server.start()`` starts it again on the same port (empty: nothing is persisted).

Readiness is a PING that answers, polled under a deadline: never a fixed sleep.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Optional

import anyio
import pytest
import redis.asyncio as aioredis
from anyio.abc import Process
from upstreams import stop_process

START_TIMEOUT = 10.0  # seconds until the server answers PING
STOP_TIMEOUT = 5.0
_POLL = 0.02


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        reason = "redis-server is not on PATH (apt-get install redis-server); the shared rate-limit tests need it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def free_port() -> int:
    """A loopback port nothing listens on now (redis-server has no ``--port 0``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    def __init__(self, binary: str, port: int, password: Optional[str] = None) -> None:
        self.binary = binary
        self.port = port
        self.password = password
        self.process: Optional[Process] = None

    @classmethod
    @asynccontextmanager
    async def running(cls, password: Optional[str] = None) -> AsyncIterator["RedisServer"]:
        server = cls(redis_binary(), free_port(), password)
        await server.start()
        try:
            yield server
        finally:
            with anyio.CancelScope(shield=True):
                await server.stop()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> aioredis.Redis:
        """A client of its own, for a test to look at the keys."""
        return aioredis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2.0)

    async def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", tempfile.gettempdir(), "--logfile", ""]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = await anyio.open_process(args, stdin=-3, stdout=-3, stderr=-3)  # -3: DEVNULL
        await self._wait_until_it_answers()

    async def kill(self) -> None:
        """Stop it now (SIGKILL), the way an outage does."""
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.kill()
            with anyio.fail_after(STOP_TIMEOUT):
                await process.wait()
            await process.aclose()

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            await stop_process(process, STOP_TIMEOUT)

    async def _wait_until_it_answers(self) -> None:
        assert self.process is not None
        client = self.client()
        try:
            with anyio.fail_after(START_TIMEOUT):
                while not await _pings(client):
                    if self.process.returncode is not None:
                        raise RuntimeError(f"redis-server exited with {self.process.returncode} (port {self.port})")
                    await anyio.sleep(_POLL)
        finally:
            await client.aclose()


async def _pings(client: aioredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
        return False
