"""The downstream MCP server: answers clients from the routing table and forwards to upstreams.

One low-level SDK ``Server`` per endpoint. Every handler reads the gateway's current snapshot once,
at the start, and uses only that snapshot until it answers. Lists are answered from results the
table prepared when it was built. A failure of one upstream becomes an error that names that
server: a tool result with ``isError`` for ``tools/call`` (so the model reads why), a JSON-RPC error
for the other methods. Errors the upstream itself returned pass through unchanged.
"""

from __future__ import annotations

import time
from fnmatch import fnmatchcase
from typing import Any, Awaitable, Callable, TypeVar

import anyio
import mcp_types as types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, REQUEST_TIMEOUT, SERVER_INFO_META_KEY

from gateway import __version__
from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.routing import Route
from gateway.runtime import ROOT, Gateway, Snapshot

T = TypeVar("T")
_LIST_CHANGED = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)


class _GatewayServer(Server[Any]):
    """A low-level Server that announces ``listChanged`` to handshake-era clients on every transport
    (the HTTP session manager asks for default initialization options, which would say false)."""

    def create_initialization_options(self, notification_options: NotificationOptions | None = None,
                                      *args: Any, **kwargs: Any) -> Any:
        return super().create_initialization_options(notification_options or _LIST_CHANGED, *args, **kwargs)


def build_server(gateway: Gateway, endpoint: str = ROOT) -> Server[Any]:
    """The MCP server clients of ``endpoint`` talk to."""
    settings = gateway.current.config.gateway
    name = settings.name if endpoint == ROOT else f"{settings.name}/{endpoint}"
    handlers = _Handlers(gateway, endpoint)
    return _GatewayServer(
        name,
        version=__version__,
        instructions=settings.instructions,
        on_list_tools=handlers.list_tools,
        on_call_tool=handlers.call_tool,
        on_list_prompts=handlers.list_prompts,
        on_get_prompt=handlers.get_prompt,
        on_list_resources=handlers.list_resources,
        on_list_resource_templates=handlers.list_resource_templates,
        on_read_resource=handlers.read_resource,
        on_completion=handlers.complete,
        on_subscriptions_listen=gateway.sessions.listen_handler(endpoint),
    )


class _Measure:
    """Times one request and counts it by method, server and outcome when it ends."""

    __slots__ = ("metrics", "method", "server", "outcome", "started")

    def __init__(self, metrics: Any, method: str) -> None:
        self.metrics, self.method, self.server, self.outcome = metrics, method, "", "ok"
        self.started = time.perf_counter()

    def __enter__(self) -> "_Measure":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and self.outcome == "ok":
            self.outcome = "error"
        self.metrics.observe(self.method, self.server, self.outcome, time.perf_counter() - self.started)


class _Handlers:
    def __init__(self, gateway: Gateway, endpoint: str) -> None:
        self.gateway = gateway
        self.endpoint = endpoint

    def _snapshot(self, ctx: Any) -> Snapshot:
        self.gateway.sessions.seen(self.endpoint, ctx)
        return self.gateway.current

    def _measure(self, method: str) -> _Measure:
        return _Measure(self.gateway.metrics, method)

    async def list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        with self._measure("tools/list"):
            return self._snapshot(ctx).table(self.endpoint).list_tools

    async def list_prompts(self, ctx: Any, params: Any) -> types.ListPromptsResult:
        with self._measure("prompts/list"):
            return self._snapshot(ctx).table(self.endpoint).list_prompts

    async def list_resources(self, ctx: Any, params: Any) -> types.ListResourcesResult:
        with self._measure("resources/list"):
            return self._snapshot(ctx).table(self.endpoint).list_resources

    async def list_resource_templates(self, ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
        with self._measure("resources/templates/list"):
            return self._snapshot(ctx).table(self.endpoint).list_resource_templates

    async def call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> Any:
        with self._measure("tools/call") as measure:
            snap = self._snapshot(ctx)
            table = snap.table(self.endpoint)
            route = table.tools.get(params.name)
            if route is None:
                server = table.server_for_unknown(params.name)
                upstream = snap.upstreams.get(server) if server else None
                if upstream is not None and (upstream.catalog is None or upstream.hidden):
                    measure.server, measure.outcome = upstream.name, "unavailable"
                    return _tool_error(upstream.unavailable_reason())
                measure.outcome = "unknown"
                raise MCPError(INVALID_PARAMS, f"unknown tool '{params.name}'")
            measure.server = route.server
            repeatable = route.repeatable or snap.config.servers[route.server].retry.tool_calls
            try:
                result = await _forward(snap, route, _tool_timeout(snap, route), repeatable, lambda c: c.session.call_tool(
                    route.upstream_name, params.arguments, allow_input_required=True))
            except UpstreamError as exc:
                measure.outcome = _outcome(exc)
                return _tool_error(str(exc))
            if getattr(result, "is_error", False):
                measure.outcome = "tool_error"
            return result

    async def get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> Any:
        with self._measure("prompts/get") as measure:
            snap = self._snapshot(ctx)
            route = snap.table(self.endpoint).prompts.get(params.name)
            if route is None:
                measure.outcome = "unknown"
                raise MCPError(INVALID_PARAMS, f"unknown prompt '{params.name}'")
            measure.server = route.server
            return await _forward_or_raise(snap, route, measure, lambda c: c.session.get_prompt(
                route.upstream_name, params.arguments, allow_input_required=True))

    async def read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> Any:
        with self._measure("resources/read") as measure:
            snap = self._snapshot(ctx)
            uri = str(params.uri)
            route = snap.table(self.endpoint).resolve_resource(uri)
            if route is None:
                measure.outcome = "unknown"
                raise MCPError(INVALID_PARAMS, f"unknown resource '{uri}'")
            measure.server = route.server
            return await _forward_or_raise(snap, route, measure, lambda c: c.session.read_resource(uri))

    async def complete(self, ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
        with self._measure("completion/complete") as measure:
            snap = self._snapshot(ctx)
            table = snap.table(self.endpoint)
            ref = params.ref
            if isinstance(ref, types.PromptReference):
                route = table.prompts.get(ref.name)
                upstream_ref: Any = ref.model_copy(update={"name": route.upstream_name}) if route else None
            else:
                route = table.template_route(ref.uri)
                upstream_ref = ref
            if route is None:
                measure.outcome = "unknown"
                return types.CompleteResult(completion=types.Completion(values=[]))
            measure.server = route.server
            context = params.context.arguments if params.context else None
            argument = {"name": params.argument.name, "value": params.argument.value}
            return await _forward_or_raise(snap, route, measure,
                                           lambda c: c.session.complete(upstream_ref, argument, context))


async def _forward(snap: Snapshot, route: Route, timeout: float, repeatable: bool,
                   operation: Callable[[Any], Awaitable[T]]) -> T:
    """Send to the route's upstream. A request that is safe to repeat and failed in transit (not one
    that timed out: it may have done its work) is sent again, up to ``retry.attempts`` tries."""
    upstream = snap.upstreams.get(route.server)
    if upstream is None:
        raise UpstreamUnavailable(route.server, f"server '{route.server}' is not running")
    retry = upstream.config.retry
    attempts = retry.attempts if repeatable else 1
    for attempt in range(1, attempts + 1):
        try:
            return _unstamped(await upstream.request(operation, timeout))
        except UpstreamUnavailable:
            if attempt == attempts or upstream.breaker.opened:
                raise
        await anyio.sleep(min(retry.max_backoff, retry.backoff * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")


async def _forward_or_raise(snap: Snapshot, route: Route, measure: _Measure,
                            operation: Callable[[Any], Awaitable[T]]) -> T:
    """For methods answered with a JSON-RPC error when the upstream fails (all but tools/call)."""
    try:
        return await _forward(snap, route, snap.config.servers[route.server].timeout, True, operation)
    except UpstreamTimeout as exc:
        measure.outcome = "timeout"
        raise MCPError(REQUEST_TIMEOUT, str(exc)) from exc
    except UpstreamError as exc:
        measure.outcome = "unavailable"
        raise MCPError(INTERNAL_ERROR, str(exc)) from exc


def _outcome(exc: UpstreamError) -> str:
    return "timeout" if isinstance(exc, UpstreamTimeout) else "unavailable"


def _tool_timeout(snap: Snapshot, route: Route) -> float:
    server = snap.config.servers[route.server]
    for pattern, seconds in server.tools.timeouts.items():
        if fnmatchcase(route.upstream_name, pattern):
            return seconds
    return server.timeout


def _unstamped(result: T) -> T:
    """The result without the upstream's ``serverInfo`` stamp in ``_meta``: clients are answered by
    the gateway, which stamps its own where the protocol version asks for one."""
    meta = getattr(result, "meta", None)
    if not meta or SERVER_INFO_META_KEY not in meta:
        return result
    rest = {key: value for key, value in meta.items() if key != SERVER_INFO_META_KEY}
    return result.model_copy(update={"meta": rest or None})  # type: ignore[attr-defined]


def _tool_error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)
