"""A request handled in the task of the HTTP POST that carries it, by the SDK's own dispatcher code.

The SDK's session dispatches a request through its read stream (the sender's contextvars copied
with it), the dispatcher's read loop and a task spawned for the handler; the handler's answer
travels back through the write stream to the POST that waits for it. For a request whose answer
``sse.GatewayTransport`` holds, the POST's task is idle all that time: a task with nothing to do
but wait for another one. Instrumented, those hops were about a quarter of the gateway's
instructions per ``tools/call`` (docs/benchmarks.md, item 23).

``Lane.handle`` runs the request in the POST's task instead, through the same two steps the
dispatcher takes: what ``JSONRPCDispatcher._dispatch_request`` does before it spawns (the transport
context, the dispatch context, the entry in the in-flight table that a ``notifications/cancelled``
finds), then ``JSONRPCDispatcher._handle_request`` itself (the server's runner and middleware, the
error mapping, the answer written through the session's write stream, a cancelled request settled
unanswered). Nothing about the request is written here; what differs is only which task runs it.
What the spawned task got from the dispatcher's task group, cancellation when the session ends,
comes from ``close()``, which the transport calls when it terminates and the session's server
calls when its loop ends.

Everything else keeps the SDK's path: ``initialize`` (the dispatcher parks its read loop for it),
notifications and responses (their order relative to each other is the read loop's), requests of
a session whose loop is not running. Should the SDK change the private parts this relies on, no
lane is made (``attach`` returns None, logged once) and every request takes the SDK's path; the
guard test (tests/test_lane.py) fails first. ``MCPGW_LANE=0`` in the gateway's environment does the
same on purpose: the SDK's path for every request, to compare or to rule the lane out.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import anyio
import anyio.abc
from mcp.server.runner import ServerRunner, aclose_shielded
from mcp.shared import jsonrpc_dispatcher as sdk
from mcp_types import INTERNAL_ERROR, ErrorData, JSONRPCRequest

from gateway.sse import transport_of

log = logging.getLogger("mcpgw")

# What the lane uses of the dispatcher, besides its public surface.
_NEEDED = ("_transport_builder", "_in_flight", "_inline_methods", "_running", "_closed", "_handle_request",
           "_write_error")
_warned = False
ENABLED = os.environ.get("MCPGW_LANE", "1") != "0"


class Lane:
    """Requests of one session, each handled in the task that received it (module docstring)."""

    __slots__ = ("_dispatcher", "_on_request", "_calls", "_closed")

    def __init__(self, dispatcher: sdk.JSONRPCDispatcher[Any], on_request: Any) -> None:
        self._dispatcher = dispatcher
        self._on_request = on_request
        self._calls: set[anyio.CancelScope] = set()  # the scopes of the requests being handled
        self._closed = False

    @staticmethod
    def attach(dispatcher: Any, on_request: Any) -> "Lane | None":
        """A lane for ``dispatcher``'s requests, or None where the SDK is not the one this was made for
        (or ``MCPGW_LANE=0``)."""
        if not ENABLED:
            return None
        if isinstance(dispatcher, sdk.JSONRPCDispatcher) and all(hasattr(dispatcher, name) for name in _NEEDED):
            return Lane(dispatcher, on_request)
        global _warned
        if not _warned:
            _warned = True
            log.warning("this mcp SDK's dispatcher is not the one the gateway's request lane was made for: "
                        "requests take the SDK's own path (correct, slower)")
        return None

    def takes(self, request: JSONRPCRequest) -> bool:
        """Whether ``request`` is handled here (else: sent down the session's read stream)."""
        dispatcher = self._dispatcher
        return (not self._closed and dispatcher._running and not dispatcher._closed
                and request.method not in dispatcher._inline_methods)

    async def handle(self, request: JSONRPCRequest, metadata: Any, scope: anyio.CancelScope | None = None) -> None:
        """Handle ``request`` (with the transport's ``metadata``) in this task, as the dispatcher would
        in a task of its own; its answer goes out through the session's write stream. ``scope`` ends
        the handling when cancelled (the request then settles as a cancelled one); the peer's cancel
        and ``close()`` cancel it too."""
        dispatcher = self._dispatcher
        try:
            transport = dispatcher._transport_builder(metadata)
        except Exception:  # as the dispatcher: only this request fails
            log.exception("transport_builder raised; rejecting request %r", request.id)
            await dispatcher._write_error(request.id, ErrorData(code=INTERNAL_ERROR,
                                                                message="transport context unavailable"))
            return
        context = sdk._JSONRPCDispatchContext(transport=transport, _dispatcher=dispatcher, _request_id=request.id,
                                              message_metadata=metadata,
                                              _progress_token=sdk.progress_token_from_params(request.params))
        if scope is None:
            scope = anyio.CancelScope()
        dispatcher._in_flight[sdk.coerce_request_id(request.id)] = sdk._InFlight(scope=scope, dctx=context)
        self._calls.add(scope)
        try:
            await dispatcher._handle_request(request, context, scope, self._on_request)
        finally:
            self._calls.discard(scope)

    def close(self) -> None:
        """The session ended: requests still being handled are cancelled (each settles as a cancelled
        request: the transport answers it "Request cancelled" where it still can; a spawned handler
        would answer "Connection closed"), and no new one is taken."""
        self._closed = True
        for call in list(self._calls):
            call.cancel()


async def serve_connection(server: Any, dispatcher: Any, *, connection: Any, lifespan_state: Any,
                           init_options: Any = None,
                           task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """The SDK's ``serve_connection`` (the session's server: its runner driving the dispatcher) that
    also gives the session's transport a ``Lane``, when the transport is a ``GatewayTransport``."""
    runner = ServerRunner(server, connection, lifespan_state, init_options=init_options)
    transport = transport_of(dispatcher)
    lane = Lane.attach(dispatcher, runner.on_request) if transport is not None else None
    if transport is not None:
        transport.lane = lane
    try:
        await dispatcher.run(runner.on_request, runner.on_notify, task_status=task_status)
    finally:
        if lane is not None:
            lane.close()
        await aclose_shielded(connection)


def install() -> None:
    """Make the SDK's session manager serve its sessions with ``serve_connection`` (idempotent): the
    stateless path calls it by the manager's name for it, a session's ``serve_loop`` by the runner's."""
    import mcp.server.runner as runner
    import mcp.server.streamable_http_manager as manager

    manager.serve_connection = runner.serve_connection = serve_connection  # type: ignore[assignment]
