"""The Streamable HTTP front: ``/mcp`` (every server), ``/ns/<name>/mcp`` (one namespace each),
``/health``. One SDK session manager per endpoint, created once and run for the app's lifetime."""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, AsyncIterator

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.config.model import HttpConfig
from gateway.proxy import build_server
from gateway.runtime import ROOT, Gateway


def security_settings(http: HttpConfig) -> TransportSecuritySettings:
    """DNS-rebinding protection from ``allowed_hosts``/``allowed_origins`` (``name`` admits any port)."""
    hosts = [h for host in http.allowed_hosts for h in (host, host if host.endswith(":*") else f"{host}:*")]
    origins = list(http.allowed_origins) + [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def build_app(gateway: Gateway, *, stateless: bool) -> Starlette:
    http = gateway.config.gateway.http
    managers = {
        endpoint: StreamableHTTPSessionManager(
            app=build_server(gateway, endpoint),
            json_response=http.json_response,
            stateless=stateless,
            security_settings=security_settings(http),
            session_idle_timeout=http.session_idle_timeout,
            max_request_body_size=http.max_body_bytes,
        )
        for endpoint in gateway.endpoints()
    }

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for manager in managers.values():
                await stack.enter_async_context(manager.run())
            yield

    async def health(request: Request) -> JSONResponse:
        ready, total = gateway.pool.counts()
        status = "healthy" if ready == total else "degraded" if ready else "unhealthy"
        return JSONResponse({"status": status, "servers": {"connected": ready, "healthy": ready, "total": total}})

    return Starlette(
        routes=[
            Route(http.path, endpoint=_Endpoint(managers, ROOT), methods=["GET", "POST", "DELETE"]),
            Route("/ns/{namespace}" + http.path, endpoint=_Endpoint(managers, None), methods=["GET", "POST", "DELETE"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


class _Endpoint:
    """ASGI app handing a request to its endpoint's session manager (a namespace from the path)."""

    def __init__(self, managers: dict[str, StreamableHTTPSessionManager], endpoint: str | None) -> None:
        self.managers = managers
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = self.endpoint if self.endpoint is not None else scope["path_params"]["namespace"]
        manager = self.managers.get(name)
        if manager is None:
            response: Any = JSONResponse({"error": f"no namespace named '{name}'"}, status_code=404)
            await response(scope, receive, send)
            return
        await manager.handle_request(scope, receive, send)
