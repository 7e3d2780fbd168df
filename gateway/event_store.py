"""Resumable SSE streams: the recent events of each stream, so a client whose stream dropped (an idle
timeout of a load balancer, a network blip) reconnects with ``Last-Event-ID`` and misses nothing.

The SDK defines the ``EventStore`` interface and ships no store. This one is in memory and bounded
twice: the last ``per_stream`` events of a stream, the ``max_streams`` most recently written streams.
A client resuming from an event that was forgotten gets nothing replayed (the SDK then answers
as for an unknown stream), which is what a client must expect of any store after a long absence.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage

_SEPARATOR = "/"  # event id = "<stream id>/<sequence>": the stream is found from the id alone


class BoundedEventStore(EventStore):
    def __init__(self, per_stream: int = 256, max_streams: int = 10_000) -> None:
        self.per_stream = per_stream
        self.max_streams = max_streams
        self._streams: OrderedDict[StreamId, deque[tuple[int, JSONRPCMessage | None]]] = OrderedDict()
        self._sequence = itertools.count(1)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        return self.store(stream_id, message)

    def store(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        """``store_event`` without the coroutine: storing never waits, so a caller can store several
        events with nothing of another task's between them (``sse._RequestEvents``)."""
        events = self._streams.get(stream_id)
        if events is None:
            events = self._streams[stream_id] = deque(maxlen=self.per_stream)
            while len(self._streams) > self.max_streams:
                self._streams.popitem(last=False)
        else:
            self._streams.move_to_end(stream_id)
        sequence = next(self._sequence)
        events.append((sequence, message))
        return f"{stream_id}{_SEPARATOR}{sequence}"

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        stream_id, _, sequence = last_event_id.rpartition(_SEPARATOR)
        events = self._streams.get(stream_id)
        if events is None or not sequence.isdigit():
            return None
        after = int(sequence)
        for number, message in list(events):
            if number > after and message is not None:
                await send_callback(EventMessage(message, f"{stream_id}{_SEPARATOR}{number}"))
        return stream_id
