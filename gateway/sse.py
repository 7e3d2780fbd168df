"""The answer to a handshake-era POST: plain JSON when nothing needs a stream, SSE when something does.

The SDK answers every POST of a handshake-era session (the client accepting both) with an SSE
stream built by ``sse_starlette.EventSourceResponse``: a task group of four tasks (the stream, a
ping, a shutdown listener, a disconnect listener) beside the SDK's own writer task, for what is
almost always one event. Profiled, that is about a third of the gateway's CPU per call over HTTP
(docs/benchmarks.md). The 2026-07-28 path of the same SDK already does better: it holds the answer
back for a while and, if the handler finishes without emitting anything, answers
``application/json`` (``_streamable_http_modern.handle_modern_request``).

``DeferredEventSource`` does the same for the handshake-era POST, in place of
``EventSourceResponse`` in the SDK's transport module (``install()``; the one module attribute the
gateway replaces, guarded by tests/test_sse_answers.py): it waits up to ``DEFER`` for the stream's
first event that is not the priming event. Is it the request's result, and does the stream end
there, the answer is that result as ``application/json`` (the spec lets the server pick either;
every client must read both). Anything else (progress, a log, a question to the client), or
nothing by ``DEFER``, and the answer becomes the SSE stream it always was: priming event first
(so a dropped stream can be resumed with ``Last-Event-ID``), keep-alive comments while idle.

One task watches the request for the client leaving; whoever must know (the forwarding of the
call, ``RequestDisconnect.on_leave``) is told by it, so a call needs no watcher of its own. GET
streams (standalone and replays) are long-lived and keep ``EventSourceResponse`` unchanged.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from sse_starlette.sse import EventSourceResponse
from starlette.types import Message, Receive, Scope, Send

DEFER = 1.0  # seconds an answer may be held back before it becomes a stream (and resumable)
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


class DeferredEventSource:
    """Constructed by the SDK exactly as ``EventSourceResponse`` (``content``: the SSE events as
    dicts; ``data_sender_callable``: the SDK's writer feeding them; ``headers``)."""

    ping_interval: float = EventSourceResponse.DEFAULT_PING_INTERVAL

    def __init__(self, content: Any, data_sender_callable: Callable[[], Awaitable[None]] | None = None,
                 headers: dict[str, str] | None = None, **kwargs: Any) -> None:
        self.content = content
        self.data_sender = data_sender_callable
        self.headers = dict(headers or {})
        self.kwargs = kwargs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "POST" or not isinstance(self.content, MemoryObjectReceiveStream):
            await EventSourceResponse(self.content, data_sender_callable=self.data_sender, headers=self.headers,
                                      **self.kwargs)(scope, receive, send)
            return
        disconnect = RequestDisconnect.of(scope)
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                # The call decides what a leaving client means (see forwarding); the answer ends
                # when the call does, and ending it ends this watch.
                await disconnect.left()

            tg.start_soon(watch)
            if self.data_sender is not None:
                tg.start_soon(self.data_sender)
            await self._answer(send)
            tg.cancel_scope.cancel()

    async def _answer(self, send: Send) -> None:
        held: list[dict[str, Any]] = []  # the priming event, until we know whether a stream is needed
        final = None
        with anyio.move_on_after(DEFER):
            async for event in self.content:
                if _is_priming(event):
                    held.append(event)
                    continue
                if _is_result(event):
                    final = event
                else:
                    held.append(event)
                break
        if final is not None:
            if await _ends(self.content):
                await self._json(send, final["data"])
                return
            held.append(final)  # pragma: no cover - the SDK writes nothing after a request's response
        await self._stream(send, held)

    async def _json(self, send: Send, data: str) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-type", "connection")}
        body = data.encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": _raw({**headers, "Content-Type": "application/json",
                                     "Content-Length": str(len(body))})})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, send: Send, held: list[dict[str, Any]]) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _raw(self.headers)})
        for event in held:
            await _send_chunk(send, encode(event))
        while True:
            with anyio.move_on_after(self.ping_interval) as idle:
                try:
                    event = await self.content.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    break
            await _send_chunk(send, b": ping\r\n\r\n" if idle.cancelled_caught else encode(event))
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def install(ping_interval: float) -> None:
    """Answer handshake-era POSTs with ``DeferredEventSource`` (idempotent)."""
    import mcp.server.streamable_http as transport

    DeferredEventSource.ping_interval = ping_interval
    EventSourceResponse.DEFAULT_PING_INTERVAL = ping_interval  # for the GET streams, still the library's
    transport.EventSourceResponse = DeferredEventSource  # type: ignore[misc,assignment]


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


def _is_priming(event: dict[str, Any]) -> bool:
    return event.get("data") == "" and "event" not in event


_RESULT = re.compile(r'\{"jsonrpc":"2\.0","id":(?:-?\d+|"(?:[^"\\]|\\.)*"),"result":')


def _is_result(event: dict[str, Any]) -> bool:
    """A JSON-RPC result (what ends a POST's stream), not an error, a notification or a request.
    Read off the front of the SDK's own serialisation (fields in model order: ``jsonrpc``, ``id``,
    then ``result``), never by parsing it whole: a 5,000-tool list is megabytes. Anything shaped
    otherwise is streamed, which is always correct.

    Errors keep the stream: the SDK's Python client (2.3) reads a JSON answer without expecting
    its session to be closing, and a client that cancels a call and closes at once receives the
    cancelled call's error while it closes; over SSE it drops it quietly, as JSON it crashes."""
    data = event.get("data")
    return isinstance(data, str) and _RESULT.match(data) is not None


async def _ends(content: MemoryObjectReceiveStream[Any]) -> bool:
    """Does the stream end right after the event just received? The SDK's writer closes it as soon
    as it has handed over the final response; anything else arriving instead means a stream."""
    try:
        await content.receive()
    except (anyio.EndOfStream, anyio.ClosedResourceError):
        return True
    return False  # pragma: no cover


async def _send_chunk(send: Send, chunk: bytes) -> None:
    message: Message = {"type": "http.response.body", "body": chunk, "more_body": True}
    await send(message)


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
