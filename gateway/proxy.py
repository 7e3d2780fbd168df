"""The downstream MCP server: answers clients from the routing table and forwards to upstreams.

One low-level SDK ``Server`` per endpoint. Every handler reads the endpoint's table once, at the
start, and uses only that table until it answers. Lists are answered from results the table
prepared when it was built. A failure of one upstream becomes an error that names that server:
a tool result with ``isError`` for ``tools/call`` (so the model reads why), a JSON-RPC error for
the other methods. Errors the upstream itself returned pass through unchanged.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Awaitable, Callable, TypeVar

import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, REQUEST_TIMEOUT, SERVER_INFO_META_KEY

from gateway import __version__
from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.routing import Route, RoutingTable
from gateway.runtime import ROOT, Gateway

T = TypeVar("T")


def build_server(gateway: Gateway, endpoint: str = ROOT) -> Server[Any]:
    """The MCP server clients of ``endpoint`` talk to."""
    settings = gateway.config.gateway
    name = settings.name if endpoint == ROOT else f"{settings.name}/{endpoint}"
    handlers = _Handlers(gateway, endpoint)
    return Server(
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
    )


class _Handlers:
    def __init__(self, gateway: Gateway, endpoint: str) -> None:
        self.gateway = gateway
        self.endpoint = endpoint

    def _table(self) -> RoutingTable:
        return self.gateway.table(self.endpoint)

    async def list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        return self._table().list_tools

    async def list_prompts(self, ctx: Any, params: Any) -> types.ListPromptsResult:
        return self._table().list_prompts

    async def list_resources(self, ctx: Any, params: Any) -> types.ListResourcesResult:
        return self._table().list_resources

    async def list_resource_templates(self, ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
        return self._table().list_resource_templates

    async def call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> Any:
        table = self._table()
        route = table.tools.get(params.name)
        if route is None:
            server = table.server_for_unknown(params.name)
            upstream = self.gateway.pool.get(server) if server else None
            if upstream is not None and upstream.catalog is None:
                return _tool_error(upstream.unavailable_reason())
            raise MCPError(INVALID_PARAMS, f"unknown tool '{params.name}'")
        timeout = self._tool_timeout(route)
        try:
            return await self._forward(route, lambda c: c.session.call_tool(
                route.upstream_name, params.arguments, allow_input_required=True), timeout)
        except UpstreamError as exc:
            return _tool_error(str(exc))

    async def get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> Any:
        route = self._table().prompts.get(params.name)
        if route is None:
            raise MCPError(INVALID_PARAMS, f"unknown prompt '{params.name}'")
        return await self._forward_or_raise(route, lambda c: c.session.get_prompt(
            route.upstream_name, params.arguments, allow_input_required=True))

    async def read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> Any:
        uri = str(params.uri)
        route = self._table().resolve_resource(uri)
        if route is None:
            raise MCPError(INVALID_PARAMS, f"unknown resource '{uri}'")
        return await self._forward_or_raise(route, lambda c: c.session.read_resource(uri))

    async def complete(self, ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
        table = self._table()
        ref = params.ref
        if isinstance(ref, types.PromptReference):
            route = table.prompts.get(ref.name)
            upstream_ref: Any = ref.model_copy(update={"name": route.upstream_name}) if route else None
        else:
            route = table.template_route(ref.uri)
            upstream_ref = ref
        if route is None:
            return types.CompleteResult(completion=types.Completion(values=[]))
        context = params.context.arguments if params.context else None
        argument = {"name": params.argument.name, "value": params.argument.value}
        return await self._forward_or_raise(route, lambda c: c.session.complete(upstream_ref, argument, context))

    async def _forward(self, route: Route, operation: Callable[[Any], Awaitable[T]], timeout: float) -> T:
        upstream = self.gateway.pool.get(route.server)
        if upstream is None:
            raise UpstreamUnavailable(route.server, f"server '{route.server}' is not running")
        with self.gateway.tracked():
            return _unstamped(await upstream.request(operation, timeout))

    async def _forward_or_raise(self, route: Route, operation: Callable[[Any], Awaitable[T]]) -> T:
        try:
            return await self._forward(route, operation, self.gateway.config.servers[route.server].timeout)
        except UpstreamTimeout as exc:
            raise MCPError(REQUEST_TIMEOUT, str(exc)) from exc
        except UpstreamError as exc:
            raise MCPError(INTERNAL_ERROR, str(exc)) from exc

    def _tool_timeout(self, route: Route) -> float:
        server = self.gateway.config.servers[route.server]
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
