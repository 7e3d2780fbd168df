"""The downstream MCP server: answers clients from the routing table and forwards to upstreams.

One low-level SDK ``Server`` per endpoint. Every handler reads the gateway's current snapshot once,
at the start, and uses only that snapshot until it answers. Lists are answered from results the
table prepared when it was built, in wire form (``gateway.prepared``). A failure of one upstream
becomes an error that names that server: a tool result with ``isError`` for ``tools/call`` (so the
model reads why), a JSON-RPC error for the other methods. Errors the upstream itself returned pass
through unchanged.
"""

from __future__ import annotations

import logging
from fnmatch import fnmatchcase
from typing import Any, Awaitable, TypeVar

import anyio
import mcp_types as types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, REQUEST_TIMEOUT

from gateway import __version__, answer_slot, tracing, unclocked
from gateway.calls import CallRecord
from gateway.caller import Caller, connection_of
from gateway.errors import UpstreamError, UpstreamInvalid, UpstreamTimeout, UpstreamUnavailable
from gateway.forwarding import forward, interactive
from gateway.prepared import Answer, AnswerMiddleware, PreparedLists
from gateway.routing import Route
from gateway.runtime import ROOT, Gateway, Snapshot
from gateway.upstreams import wire

T = TypeVar("T")
log = logging.getLogger("mcpgw")
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
    server = _GatewayServer(
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
        on_subscriptions_listen=handlers.listen,
        get_tool_input_schema=handlers.tool_input_schema,
    )
    # Registered here rather than as constructor arguments, which warn: these methods are
    # deprecated on the 2026-07-28 wire, but handshake-era clients still use them.
    server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, handlers.subscribe)
    server.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, handlers.unsubscribe)
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, handlers.set_level)
    server.add_notification_handler("notifications/roots/list_changed", types.NotificationParams,
                                    handlers.roots_changed)
    tracing.install()
    unclocked.install()  # the SDK's request clock only where there is a timeout (gateway/unclocked.py)
    answer_slot.install()  # a sent request's answer awaited without a yield first (gateway/answer_slot.py)
    if not tracing.tracing():  # the SDK's span per message would go nowhere (gateway/tracing.py)
        server.middleware = [m for m in server.middleware if type(m).__name__ != "OpenTelemetryMiddleware"]
    # Innermost, so other middleware (the SDK's span, when tracing) sees a list answered normally.
    server.middleware.append(AnswerMiddleware(server.server_info_stamp))
    return server


class _Handlers:
    def __init__(self, gateway: Gateway, endpoint: str) -> None:
        self.gateway = gateway
        self.endpoint = endpoint

    def _snapshot(self, ctx: Any) -> Snapshot:
        self.gateway.sessions.seen(self.endpoint, ctx)
        return self.gateway.current

    def _record(self, method: str, ctx: Any) -> CallRecord:
        return CallRecord(self.gateway, method, ctx)

    async def list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        return self._listed("tools/list", ctx, await self._list("tools/list", ctx))

    async def list_prompts(self, ctx: Any, params: Any) -> types.ListPromptsResult:
        return self._listed("prompts/list", ctx, await self._list("prompts/list", ctx))

    async def list_resources(self, ctx: Any, params: Any) -> types.ListResourcesResult:
        return self._listed("resources/list", ctx, await self._list("resources/list", ctx))

    async def list_resource_templates(self, ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
        return self._listed("resources/templates/list", ctx, await self._list("resources/templates/list", ctx))

    async def _list(self, method: str, ctx: Any) -> PreparedLists:
        with self._record(method, ctx) as record:
            await record.admit()
            return self._snapshot(ctx).table(self.endpoint).prepared

    @staticmethod
    def _listed(method: str, ctx: Any, prepared: PreparedLists) -> Any:
        """The table's list in wire form, made once per table and protocol version (the SDK would
        shape it afresh for every request); raised for ``AnswerMiddleware`` to return as is."""
        raise Answer(prepared.wire(method, ctx.protocol_version))

    def tool_input_schema(self, name: str) -> Any:
        """The ``inputSchema`` of an exposed tool, from the routing table. The SDK checks a
        2026-07-28 HTTP call's ``Mcp-Param-*`` headers against it; without this it would run a whole
        ``tools/list`` through the handler (its metrics and rate limits included) for every call."""
        route = self.gateway.current.table(self.endpoint).tools.get(name)
        return route.definition.input_schema if route is not None and route.definition is not None else None

    def _check_arguments(self, snap: Snapshot, route: Route, params: types.CallToolRequestParams,
                         record: CallRecord) -> None:
        """Arguments that break the tool's ``inputSchema`` never reach the upstream (``validate_arguments``)."""
        if route.definition is None or not snap.config.servers[route.server].validate_arguments:
            return
        problem = self.gateway.arguments.check(route.definition, params.arguments)
        if problem is not None:
            record.outcome = "invalid_arguments"
            raise MCPError(INVALID_PARAMS, f"invalid arguments for tool '{params.name}': {problem}")

    def _caller(self, ctx: Any) -> Caller:
        return Caller(ctx, self.endpoint, self.gateway.sessions.level(ctx))

    async def call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> Any:
        with self._record("tools/call", ctx) as record:
            snap = self._snapshot(ctx)
            table = snap.table(self.endpoint)
            route = table.tools.get(params.name)
            if route is None:
                server = table.server_for_unknown(params.name)
                upstream = snap.upstreams.get(server) if server else None
                if upstream is not None and (upstream.catalog is None or upstream.hidden):
                    record.server, record.outcome = upstream.name, "unavailable"
                    return _tool_error(upstream.unavailable_reason())
                record.outcome = "unknown"
                why = snap.config.gateway.instructions if not snap.config.servers else None  # e.g. no plugged.in key
                raise MCPError(INVALID_PARAMS, f"unknown tool '{params.name}'" + (f": {why}" if why else ""))
            record.routed(route, params.name)
            record.arguments = params.arguments
            await record.admit(tool=params.name)
            self._check_arguments(snap, route, params, record)
            caller = self._caller(ctx)
            progress = caller.report_progress if caller.progress_token is not None else None
            repeatable = route.repeatable or snap.config.servers[route.server].retry.tool_calls
            request = wire.Request("tools/call", wire.present(name=route.upstream_name, arguments=params.arguments),
                                   progress)
            try:
                result = await interactive(self.gateway, snap, route, caller, params, _tool_timeout(snap, route),
                                            repeatable, request)
            except UpstreamError as exc:
                record.outcome = _outcome(exc)
                return _tool_error(str(exc))
            if result.get("isError") if isinstance(result, dict) else getattr(result, "is_error", False):
                record.outcome = "tool_error"
        return _answered(result)

    async def get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> Any:
        with self._record("prompts/get", ctx) as record:
            snap = self._snapshot(ctx)
            route = snap.table(self.endpoint).prompts.get(params.name)
            if route is None:
                record.outcome = "unknown"
                raise MCPError(INVALID_PARAMS, f"unknown prompt '{params.name}'")
            record.routed(route, params.name)
            record.arguments = params.arguments
            await record.admit()
            local = snap.local_prompts.get(route.server)
            if local is not None and local[0] is route.definition:
                return local[1]  # a source's custom instructions: the gateway's own prompt
            result = await _or_raise(record, interactive(
                self.gateway, snap, route, self._caller(ctx), params, snap.config.servers[route.server].timeout, True,
                wire.Request("prompts/get", wire.present(name=route.upstream_name, arguments=params.arguments))))
        return _answered(result)

    async def read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> Any:
        with self._record("resources/read", ctx) as record:
            snap = self._snapshot(ctx)
            uri, route = self._resource_route(snap, str(params.uri), record)
            await record.admit()
            result = await _or_raise(record, interactive(
                self.gateway, snap, route, self._caller(ctx), params, snap.config.servers[route.server].timeout, True,
                wire.Request("resources/read", {"uri": uri})))
        return _answered(result)

    async def subscribe(self, ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        """Subscribe the upstream for the first subscriber of a URI only; later ones share it."""
        with self._record("resources/subscribe", ctx) as record:
            snap = self._snapshot(ctx)
            uri, route = self._resource_route(snap, str(params.uri), record)
            await record.admit()
            subscriptions, subscriber = self.gateway.subscriptions, connection_of(ctx)
            if subscriber is None or not subscriptions.add(route.server, uri, subscriber):
                return types.EmptyResult()
            try:
                await _or_raise(record, _set_subscribed(snap, route, uri, True))
            except BaseException:
                subscriptions.remove(route.server, uri, subscriber)
                raise
            return types.EmptyResult()

    async def unsubscribe(self, ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        with self._record("resources/unsubscribe", ctx) as record:
            snap = self._snapshot(ctx)
            uri, route = self._resource_route(snap, str(params.uri), record)
            subscriber = connection_of(ctx)
            if subscriber is not None and self.gateway.subscriptions.remove(route.server, uri, subscriber):
                await _or_raise(record, _set_subscribed(snap, route, uri, False))
            return types.EmptyResult()

    def _resource_route(self, snap: Snapshot, uri: str, record: CallRecord) -> tuple[str, Route]:
        route = snap.table(self.endpoint).resolve_resource(uri)
        if route is None:
            record.outcome = "unknown"
            raise MCPError(INVALID_PARAMS, f"unknown resource '{uri}'", data={"uri": uri})  # as SEP-2164 asks
        record.routed(route, uri)
        return uri, route

    async def listen(self, ctx: Any, params: types.SubscriptionsListenRequestParams) -> Any:
        """``subscriptions/listen`` (2026-07-28): the stream is the SDK's; the gateway subscribes the
        upstreams to the resources it names for as long as it is open."""
        snap = self._snapshot(ctx)
        wanted = (params.notifications.resource_subscriptions or []) if params.notifications else []
        subscriber = _ListenStream()  # held by this frame: the subscriptions last as long as the stream
        routes = [(uri, route) for uri in wanted if (route := snap.table(self.endpoint).resolve_resource(uri))]
        for uri, route in routes:
            if self.gateway.subscriptions.add(route.server, uri, subscriber):
                with anyio.CancelScope(shield=True):
                    await _subscribe_quietly(snap, route, uri)
        try:
            return await self.gateway.sessions.listen_handler(self.endpoint)(ctx, params)
        finally:
            with anyio.CancelScope(shield=True):
                for uri, route in routes:
                    if self.gateway.subscriptions.remove(route.server, uri, subscriber):
                        await _subscribe_quietly(snap, route, uri, subscribed=False)

    async def set_level(self, ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        """Remember the client's level (the gateway filters per client) and ask the upstreams for
        the most verbose level any client wants, so nothing a client asked for is dropped early."""
        with self._record("logging/setLevel", ctx) as record:
            await record.admit()
            sessions = self.gateway.sessions
            sessions.set_level(ctx, params.level)
            snap = self._snapshot(ctx)
            level = sessions.most_verbose_level()
            for upstream in self._upstreams(snap):
                if upstream.logging_capable:
                    try:
                        await upstream.request(lambda c: c.session.set_logging_level(level), upstream.config.timeout)
                    except (UpstreamError, MCPError) as exc:
                        log.debug("setLevel not passed on (%s)", exc, extra={"server": upstream.name})
            return types.EmptyResult()

    async def roots_changed(self, ctx: Any, params: Any) -> None:
        """A client's roots changed: tell the upstreams it reaches (they ask again when they need to)."""
        for upstream in self._upstreams(self.gateway.current):
            if upstream.ready and not upstream.modern:  # 2026 upstreams ask for roots within each request
                try:
                    await upstream.request(lambda c: c.session.send_roots_list_changed(), upstream.config.timeout)
                except (UpstreamError, MCPError) as exc:
                    log.debug("roots/list_changed not passed on (%s)", exc, extra={"server": upstream.name})

    def _upstreams(self, snap: Snapshot) -> list[Any]:
        """The upstreams this endpoint's clients reach."""
        names = self.gateway.servers_of(self.endpoint)
        return [snap.upstreams[name] for name in names if name in snap.upstreams]

    async def complete(self, ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
        with self._record("completion/complete", ctx) as record:
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
                record.outcome = "unknown"
                return types.CompleteResult(completion=types.Completion(values=[]))
            record.routed(route, getattr(ref, "name", None) or ref.uri)
            await record.admit()
            context = params.context.arguments if params.context else None
            argument = {"name": params.argument.name, "value": params.argument.value}
            return await _or_raise(record, forward(snap, route, snap.config.servers[route.server].timeout, True,
                                                     lambda c: c.session.complete(upstream_ref, argument, context)))


def _answered(result: Any) -> Any:
    """The handler's result: one the forwarding has already put in the client's wire form (a dict)
    is raised for ``AnswerMiddleware`` to return as is (the runner would check and shape it again);
    raised outside the call's record, which would count it as an error."""
    if isinstance(result, dict):
        raise Answer(result)
    return result


async def _or_raise(record: CallRecord, forwarding: Awaitable[T]) -> T:
    """For methods answered with a JSON-RPC error when the upstream fails (all but tools/call)."""
    try:
        return await forwarding
    except UpstreamError as exc:
        record.outcome = _outcome(exc)
        raise MCPError(REQUEST_TIMEOUT if isinstance(exc, UpstreamTimeout) else INTERNAL_ERROR, str(exc)) from exc


async def _set_subscribed(snap: Snapshot, route: Route, uri: str, subscribed: bool) -> None:
    upstream = snap.upstreams.get(route.server)
    if upstream is None:
        raise UpstreamUnavailable(route.server, f"server '{route.server}' is not running")
    await upstream.set_subscribed(uri, subscribed)


async def _subscribe_quietly(snap: Snapshot, route: Route, uri: str, subscribed: bool = True) -> None:
    """For listen streams, which have no answer to carry an error: a failure is logged."""
    try:
        await _set_subscribed(snap, route, uri, subscribed)
    except (UpstreamError, MCPError) as exc:
        log.warning("could not %s %s: %s", "subscribe" if subscribed else "unsubscribe", uri, exc,
                    extra={"server": route.server})


class _ListenStream:
    """Stands for one ``subscriptions/listen`` stream among the subscribers of a resource."""

    __slots__ = ("__weakref__",)


def _outcome(exc: UpstreamError) -> str:
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    return "invalid_result" if isinstance(exc, UpstreamInvalid) else "unavailable"


def _tool_timeout(snap: Snapshot, route: Route) -> float:
    server = snap.config.servers[route.server]
    for pattern, seconds in server.tools.timeouts.items():
        if fnmatchcase(route.upstream_name, pattern):
            return seconds
    return server.timeout


def _tool_error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)
