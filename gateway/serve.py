"""``mcpgw serve``: start the upstreams, then serve clients over stdio or Streamable HTTP, and on
SIGINT/SIGTERM (or stdin closing, in stdio mode) stop accepting, let in-flight work finish within
``drain_timeout``, and stop every upstream, killing stdio children's process groups."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from dataclasses import dataclass
from typing import Iterator

import anyio
import uvicorn
from mcp.server.stdio import stdio_server

from gateway.config.model import GatewayConfig
from gateway.http import build_app
from gateway.proxy import build_server
from gateway.runtime import Gateway

log = logging.getLogger("mcpgw")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What the command line may override in the config."""

    transport: str | None = None
    host: str | None = None
    port: int | None = None
    stateless: bool | None = None


async def serve(config: GatewayConfig, options: ServeOptions) -> None:
    gateway = Gateway(config)
    transport = options.transport or config.gateway.transport
    async with anyio.create_task_group() as tg:
        await tg.start(gateway.pool.run)
        await gateway.pool.wait_first_attempts()
        ready, total = gateway.pool.counts()
        log.info("%d of %d servers ready", ready, total)
        if transport == "stdio":
            tg.start_soon(_stop_on_signal, tg.cancel_scope.cancel)
            await _serve_stdio(gateway)
        else:
            await _serve_http(gateway, options, tg)
        tg.cancel_scope.cancel()


async def _serve_stdio(gateway: Gateway) -> None:
    server = build_server(gateway)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
    log.info("client closed stdin; stopping")


async def _serve_http(gateway: Gateway, options: ServeOptions, tg: anyio.abc.TaskGroup) -> None:
    http = gateway.config.gateway.http
    host = options.host or http.host
    port = http.port if options.port is None else options.port
    stateless = http.stateless if options.stateless is None else options.stateless
    app = build_app(gateway, stateless=stateless)
    sock = _bind(host, port)
    server = _Uvicorn(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                     timeout_graceful_shutdown=max(1, int(gateway.config.gateway.drain_timeout))))
    bound = sock.getsockname()[1]
    log.info("listening on http://%s:%d%s%s", host, bound, http.path, " (stateless)" if stateless else "")
    tg.start_soon(_stop_on_signal, lambda: setattr(server, "should_exit", True))
    await server.serve(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: ours stops it and then reaps the upstreams (uvicorn
    would re-raise the signal after shutdown and kill the process before children are stopped)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _stop_on_signal(stop: object) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s; shutting down", signal.Signals(signum).name)
            stop()  # type: ignore[operator]
            return
