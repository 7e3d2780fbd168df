"""Serving an ASGI app on 127.0.0.1 for a test: the fakes of services the gateway talks to (the
plugged.in App, an OAuth authorization server) run this way, on an ephemeral port."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import uvicorn

STARTUP_TIMEOUT = 10.0


class _QuietServer(uvicorn.Server):
    """uvicorn without signal handlers: Ctrl-C must stop pytest, not just this server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` for the duration of the block; yields its base URL. The socket is bound before
    uvicorn starts, so the port is known at once; the block starts once uvicorn has started."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = _QuietServer(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                         timeout_graceful_shutdown=1))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            with anyio.fail_after(STARTUP_TIMEOUT):
                while not server.started:  # uvicorn announces its start nowhere else
                    await anyio.sleep(0.01)
            try:
                yield f"http://127.0.0.1:{sock.getsockname()[1]}"
            finally:
                server.should_exit = True
    finally:
        sock.close()
