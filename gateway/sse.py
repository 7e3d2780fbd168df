"""The answer to a handshake-era POST: plain JSON when nothing needs a stream, SSE when something does.

The SDK's transport answers every request POSTed in a handshake-era session (the client accepting
both) with an SSE stream: a task group holding the response, ``sse_starlette.EventSourceResponse``
(four tasks: the stream, a ping, a shutdown listener, a disconnect listener) and a writer task
forwarding the request's messages from one memory stream to another, for what is almost always one
event. Profiled, that was the largest part of the gateway's CPU per call over HTTP
(docs/benchmarks.md, items 2 and 6).
The 2026-07-28 path of the same SDK already does better: it holds the answer back for a while and,
if the handler finishes without emitting anything, answers ``application/json``
(``_streamable_http_modern.handle_modern_request``).

``GatewayTransport`` is the SDK's ``StreamableHTTPServerTransport`` with that done for the
handshake era: a request is dispatched to the session exactly as the SDK dispatches it (the same
metadata, a per-request stream registered where the SDK registers its own, fed by the messages'
senders: ``_DirectRoutes``), and the POST's own task reads that stream for up to ``DEFER``. Is the first message the request's result, the answer is that
result as ``application/json`` (the spec lets the server pick either; every client must read both).
Anything else (progress, a log, a question to the client, an error), or nothing by ``DEFER``, and
the answer becomes the SSE stream it always was: priming event first (minted before dispatch, as
the SDK does, so a dropped stream can be resumed with ``Last-Event-ID``), each event stored and
shaped by the SDK's own ``_create_event_data``, keep-alive comments while idle. What is not a
request in SSE mode (notifications, responses, anything the SDK refuses, ``json_response``) takes
the SDK's own path, unchanged. ``install()`` makes every transport the SDK's session manager
creates one of these (the one module attribute the gateway replaces, guarded by
tests/test_sse_answers.py).

The front door has already parsed the body (``MESSAGE`` in the scope's state); it is validated
from that, not parsed a second time. A request still unanswered after ``WATCH_AFTER`` gets one task
watching for the client leaving (most are answered sooner, and cost no task at all); whoever must
know (the forwarding of the call, ``RequestDisconnect.on_leave``) is told by it, so a call needs no
watcher of its own. GET streams (standalone and replays) are long-lived and keep the SDK's
``EventSourceResponse``.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections import deque
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, AsyncIterator, Awaitable, Callable

import anyio
from mcp.server import streamable_http as sdk
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp_types import (DEFAULT_NEGOTIATED_VERSION, INTERNAL_ERROR, JSONRPCError, JSONRPCRequest, JSONRPCResponse,
                       jsonrpc_message_adapter)
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from gateway.security.front_door import MESSAGE

log = logging.getLogger("mcpgw")

DEFER = 1.0  # seconds an answer may be held back before it becomes a stream (and resumable)
# Seconds a request runs before its client is watched for leaving: most calls are answered well
# within it, and need no watcher task at all; a client that leaves sooner is noticed then.
WATCH_AFTER = 0.1
_KEY = "mcpgw.disconnect"
_SSE_SEP = "\r\n"


class RequestDisconnect:
    """Who must know when the client of one HTTP request leaves. Lives in the request's scope, so
    the response (which watches) and the handler of the call (which reacts) meet without knowing
    each other, in whichever order they start."""

    def __init__(self) -> None:
        # Set by the HTTP front before the SDK sees the request: the answer may stream, so the
        # response (handshake era) or the SDK (2026 wire) watches for the client leaving. False
        # when answers are JSON (``json_response``): then the call must watch for itself.
        self.streamed = False
        self.gone = False
        self._callbacks: list[Callable[[], Awaitable[None]]] = []

    @staticmethod
    def of(scope: Scope) -> "RequestDisconnect":
        state = scope.setdefault("state", {})
        found = state.get(_KEY)
        if found is None:
            found = state[_KEY] = RequestDisconnect()
        return found

    def on_leave(self, callback: Callable[[], Awaitable[None]]) -> Callable[[], None]:
        """Run ``callback`` when the client leaves; returns the function that unregisters it."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    async def left(self) -> None:
        self.gone = True
        for callback in list(self._callbacks):
            await callback()


class GatewayTransport(sdk.StreamableHTTPServerTransport):
    """The SDK's transport, answering handshake-era requests itself (module docstring)."""

    ping_interval: float = EventSourceResponse.DEFAULT_PING_INTERVAL

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[tuple[Any, Any]]:
        """The SDK's streams, the session's messages to a request answered here delivered by their
        sender (``_DirectRoutes``) rather than by the SDK's message router task."""
        async with super().connect() as (read_stream, write_stream):
            yield read_stream, _DirectRoutes(self, write_stream)

    async def _handle_post_request(self, scope: Scope, request: Request, receive: Receive, send: Send) -> None:
        message = self._request_to_answer(scope, request)
        if message is None:
            await super()._handle_post_request(scope, request, receive, send)
            return
        initialize = message.method == "initialize"
        if not initialize and not await self._validate_request_headers(request, send):
            return
        if initialize and message.params:
            version = str(message.params.get("protocolVersion", DEFAULT_NEGOTIATED_VERSION))
        else:
            version = request.headers.get(sdk.MCP_PROTOCOL_VERSION_HEADER, DEFAULT_NEGOTIATED_VERSION)
        try:
            await self._answer(scope, request, receive, send, message, version)
        except Exception as err:  # as the SDK's own POST handler: a 500, and the session told
            log.exception("Error handling POST request")
            await self._create_error_response("Error handling POST request", HTTPStatus.INTERNAL_SERVER_ERROR,
                                              INTERNAL_ERROR)(scope, receive, send)
            if self._read_stream_writer is not None:
                await self._read_stream_writer.send(Exception(err))

    def _request_to_answer(self, scope: Scope, request: Request) -> JSONRPCRequest | None:
        """The POSTed request, when this class answers it: SSE mode, well-formed, headers the SDK
        accepts. None sends the POST down the SDK's path (which refuses what it must)."""
        raw = scope.get("state", {}).get(MESSAGE)
        if (self.is_json_response_enabled or not isinstance(raw, dict) or "method" not in raw or "id" not in raw
                or self._read_stream_writer is None or not self._check_content_type(request)
                or not all(sdk.check_accept_headers(request))):
            return None
        try:
            message = jsonrpc_message_adapter.validate_python(raw, by_name=False)
        except ValidationError:
            return None
        if not isinstance(message, JSONRPCRequest):
            return None
        if message.method == "initialize" and self.mcp_session_id:
            asked = self._get_session_id(request)
            if asked and asked != self.mcp_session_id:
                return None  # the SDK answers 404
        return message

    async def _answer(self, scope: Scope, request: Request, receive: Receive, send: Send,
                      message: JSONRPCRequest, version: str) -> None:
        request_id = str(message.id)
        priming = await self._mint_priming_event(request_id, version)
        events = _RequestEvents(sdk.REQUEST_STREAM_BUFFER_SIZE)
        self._request_streams[request_id] = (events, events)  # type: ignore[assignment]  # where senders look
        try:
            assert self._read_stream_writer is not None
            await self._read_stream_writer.send(self._create_session_message(message, request, request_id, version))
            first, ended = await _first(events, WATCH_AFTER)
            if ended or (first is not None and isinstance(first.message, JSONRPCResponse | JSONRPCError)):
                await self._respond(send, events, priming, first, ended)
                return  # the common case: settled before anyone needed to watch
            async with anyio.create_task_group() as tg:
                tg.start_soon(_watch, receive, RequestDisconnect.of(scope))
                if first is None and not ended:
                    first, ended = await _first(events, DEFER - WATCH_AFTER)
                await self._respond(send, events, priming, first, ended)
                tg.cancel_scope.cancel()
        finally:
            await self._clean_up_memory_streams(request_id)

    async def _respond(self, send: Send, events: "_RequestEvents",
                       priming: dict[str, Any] | None, first: sdk.EventMessage | None, ended: bool) -> None:
        """The answer, given the first message (None: none by ``DEFER``, or ``ended`` before one).

        Only a result is answered as JSON; an error keeps the stream: the SDK's Python client (2.3)
        reads a JSON answer without expecting its session to be closing, and a client that cancels
        a call and closes at once receives the cancelled call's error while it closes; over SSE it
        drops it quietly, as JSON it crashes."""
        if first is not None and isinstance(first.message, JSONRPCResponse):
            await self._json(send, first.message.model_dump_json(by_alias=True, exclude_unset=True).encode())
            return
        await send({"type": "http.response.start", "status": 200, "headers": _raw(self._sse_headers())})
        if priming is not None:
            await _send_chunk(send, encode(priming))
        event = first if first is not None or ended else await self._next(send, events)
        while event is not None:
            await _send_chunk(send, encode(self._create_event_data(event)))
            if isinstance(event.message, JSONRPCResponse | JSONRPCError):
                break
            event = await self._next(send, events)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _next(self, send: Send, events: "_RequestEvents") -> sdk.EventMessage | None:
        """The stream's next message, with a keep-alive comment for each idle ``ping_interval``."""
        while True:
            try:
                event = await events.receive(self.ping_interval)
            except anyio.EndOfStream:
                return None
            if event is not None:
                return event
            await _send_chunk(send, b": ping\r\n\r\n")

    def _session_header(self) -> dict[str, str]:
        return {sdk.MCP_SESSION_ID_HEADER: self.mcp_session_id} if self.mcp_session_id else {}

    def _sse_headers(self) -> dict[str, str]:
        return {"Cache-Control": "no-cache, no-transform", "Connection": "keep-alive",
                "Content-Type": sdk.CONTENT_TYPE_SSE, **self._session_header()}

    async def _json(self, send: Send, body: bytes) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": _raw({"Content-Type": sdk.CONTENT_TYPE_JSON, "Content-Length": str(len(body)),
                                     **self._session_header()})})
        await send({"type": "http.response.body", "body": body})


class _DirectRoutes:
    """The write stream the session's dispatcher sends on. A message for a request whose answer
    ``GatewayTransport`` holds (its stream a ``_RequestEvents``) is stored and queued right here,
    in the sender's task, as the SDK's message router would store and queue it; every other message
    (the GET stream's, a request the SDK answers, one whose answer is gone) goes to the router as
    before. A request's stream is registered before the request is dispatched and removed after
    its answer, so all of one request's messages take one path, in the order they were sent: the
    result still never overtakes a notification sent before it. Saves a task switch and a
    context-carrying stream per message.

    The transport is held weakly: the session's dispatcher holds this stream, and the SDK's objects
    lead from the transport back to the dispatcher, so a strong reference made a cycle that kept
    every ended session (its event store included) until a full garbage collection, which the
    gateway's collector settings make rare (``serve._settle_gc``)."""

    __slots__ = ("_transport", "_router")

    def __init__(self, transport: GatewayTransport, router: Any) -> None:
        self._transport = weakref.ref(transport)
        self._router = router

    async def send(self, item: SessionMessage) -> None:
        target = _target(item)
        transport = self._transport()
        streams = transport._request_streams.get(target) if transport is not None and target is not None else None
        events = streams[0] if streams is not None else None
        if not isinstance(events, _RequestEvents):
            await self._router.send(item)
            return
        assert transport is not None and target is not None
        store = transport._event_store
        event_id = await store.store_event(target, item.message) if store is not None else None
        try:
            await events.send(sdk.EventMessage(item.message, event_id))
        except anyio.ClosedResourceError:  # the answer ended meanwhile: stored for a replay, as the router does
            transport._request_streams.pop(target, None)

    def close(self) -> None:
        self._router.close()

    async def aclose(self) -> None:
        await self._router.aclose()

    async def __aenter__(self) -> "_DirectRoutes":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _target(item: SessionMessage) -> str | None:
    """The request a message belongs to, as the SDK's message router decides it."""
    message = item.message
    if isinstance(message, JSONRPCResponse | JSONRPCError):
        return str(message.id) if message.id is not None else None
    metadata = item.metadata
    if isinstance(metadata, ServerMessageMetadata) and metadata.related_request_id is not None:
        return str(metadata.related_request_id)
    return None


async def _first(events: "_RequestEvents", within: float) -> tuple[sdk.EventMessage | None, bool]:
    """The request's first message if it comes ``within`` seconds, and whether its stream ended
    instead (the session ended, or the stream was closed for the client to resume)."""
    try:
        return await events.receive(within), False
    except anyio.EndOfStream:
        return None, True


class _RequestEvents:
    """The stream of one request's messages, in place of the memory object stream pair the SDK
    makes for it: ``_DirectRoutes`` (or the SDK's message router) sends to it, the transport
    closes it (``close``, ``aclose``), and the POST reads it with a timeout that cannot lose a
    message. (A memory object stream's ``receive`` cancelled by its deadline just as a message is
    handed to it drops that message: a progress notification could vanish that way.) At most
    ``size`` messages wait; a sender then waits, as it would on the SDK's stream."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: deque[sdk.EventMessage] = deque()
        self._closed = False
        self._changed: anyio.Event | None = None  # made by whoever waits (most sends find nobody waiting)

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    async def send(self, item: sdk.EventMessage) -> None:
        while len(self._items) >= self._size and not self._closed:
            await self._wait()
        if self._closed:
            raise anyio.ClosedResourceError
        self._items.append(item)
        self._wake()

    async def receive(self, within: float = math.inf) -> sdk.EventMessage | None:
        """The next message; None when none came ``within`` seconds; ``EndOfStream`` once closed
        and read to the end."""
        if not self._items and not self._closed:
            with anyio.move_on_after(within):
                while not self._items and not self._closed:
                    await self._wait()
        if self._items:
            item = self._items.popleft()
            self._wake()
            return item
        if self._closed:
            raise anyio.EndOfStream
        return None

    def close(self) -> None:
        self._closed = True
        self._wake()

    async def aclose(self) -> None:
        self.close()


async def _watch(receive: Receive, disconnect: RequestDisconnect) -> None:
    """Tell whoever must know that the client left. The call decides what a leaving client means
    (see forwarding); the answer ends when the call does, and ending it ends this watch."""
    while (await receive())["type"] != "http.disconnect":
        pass
    await disconnect.left()


def install(ping_interval: float) -> None:
    """Make the transports of the SDK's session manager ``GatewayTransport``s (idempotent)."""
    import mcp.server.streamable_http_manager as manager

    GatewayTransport.ping_interval = ping_interval
    EventSourceResponse.DEFAULT_PING_INTERVAL = ping_interval  # for the GET streams, still the library's
    manager.StreamableHTTPServerTransport = GatewayTransport  # type: ignore[misc]


def encode(event: dict[str, Any]) -> bytes:
    """One SSE event as the SDK's events are shaped (``id``, ``event``, ``data``, ``retry``)."""
    lines = []
    if event.get("id") is not None:
        lines.append(f"id: {event['id']}")
    if event.get("event") is not None:
        lines.append(f"event: {event['event']}")
    if event.get("data") is not None:
        lines.extend(f"data: {line}" for line in str(event["data"]).splitlines() or [""])
    if event.get("retry") is not None:
        lines.append(f"retry: {int(event['retry'])}")
    return (_SSE_SEP.join(lines) + _SSE_SEP + _SSE_SEP).encode()


async def _send_chunk(send: Send, chunk: bytes) -> None:
    message: Message = {"type": "http.response.body", "body": chunk, "more_body": True}
    await send(message)


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
