"""The Streamable HTTP front: ``/mcp`` (every server), ``/ns/<name>/mcp`` (one namespace each) and
the status endpoints. One SDK session manager per endpoint, created on its first request and run
until the app stops, so a namespace added by a reload is served at once and sessions survive reloads."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import anyio
from anyio.abc import TaskGroup, TaskStatus
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from gateway.config.model import HttpConfig
from gateway.event_store import BoundedEventStore
from gateway.observability import health_report, servers_report
from gateway.proxy import build_server
from gateway.reloader import Reloader
from gateway.runtime import ROOT, Gateway

SSE_RETRY_MS = 1000  # how soon a client whose SSE stream dropped should reconnect (the SSE `retry:` field)

_METHODS = ["GET", "POST", "DELETE"]


def security_settings(http: HttpConfig) -> TransportSecuritySettings:
    """DNS-rebinding protection from ``allowed_hosts``/``allowed_origins`` (``name`` admits any port)."""
    hosts = [h for host in http.allowed_hosts for h in (host, host if host.endswith(":*") else f"{host}:*")]
    origins = list(http.allowed_origins) + [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


class _Managers:
    """The session manager of each endpoint, started on first use inside the app's lifetime."""

    def __init__(self, gateway: Gateway, stateless: bool) -> None:
        self.gateway = gateway
        self.stateless = stateless
        self.http = gateway.current.config.gateway.http  # listener settings are read once, at start
        # The SDK builds its SSE responses without a ping interval, so the class default is the one
        # knob: keep-alive comments on idle streams, one process, one listener, one setting.
        EventSourceResponse.DEFAULT_PING_INTERVAL = self.http.keepalive
        self._managers: dict[str, StreamableHTTPSessionManager] = {}
        self._lock = anyio.Lock()
        self._tg: TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            yield
            tg.cancel_scope.cancel()

    async def get(self, endpoint: str) -> StreamableHTTPSessionManager | None:
        if endpoint != ROOT and endpoint not in self.gateway.current.config.namespaces:
            return None
        if (manager := self._managers.get(endpoint)) is not None:
            return manager  # every request but an endpoint's first: no lock on the request path
        async with self._lock:
            if endpoint not in self._managers:
                manager = _SessionManager(
                    app=build_server(self.gateway, endpoint), json_response=self.http.json_response,
                    stateless=self.stateless, security_settings=security_settings(self.http),
                    session_idle_timeout=self.http.session_idle_timeout, max_request_body_size=self.http.max_body_bytes,
                    event_store=None if self.stateless else BoundedEventStore(), retry_interval=SSE_RETRY_MS)
                assert self._tg is not None
                await self._tg.start(_run_manager, manager)
                self._managers[endpoint] = manager
            return self._managers[endpoint]


class _SessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, with an event store of its own for every session. The SDK hands
    its one store to every session, but a stream is named by its request id (or ``_GET_stream``),
    which repeats from session to session: one shared store could replay a client another
    session's messages. The store given to the manager only says that resumability is on."""

    def _admit_session(self, requestor: Any) -> Any:
        transport = super()._admit_session(requestor)
        if transport is not None and self.event_store is not None:
            transport._event_store = BoundedEventStore()  # the one private touch; tests/test_resumability.py guards it
        return transport


async def _run_manager(manager: StreamableHTTPSessionManager, *, task_status: TaskStatus[None]) -> None:
    async with manager.run():
        task_status.started()
        await anyio.sleep_forever()


def build_app(gateway: Gateway, *, stateless: bool, reloader: Reloader | None = None) -> Starlette:
    managers = _Managers(gateway, stateless)
    path = managers.http.path

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with managers.running():
            yield

    return Starlette(
        routes=[
            Route(path, endpoint=_Endpoint(managers, ROOT), methods=_METHODS),
            Route("/ns/{namespace}" + path, endpoint=_Endpoint(managers, None), methods=_METHODS),
            *status_routes(gateway, reloader),
        ],
        lifespan=lifespan,
    )


def status_app(gateway: Gateway, reloader: Reloader | None) -> Starlette:
    """The status endpoints alone, for ``observability.status_port`` when clients use stdio."""
    return Starlette(routes=status_routes(gateway, reloader))


def status_routes(gateway: Gateway, reloader: Reloader | None) -> list[Route]:
    """``/health``, ``/health/servers``, ``/livez``, ``/readyz`` and (unless switched off) ``/metrics``."""

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(health_report(gateway, reloader.last_rejected if reloader else None))

    async def servers(request: Request) -> JSONResponse:
        return JSONResponse(servers_report(gateway))

    async def livez(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> JSONResponse:
        ready, total = gateway.counts()
        serving = gateway.current.version > 0 and (ready > 0 or total == 0)
        return JSONResponse({"status": "ready" if serving else "not ready", "servers": {"ready": ready, "total": total}},
                            status_code=200 if serving else 503)

    async def metrics(request: Request) -> Response:
        return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/health", health, methods=["GET"]), Route("/health/servers", servers, methods=["GET"]),
              Route("/livez", livez, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
    if gateway.current.config.observability.metrics:
        routes.append(Route("/metrics", metrics, methods=["GET"]))
    return routes


class _Endpoint:
    """ASGI app handing a request to its endpoint's session manager (a namespace from the path)."""

    def __init__(self, managers: _Managers, endpoint: str | None) -> None:
        self.managers = managers
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = self.endpoint if self.endpoint is not None else scope["path_params"]["namespace"]
        manager = await self.managers.get(name)
        if manager is None:
            response: Any = JSONResponse({"error": f"no namespace named '{name}'"}, status_code=404)
            await response(scope, receive, send)
            return
        session_id = Headers(scope=scope).get("mcp-session-id")
        if session_id:
            self.managers.gateway.sessions.session_active(session_id)
        await manager.handle_request(scope, receive, send)
        if session_id and scope["method"] == "DELETE":
            self.managers.gateway.sessions.session_ended(session_id)
