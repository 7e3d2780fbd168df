"""``mcpgw serve``: start the upstreams, then serve clients over stdio or Streamable HTTP, and on
SIGINT/SIGTERM (or stdin closing, in stdio mode) stop accepting, let in-flight work finish within
``drain_timeout``, and stop every upstream, killing stdio children's process groups."""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import anyio
import sniffio
import uvicorn
from anyio.abc import TaskStatus
from starlette.types import ASGIApp

from gateway.config.loader import LoadResult
from gateway.config.model import GatewayConfig
from gateway.http import build_app, status_app
from gateway.proxy import build_server
from gateway.reloader import Reloader
from gateway.runtime import Gateway
from gateway.sources.file import watch_config
from gateway.sources.remote import RemoteSources
from gateway.stdio_front import StdinLines, StdioFront

log = logging.getLogger("mcpgw")
BACKLOG = 2048
FLUSH_TIMEOUT = 5.0  # after draining, how long answers may take to reach stdout before we stop anyway


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What the command line may override in the config."""

    transport: str | None = None
    host: str | None = None
    port: int | None = None
    stateless: bool | None = None
    watch: bool = True


async def serve(config_path: Path | None, config: GatewayConfig, options: ServeOptions,
                load: Callable[[], LoadResult] | None = None) -> None:
    """Serve ``config`` (read from ``config_path``, or made by ``load`` when there is no file)."""
    transport = options.transport or config.gateway.transport
    sources = RemoteSources()
    await sources.refresh_all(config)  # serving begins with what the sources had (each bounded by its timeout)
    gateway = Gateway(sources.merged(config), sources)
    reloader = Reloader(gateway, config_path, load, on_applied=_settle_gc)
    async with _asyncio_known(), anyio.create_task_group() as tg:
        await tg.start(gateway.run)
        ready, total = gateway.counts()
        log.info("%d of %d servers ready", ready, total)
        _settle_gc()
        await tg.start(_reload_on_sighup, reloader)  # before anything is announced: SIGHUP's default kills
        if options.watch and config_path is not None:
            tg.start_soon(watch_config, config_path, reloader.reload)
        if config.sources:
            tg.start_soon(sources.run, lambda: gateway.current.config, reloader.reload)
        if transport == "stdio":
            if config.observability.status_port:
                tg.start_soon(_serve_status, gateway, reloader, config.observability.status_port)
            stdin = StdinLines()

            async def graceful() -> None:
                await gateway.drain(config.gateway.drain_timeout)
                stdin.close()  # EOF: the server loop ends once it has written every answer it has
                await anyio.sleep(FLUSH_TIMEOUT)
                tg.cancel_scope.cancel()

            await tg.start(_on_signals, graceful, tg.cancel_scope.cancel)
            await _serve_stdio(gateway, stdin)
        else:
            await _serve_http(gateway, reloader, options, tg)
        tg.cancel_scope.cancel()


async def _serve_stdio(gateway: Gateway, stdin: StdinLines) -> None:
    server = build_server(gateway)
    front = StdioFront(stdin)
    async with front.streams() as (read, write):
        await server.run(read, write, server.create_initialization_options())
    if not front.output_lost:
        log.info("input closed; stopping")


async def _serve_http(gateway: Gateway, reloader: Reloader, options: ServeOptions, tg: anyio.abc.TaskGroup) -> None:
    settings = gateway.current.config.gateway
    http = settings.http
    host = options.host or http.host
    port = http.port if options.port is None else options.port
    stateless = http.stateless if options.stateless is None else options.stateless
    app = build_app(gateway, stateless=stateless, reloader=reloader)
    sock = _bind(host, port)
    tls = http.tls
    server = _Uvicorn(_uvicorn_config(app, log_config=None, access_log=False, lifespan="on",
                                     timeout_graceful_shutdown=max(1, int(settings.drain_timeout)),
                                     ssl_certfile=tls.cert_file if tls else None,
                                     ssl_keyfile=tls.key_file if tls else None))
    if tls:
        server.config.load()  # reads the certificate now: a bad one stops the start with its reason
    async def stop() -> None:
        server.should_exit = True  # uvicorn stops accepting and lets open requests finish (bounded)

    await tg.start(_on_signals, stop, tg.cancel_scope.cancel)  # handled from the moment we say we listen
    bound = sock.getsockname()[1]
    log.info("listening on %s://%s:%d%s%s", "https" if tls else "http", host, bound, http.path,
             " (stateless)" if stateless else "")
    await server.serve(sockets=[sock])


async def _serve_status(gateway: Gateway, reloader: Reloader, port: int) -> None:
    """In stdio mode, the status endpoints on a loopback side port (stdout carries MCP)."""
    sock = _bind("127.0.0.1", port)
    log.info("status on http://127.0.0.1:%d/health", sock.getsockname()[1])
    server = _Uvicorn(_uvicorn_config(status_app(gateway, reloader), log_config=None, access_log=False,
                                      lifespan="off"))
    await server.serve(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # every answer waits for the client's delayed ACK (~40 ms a call).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)  # now, not when uvicorn starts: "listening on" must be true when it is logged
    sock.set_inheritable(True)
    return sock


@contextlib.asynccontextmanager
async def _asyncio_known() -> AsyncIterator[None]:
    """anyio asks sniffio which event loop runs for nearly everything it does (events, cancel
    scopes, streams: about 30 times per forwarded call). anyio.run answers it once, in a context
    variable, but uvicorn starts every request's task in an empty context, so each of those asks
    fell through to sniffio's probing by ``asyncio.current_task()``. The gateway's thread runs one
    asyncio loop while it serves: it says so the way sniffio reads first, restored when serving ends."""
    before, sniffio.thread_local.name = sniffio.thread_local.name, "asyncio"
    try:
        yield
    finally:
        sniffio.thread_local.name = before


GC_THRESHOLDS = (10_000, 50, 100)  # CPython's are (700, 10, 10)


def _settle_gc() -> None:
    """What lives from startup on (modules, models, the routing table, upstream sessions) is frozen
    out of the garbage collector's sight, and young objects are collected less often. Measured under
    load with CPython's defaults, a full collection walked those startup objects every ~1,300 calls
    for up to 136 ms (the p99), and collections took about a tenth of the CPU per call; with these
    settings, about a fiftieth (docs/benchmarks.md). Garbage in cycles still goes, just in larger
    batches: at most ``GC_THRESHOLDS[0]`` young container objects wait for a collection.

    Called again once a reload is in service: what the old configuration held (frozen, so never
    collected if it became garbage in a cycle) is unfrozen and collected, and the new steady state
    frozen; one full collection per reload."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _uvicorn_config(app: ASGIApp, **options: Any) -> uvicorn.Config:
    """uvicorn on its C parser (httptools, llhttp) when installed: h11 in pure Python was about 15%
    of the CPU per call (docs/benchmarks.md). ``_HttpTools`` is uvicorn's protocol for it with two
    changes: header values trimmed (llhttp leaves the whitespace after a value in it, which RFC 9110
    says is not part of it, and h11 strips it: the SDK would compare ``Mcp-Name: x `` with the
    body's ``x`` and refuse the call), and one write per answer (``_OneWritePerStep``)."""
    if _HttpTools is None:
        return uvicorn.Config(app, http="h11", **options)
    return uvicorn.Config(app, http=_HttpTools, **options)


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: uvicorn on h11
    _HttpTools: type | None = None
else:

    class _HttpTools(HttpToolsProtocol):  # type: ignore[no-redef]
        """uvicorn's httptools protocol (see ``_uvicorn_config``): each header value without
        surrounding spaces and tabs as h11 gives it, trimmed as the parser hands it over (a
        middleware looking over every request's headers for blanks cost 1% of a call's
        instructions), and the connection's writes gathered per step of the event loop."""

        def connection_made(self, transport: Any) -> None:
            super().connection_made(_OneWritePerStep(transport, self.loop))

        def on_response_complete(self) -> None:
            """The answer is whole: it leaves now, not at the end of the step, after whatever the
            app still does once it has sent it (its clean-up, the unwinding of its middleware)."""
            self.transport.flush()
            super().on_response_complete()

        def on_header(self, name: bytes, value: bytes) -> None:  # uvicorn's own, the value trimmed
            name = name.lower()
            value = value.strip(b" \t")
            if name == b"expect" and value.lower() == b"100-continue":
                self.expect_100_continue = True
            self.headers.append((name, value))


class _OneWritePerStep:
    """A connection's transport whose writes made in one step of the event loop leave together, in
    one system call, at the end of the step. uvicorn writes an answer's status line and headers
    when the app starts the response and its body when the app sends it: two sends, two TCP
    segments, and a client woken for the headers alone, for every JSON answer the gateway gives.
    Gathered, the gateway's CPU per call fell by 7-12% and the benchmark's calls per second rose
    by 16-38% (docs/benchmarks.md, item 30), though counted in instructions it costs 0.8% more.
    An SSE event or a keep-alive comment, alone in its step, leaves at the end of that step.
    Closing sends what is held first."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: Any, loop: Any) -> None:
        self._transport, self._loop = transport, loop
        self._held: list[bytes] | None = None  # a list: many writes in one step are joined once

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = [bytes(data)]
            self._loop.call_soon(self.flush)
        else:
            self._held.append(bytes(data))

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    # What uvicorn calls per request, forwarded without a lookup through ``__getattr__``.
    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: ours stops it and then reaps the upstreams (uvicorn
    would re-raise the signal after shutdown and kill the process before children are stopped)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _reload_on_sighup(reloader: Reloader, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    with anyio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            await reloader.reload("SIGHUP")


async def _on_signals(graceful: Callable[[], Awaitable[None]], force: Callable[[], None], *,
                      task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """First SIGINT/SIGTERM: stop gracefully. A second one: stop now (upstreams are still reaped)."""
    stopping = False
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async with anyio.create_task_group() as tg:
            async for signum in signals:
                name = signal.Signals(signum).name
                if stopping:
                    log.warning("received %s again; stopping now", name)
                    force()
                    return
                stopping = True
                log.info("received %s; shutting down (send it again to stop at once)", name)
                tg.start_soon(graceful)
