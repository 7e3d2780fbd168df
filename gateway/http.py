"""The Streamable HTTP front: ``/mcp`` (every server), ``/ns/<name>/mcp`` (one namespace each) and
the status endpoints. One SDK session manager per endpoint, created on its first request and run
until the app stops, so a namespace added by a reload is served at once and sessions survive reloads."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import anyio
from anyio.abc import TaskGroup, TaskStatus
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import lane, sse
from gateway.calls import RATE_LIMITED
from gateway.config.model import HttpConfig
from gateway.event_store import BoundedEventStore
from gateway.http_sessions import SessionManager
from gateway.observability import health_report, servers_report
from gateway.proxy import build_server
from gateway.reloader import Reloader
from gateway.runtime import ROOT, Gateway
from gateway.security.auth import KeyRing
from gateway.security.front_door import SESSION_ID, FrontDoor, endpoints_at, principal_of
from gateway.security.limits import RateLimited
from gateway.security.oauth import WELL_KNOWN, TokenValidator, base_url_of, metadata

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
        # knob: keep-alive comments on idle streams, one process, one listener, one setting. Requests
        # POSTed are answered by the gateway's transport: JSON when they need no stream (gateway/sse.py),
        # and handled in the POST's own task (gateway/lane.py).
        sse.install(self.http.keepalive)
        lane.install()
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
                manager = SessionManager(
                    endpoint=endpoint, signing_key=self._signing_key, sessions=self.gateway.sessions,
                    app=build_server(self.gateway, endpoint), json_response=self.http.json_response,
                    stateless=self.stateless, security_settings=security_settings(self.http),
                    session_idle_timeout=self.http.session_idle_timeout, max_request_body_size=self.http.max_body_bytes,
                    event_store=None if self.stateless else BoundedEventStore(), retry_interval=SSE_RETRY_MS)
                assert self._tg is not None
                await self._tg.start(_run_manager, manager)
                self._managers[endpoint] = manager
            return self._managers[endpoint]

    def _signing_key(self) -> str | None:
        key = self.http.session_signing_key  # like every listener setting, as it was at start
        return key.reveal() if key is not None else None


async def _run_manager(manager: StreamableHTTPSessionManager, *, task_status: TaskStatus[None]) -> None:
    async with manager.run():
        task_status.started()
        await anyio.sleep_forever()


def build_app(gateway: Gateway, *, stateless: bool, reloader: Reloader | None = None) -> ASGIApp:
    managers = _Managers(gateway, stateless)
    path = managers.http.path

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with managers.running():
            yield

    root = _Endpoint(managers, ROOT)
    app = Starlette(
        routes=[
            Route(path, endpoint=root, methods=_METHODS),
            Route("/ns/{namespace}" + path, endpoint=_Endpoint(managers, None), methods=_METHODS),
            *status_routes(gateway, reloader),
            Route(WELL_KNOWN + "{endpoint:path}", _resource_metadata(gateway, path), methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    return _Guarded(gateway, _RootFirst(app, path, root), endpoints_at(path))


class _RootFirst:
    """A request for the root MCP endpoint (nearly every request) goes to it straight; the rest
    take Starlette's router and its error middleware. The router would find the same endpoint,
    after two middleware and a regex match per route: about 2% of a call's CPU."""

    def __init__(self, app: ASGIApp, path: str, root: ASGIApp) -> None:
        self.app, self.path, self.root = app, path, root
        self.methods = frozenset(_METHODS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["path"] == self.path and scope["method"] in self.methods
                and not scope.get("root_path")):
            await self.root(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _resource_metadata(gateway: Gateway, path: str) -> Callable[[Request], Any]:
    """RFC 9728 Protected Resource Metadata of an endpoint, while ``auth.oauth`` is configured."""

    async def document(request: Request) -> Response:
        auth = gateway.current.config.auth
        endpoint = request.path_params["endpoint"] or path
        if auth is None or auth.oauth is None or not (endpoint == path or endpoint.endswith(path)):
            return JSONResponse({"error": "no protected resource here"}, status_code=404)
        base = base_url_of(request.url.scheme, request.headers.get("host"), auth.oauth.resource or "http://localhost")
        return JSONResponse(metadata(auth.oauth, base + endpoint))

    return document


class _Guarded:
    """The app behind its front door, as the configuration in service says: CORS (when
    configured), then API keys (``auth``, lazy or not) with the body and JSON-RPC checks, then the
    request-wide rate limits. Built again when a reload changes any of them, so a rotated key or a
    new limit applies to the next request."""

    def __init__(self, gateway: Gateway, app: ASGIApp, endpoint_of: Callable[[str], str | None]) -> None:
        self.gateway, self.app, self.endpoint_of = gateway, app, endpoint_of
        self._config: Any = None
        self._settings: Any = None
        self._guarded: ASGIApp = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        config = self.gateway.current.config
        if config is not self._config:
            self._config = config
            settings = (config.auth, config.cors, config.gateway.http.max_body_bytes)
            if settings != self._settings:
                self._settings, self._guarded = settings, self._build(config)
        await self._guarded(scope, receive, send)

    def _build(self, config: Any) -> ASGIApp:
        auth, cors = config.auth, config.cors
        app: ASGIApp = _RequestLimits(self.app, self.gateway, self.endpoint_of)
        oauth = TokenValidator(auth.oauth) if auth is not None and auth.oauth is not None else None
        app = FrontDoor(app, keyring=KeyRing.from_config(auth), lazy=bool(auth and auth.lazy),
                        max_body_bytes=config.gateway.http.max_body_bytes, endpoint_of=self.endpoint_of, oauth=oauth)
        if cors is not None:
            app = _StrictCors(app, cors)
        return app


class _StrictCors:
    """Starlette's CORS middleware for the origins ``cors`` allows; a request from any other
    origin bypasses it and gets no CORS header at all (Starlette would still describe the allowed
    methods and headers to it), and its preflight is refused plainly."""

    def __init__(self, app: ASGIApp, cors: Any) -> None:
        self.app = app
        self.origins = frozenset(cors.allow_origins)
        self.cors = CORSMiddleware(app, allow_origins=list(cors.allow_origins), allow_methods=list(cors.allow_methods),
                                   allow_headers=list(cors.allow_headers), expose_headers=list(cors.expose_headers),
                                   allow_credentials=cors.allow_credentials, max_age=int(cors.max_age))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or "*" in self.origins or origin in self.origins:
            await self.cors(scope, receive, send)
        elif scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await PlainTextResponse("Disallowed CORS origin", status_code=400)(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class _RequestLimits:
    """The rate limits that apply to a whole HTTP request (``global`` and ``key`` rules without
    ``methods``): exceeded, the request is answered 429 with ``Retry-After`` before it is read."""

    def __init__(self, app: ASGIApp, gateway: Gateway, endpoint_of: Callable[[str], str | None]) -> None:
        self.app, self.gateway, self.endpoint_of = app, gateway, endpoint_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST" and self.endpoint_of(scope["path"]) is not None:
            principal = principal_of(scope)
            client = scope.get("client")
            key = principal.name if principal else f"address:{client[0] if client else 'unknown'}"
            try:
                await self.gateway.limits.admit_request(key=key)
            except RateLimited as exc:
                self.gateway.metrics.rate_limited.labels(exc.rule.scope).inc()
                body = {"jsonrpc": "2.0", "id": None, "error": {"code": RATE_LIMITED, "message": str(exc),
                                                               "data": exc.data}}
                await JSONResponse(body, status_code=429, headers={"Retry-After": exc.retry_after_header})(
                    scope, receive, send)
                return
        await self.app(scope, receive, send)


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
        if scope["method"] == "POST":  # how the answer will go, for the call to know who watches
            sse.RequestDisconnect.of(scope).streamed = not self.managers.http.json_response
        sessions = self.managers.gateway.sessions
        session_id = scope.setdefault("state", {})[SESSION_ID] = Headers(scope=scope).get("mcp-session-id")
        principal = principal_of(scope)
        if session_id:
            if not sessions.may_use_session(session_id, principal.name if principal else None):
                await _session_not_found(scope, receive, send)
                return
            sessions.session_active(session_id)
            await manager.handle_request(scope, receive, send)
        else:
            await manager.handle_request(scope, receive, _binding_new_session(send, sessions, principal))
        if session_id and scope["method"] == "DELETE":
            sessions.session_ended(session_id)


def _binding_new_session(send: Send, sessions: Any, principal: Any) -> Send:
    """``send`` that gives a new session to the credentials that opened it."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            session_id = Headers(raw=message.get("headers", [])).get("mcp-session-id")
            if session_id:
                sessions.bind_session(session_id, principal.name if principal else None)
        await send(message)

    return sending


async def _session_not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """What the SDK answers for a session it does not know: another key's session is not confirmed."""
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}
    await JSONResponse(body, status_code=404)(scope, receive, send)
