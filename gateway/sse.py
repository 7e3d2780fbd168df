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

``GatewayTransport`` is the SDK's ``StreamableHTTPServerTransport`` with that done for the handshake
era: a request is handled by the POST's own task with the SDK's dispatcher code (gateway/lane.py;
without a lane, dispatched to the session as the SDK dispatches it), its messages go to a
per-request stream registered where the SDK registers its own, fed by their senders
(``_DirectRoutes``), and the answer is read from that stream for up to ``DEFER``. Is the first
message the request's result, the answer is that result as ``application/json`` (the spec lets the
server pick either; every client must read both). Anything else (progress, a log, a question to the
client, an error), or nothing by ``DEFER``, and the answer becomes the SSE stream it always was:
priming event first (so a dropped stream can be resumed with ``Last-Event-ID``), each event stored
and shaped by the SDK's own ``_create_event_data``, keep-alive comments while idle. Events are
stored from the moment the answer is a stream (the SDK stores them all, before it knows): a result
answered as JSON has no stream to resume and is never stored (``_RequestEvents``). What is not a
request in SSE mode (notifications, responses, anything the SDK refuses, ``json_response``) takes
the SDK's own path, unchanged. ``install()`` makes every transport the SDK's session manager creates
one of these (the one module attribute the gateway replaces, guarded by tests/test_sse_answers.py).

The front door has already parsed the body (``MESSAGE`` in the scope's state); it is validated
from that, not parsed a second time. A request still unanswered after ``WATCH_AFTER`` gets one task
watching for the client leaving (most are answered sooner, and cost no task at all); whoever must
know (the forwarding of the call, ``RequestDisconnect.on_leave``) is told by it, so a call needs no
watcher of its own. GET streams (standalone and replays) are long-lived and keep the SDK's
``EventSourceResponse``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections import deque
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, AsyncIterator, Awaitable, Callable

import anyio
from mcp.server import streamable_http as sdk
from mcp.server.transport_security import TransportSecurityMiddleware
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp_types import DEFAULT_NEGOTIATED_VERSION, INTERNAL_ERROR, JSONRPCError, JSONRPCRequest, JSONRPCResponse
from mcp_types.version import is_version_at_least
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from gateway.event_store import BoundedEventStore
from gateway.security.front_door import MESSAGE, session_id_of

log = logging.getLogger("mcpgw")

DEFER = 1.0  # seconds an answer may be held back before it becomes a stream (and resumable)
# Seconds a request runs before its client is watched for leaving: most calls are answered well
# within it, and need no watcher task at all; a client that leaves sooner is noticed then.
WATCH_AFTER = 0.1
_KEY = "mcpgw.disconnect"
# Verdicts of the SDK's header checks by (Content-Type, Accept) value (``_headers_accepted``).
_HEADER_VERDICTS: dict[tuple[bytes | None, ...], bool] = {}
_HEADER_VERDICTS_KEPT = 256
_SSE_SEP = "\r\n"
_JSON_TYPE = (b"content-type", sdk.CONTENT_TYPE_JSON.encode("latin-1"))
_SESSION_ID = sdk.MCP_SESSION_ID_HEADER.lower().encode("latin-1")


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
        # The scope that ends the request's handling, when it is handled in its POST's task
        # (gateway/lane.py): cancelled, the request settles as a cancelled one. None: the call
        # makes a scope of its own to cancel.
        self.call: anyio.CancelScope | None = None
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
    lane: Any = None  # the session's ``gateway.lane.Lane``, given by its server once it runs
    _overdue: "_Overdue | None" = None

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
                or self._read_stream_writer is None or not self._headers_accepted(scope, request)):
            return None
        try:  # a request, not the whole message union: it has "method" and "id"
            message = JSONRPCRequest.model_validate(raw, by_name=False)
        except ValidationError:
            return None
        if message.method == "initialize" and self.mcp_session_id:
            asked = self._get_session_id(request)
            if asked and asked != self.mcp_session_id:
                return None  # the SDK answers 404
        return message

    def _headers_accepted(self, scope: Scope, request: Request) -> bool:
        """The SDK's ``Content-Type`` and ``Accept`` checks (JSON in, JSON and SSE accepted), their
        verdict kept per pair of header values: a client sends the same two with every request, and
        parsing them every time was 3% of a call's instructions. Bounded: the values are the
        client's to choose."""
        key = _first_values(scope["headers"], b"content-type", b"accept")
        verdict = _HEADER_VERDICTS.get(key)
        if verdict is None:
            verdict = self._check_content_type(request) and all(sdk.check_accept_headers(request))
            if len(_HEADER_VERDICTS) >= _HEADER_VERDICTS_KEPT:
                _HEADER_VERDICTS.clear()
            _HEADER_VERDICTS[key] = verdict
        return verdict

    async def _answer(self, scope: Scope, request: Request, receive: Receive, send: Send,
                      message: JSONRPCRequest, version: str) -> None:
        request_id = str(message.id)
        events = _RequestEvents(sdk.REQUEST_STREAM_BUFFER_SIZE, self._keeper(request_id, version))
        self._request_streams[request_id] = (events, events)  # type: ignore[assignment]  # where senders look
        try:
            dispatched = self._create_session_message(message, request, request_id, version)
            lane = self.lane
            if lane is not None and lane.takes(message):
                await self._handle_here(lane, scope, receive, send, events, message, dispatched.metadata)
                return
            assert self._read_stream_writer is not None
            await self._read_stream_writer.send(dispatched)
            await self._reply(scope, receive, send, events, WATCH_AFTER)
        finally:  # the SDK's ``_clean_up_memory_streams``, for the stream registered above
            if self._request_streams.get(request_id, (None,))[0] is events:
                del self._request_streams[request_id]
            events.close()

    async def _handle_here(self, lane: Any, scope: Scope, receive: Receive, send: Send, events: "_RequestEvents",
                           message: JSONRPCRequest, metadata: Any) -> None:
        """The request handled in this task (gateway/lane.py), the answer sent once it is handled: as
        JSON, nearly always. The reply starts beside the handling instead when the request sends
        anything before its answer (a progress, a log, a question to the client: the client must
        see it now) or is still running after ``WATCH_AFTER`` (its client is watched from then on,
        its answer becomes a stream after ``DEFER``), as it would after dispatch."""
        loop = asyncio.get_running_loop()
        replying: asyncio.Task[None] | None = None

        def reply_now() -> None:
            nonlocal replying
            if replying is None:
                replying = loop.create_task(self._reply(scope, receive, send, events, 0))

        events.on_message = reply_now
        overdue = self._overdue
        if overdue is None:
            overdue = self._overdue = _Overdue(loop)
        overdue.add(reply_now)
        call = RequestDisconnect.of(scope).call = anyio.CancelScope()
        try:
            await lane.handle(message, metadata, call)
        except BaseException:
            if replying is not None:
                replying.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.wait([replying])
            raise
        finally:
            overdue.discard(reply_now)
            events.on_message = None
        if replying is None:
            await self._reply(scope, receive, send, events, 0)  # the answer is waiting: no wait at all
        else:
            await replying

    async def _reply(self, scope: Scope, receive: Receive, send: Send, events: "_RequestEvents",
                     watch_after: float) -> None:
        """Answer the POST from the request's messages: its client watched from ``watch_after``
        seconds on, unless the answer is settled by then (most are)."""
        first, ended = await _first(events, watch_after)
        if ended or (first is not None and isinstance(first.message, JSONRPCResponse | JSONRPCError)):
            await self._respond(send, events, first, ended)
            return  # the common case: settled before anyone needed to watch
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch, receive, RequestDisconnect.of(scope))
            if first is None and not ended:
                first, ended = await _first(events, DEFER - WATCH_AFTER)
            await self._respond(send, events, first, ended)
            tg.cancel_scope.cancel()

    async def terminate(self) -> None:
        """The session ends: requests handled in their POST's task are cancelled first, as the SDK's
        own handlers are when the session's loop ends."""
        if self.lane is not None:
            self.lane.close()
        await super().terminate()

    def _keeper(self, request_id: str, version: str) -> "_Keeper | None":
        store = self._event_store
        if store is None:
            return None
        if not isinstance(store, BoundedEventStore):
            raise TypeError("GatewayTransport stores events in the gateway's BoundedEventStore")
        return _Keeper(store, request_id, version, self._retry_interval)

    async def _respond(self, send: Send, events: "_RequestEvents", first: sdk.EventMessage | None,
                       ended: bool) -> None:
        """The answer, given the first message (None: none by ``DEFER``, or ``ended`` before one).

        Only a result is answered as JSON; an error keeps the stream: the SDK's Python client (2.3)
        reads a JSON answer without expecting its session to be closing, and a client that cancels
        a call and closes at once receives the cancelled call's error while it closes; over SSE it
        drops it quietly, as JSON it crashes."""
        if first is not None and isinstance(first.message, JSONRPCResponse):
            events.answered()
            await self._json(send, first.message.model_dump_json(by_alias=True, exclude_unset=True).encode())
            return
        priming, first = events.streamed(first)
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

    def _get_session_id(self, request: Request) -> str | None:
        return session_id_of(request.scope)  # as the endpoint read it (front_door.session_id_of)

    def _session_header(self) -> dict[str, str]:
        return {sdk.MCP_SESSION_ID_HEADER: self.mcp_session_id} if self.mcp_session_id else {}

    def _sse_headers(self) -> dict[str, str]:
        return {"Cache-Control": "no-cache, no-transform", "Connection": "keep-alive",
                "Content-Type": sdk.CONTENT_TYPE_SSE, **self._session_header()}

    async def _json(self, send: Send, body: bytes) -> None:
        headers = [_JSON_TYPE, (b"content-length", b"%d" % len(body))]
        if self.mcp_session_id:
            headers.append((_SESSION_ID, self.mcp_session_id.encode("latin-1")))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class KeptVerdicts(TransportSecurityMiddleware):
    """The SDK's checks of a request's ``Content-Type`` (POST) and, with DNS rebinding protection on,
    its ``Host`` and ``Origin``, a pass kept per combination of the three values: a client sends
    the same ones with every request, and each check read the headers afresh (three lookups over
    the header list per request, 1% of a call's instructions). A refusal is worked out, logged and
    answered every time. One per session manager, for the transports of its sessions; bounded: the
    values are the client's to choose."""

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self._passed: set[tuple[bool | bytes | None, ...]] = set()

    async def validate_request(self, request: Request, is_post: bool = False) -> Any:
        key = (is_post, *_first_values(request.scope["headers"], b"content-type", b"host", b"origin"))
        if key in self._passed:
            return None
        refused = await super().validate_request(request, is_post)
        if refused is None:
            if len(self._passed) >= _HEADER_VERDICTS_KEPT:
                self._passed.clear()
            self._passed.add(key)
        return refused


def _first_values(headers: list[tuple[bytes, bytes]], *names: bytes) -> tuple[bytes | None, ...]:
    """Each named header's first value, as ``request.headers`` reads it (None where it is absent):
    the key a kept verdict is found by."""
    values: list[bytes | None] = [None] * len(names)
    for name, value in headers:
        if name in names:
            at = names.index(name)
            if values[at] is None:
                values[at] = value
    return tuple(values)


class _DirectRoutes:
    """The write stream the session's dispatcher sends on. A message for a request whose answer
    ``GatewayTransport`` holds (its stream a ``_RequestEvents``) is queued right here, in the
    sender's task, where the SDK's message router would have queued it (and stored it, which the
    stream does once the answer is one; a message that finds the stream closed is stored here, as
    the router stores it); every other message (the GET stream's, a request the SDK answers, one
    whose answer is gone) goes to the router as before. A request's stream is registered before the request is dispatched and removed after
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
        try:
            await events.send(item.message)
            return
        except anyio.ClosedResourceError:  # the answer ended meanwhile: stored for a replay, as the router does
            transport._request_streams.pop(target, None)
        store = transport._event_store
        if store is not None:
            await store.store_event(target, item.message)

    def close(self) -> None:
        self._router.close()

    async def aclose(self) -> None:
        await self._router.aclose()

    async def __aenter__(self) -> "_DirectRoutes":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def transport_of(dispatcher: Any) -> GatewayTransport | None:
    """The transport whose session ``dispatcher`` serves, when it is a ``GatewayTransport``: the
    dispatcher writes to its ``_DirectRoutes``."""
    routes = getattr(dispatcher, "_write_stream", None)
    return routes._transport() if isinstance(routes, _DirectRoutes) else None


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
    ``size`` messages wait; a sender then waits, as it would on the SDK's stream.

    Events are stored (for a client resuming the stream) once the answer is a stream, not before:
    a result answered as JSON has no stream to resume and is never stored, which is most calls.
    ``streamed`` stores, in this order and without a pause for another task, the priming event,
    the first message and those waiting; from then on each message is stored as it comes. A stream
    closed before the answer was decided is stored the same way, so that what comes after the close
    (stored by its sender) follows it.

    One reader, the POST's response, waits on a future of its own with a timer beside it, rather
    than an event in a cancel scope: a message or the end resolves the future, the timer resolves
    it with nothing, and the messages stay in the queue whatever interrupts the wait. The HTTP
    front runs on asyncio (uvicorn), so the future is asyncio's."""

    def __init__(self, size: int, keeper: "_Keeper | None") -> None:
        self._size = size
        self._keeper = keeper  # None: no event store, nothing is stored
        self._items: deque[sdk.EventMessage] = deque()
        self._closed = False
        self._streaming = False  # the answer is a stream: every message is stored
        self._answered = False  # the answer was a result as JSON: nothing is stored
        self._priming: dict[str, Any] | None = None
        self._reader: asyncio.Future[None] | None = None  # the waiting reader's, if it waits
        self._room: anyio.Event | None = None  # made by a sender waiting for room (a full queue)
        self.on_message: Callable[[], None] | None = None  # told of a message that is not the answer

    def _changed(self) -> None:
        """Wake the waiting reader, if any: something came, or the stream ended."""
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    async def send(self, message: Any) -> None:
        while len(self._items) >= self._size and not self._closed:
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()
        if self._closed:
            raise anyio.ClosedResourceError
        event = sdk.EventMessage(message, None)
        self._items.append(self._keeper.kept(event) if self._streaming and self._keeper is not None else event)
        self._changed()
        if self.on_message is not None and not isinstance(message, JSONRPCResponse | JSONRPCError):
            self.on_message()

    def streamed(self, first: sdk.EventMessage | None) -> tuple[dict[str, Any] | None, sdk.EventMessage | None]:
        """The answer is a stream: its priming event (None without an event store, or for a client
        older than 2025-11-25) and ``first`` as stored."""
        if not self._streaming:
            self._streaming = True
            if self._keeper is not None:
                self._priming = self._keeper.priming()
                first = self._keeper.kept(first) if first is not None else None
                self._items = deque(map(self._keeper.kept, self._items))
        return self._priming, first  # (once streaming, whatever is read was stored when it came)

    def answered(self) -> None:
        """The result went out as JSON: there is no stream to store."""
        self._answered = True

    async def receive(self, within: float = math.inf) -> sdk.EventMessage | None:
        """The next message; None when none came ``within`` seconds; ``EndOfStream`` once closed
        and read to the end."""
        if not self._items and not self._closed:
            loop = asyncio.get_running_loop()
            self._reader = reader = loop.create_future()
            timer = loop.call_later(within, _settle, reader) if within < math.inf else None
            try:
                await reader
            finally:
                self._reader = None
                if timer is not None:
                    timer.cancel()
        if self._items:
            item = self._items.popleft()
            if self._room is not None:
                self._room.set()
                self._room = None
            return item
        if self._closed:
            raise anyio.EndOfStream
        return None

    def close(self) -> None:
        if not self._closed and not self._answered:
            self.streamed(None)
        self._closed = True
        self._changed()
        if self._room is not None:
            self._room.set()
            self._room = None

    async def aclose(self) -> None:
        self.close()


class _Overdue:
    """The requests of one session being handled in their POST's task whose reply has not started,
    each a function that starts it: those still there ``WATCH_AFTER`` seconds on are started. One
    timer, armed while there are any, serves them all (a timer per request was 2% of a call's
    instructions): it ticks every ``WATCH_AFTER``, and a request seen by two ticks has run at least
    that long (at most twice that long)."""

    __slots__ = ("_loop", "_young", "_old", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._young: set[Callable[[], None]] = set()  # added since the last tick
        self._old: set[Callable[[], None]] = set()  # there at the last tick
        self._timer: asyncio.TimerHandle | None = None

    def add(self, start: Callable[[], None]) -> None:
        self._young.add(start)
        if self._timer is None:
            self._timer = self._loop.call_later(WATCH_AFTER, self._tick)

    def discard(self, start: Callable[[], None]) -> None:
        self._young.discard(start)
        self._old.discard(start)

    def _tick(self) -> None:
        due, self._old, self._young = self._old, self._young, set()
        for start in due:
            start()
        self._timer = self._loop.call_later(WATCH_AFTER, self._tick) if self._old else None


class _Keeper:
    """Stores one request's events in the session's event store, as the SDK's transport does
    (``_mint_priming_event`` and its message router), but without a coroutine each: storing several
    must not let another task's event in between."""

    __slots__ = ("_store", "_stream_id", "_version", "_retry")

    def __init__(self, store: BoundedEventStore, stream_id: str, version: str, retry: int | None) -> None:
        self._store, self._stream_id, self._version, self._retry = store, stream_id, version, retry

    def priming(self) -> dict[str, Any] | None:
        if not is_version_at_least(self._version, "2025-11-25"):
            return None  # older clients cannot parse an event without data
        event: dict[str, Any] = {"id": self._store.store(self._stream_id, None), "data": ""}
        if self._retry is not None:
            event["retry"] = self._retry
        return event

    def kept(self, event: sdk.EventMessage) -> sdk.EventMessage:
        if event.event_id is not None:
            return event
        return sdk.EventMessage(event.message, self._store.store(self._stream_id, event.message))


def _settle(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


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
