"""A sent request's answer waits for it in a slot: one asyncio future, not an anyio memory stream.

The SDK's dispatcher (``JSONRPCDispatcher.send_raw_request``) makes a memory object stream of one
item for every request it sends and waits on the receiving end for the answer. anyio's
``receive()`` yields to the event loop before it even looks (a checkpoint): the task that sent the
request was suspended and resumed once for nothing, with every frame of its coroutine chain (for a
call POSTed over HTTP, some thirty: the ASGI server, the front door, the transport, the runner, the
forwarding), before being suspended again to really wait; around that, a stream state, an anyio
``Event`` and a table of waiting receivers per request. Counted, that was 7.6% of the gateway's
instructions per ``tools/call`` (docs/benchmarks.md, item 35).

``install()`` gives the dispatcher's module an ``anyio`` whose ``create_memory_object_stream`` makes
a slot's two ends for a stream of one item (``send_raw_request``'s, the only memory stream that
module makes); everything else is anyio's own. The ends keep the part of the streams' contract the
dispatcher relies on: ``send_nowait`` fills the slot (``WouldBlock`` when it is full,
``BrokenResourceError`` once the receiving end is closed, ``ClosedResourceError`` once the sending
end is), ``receive`` takes the item, waiting only when there is none yet (``EndOfStream`` when the
sending end closes empty), and a wait given up (the caller's scope, the request's timeout) leaves
the slot as anyio's stream would: an answer arriving then is dropped when the dispatcher closes the
ends. One receiver per slot, on asyncio (the gateway runs on nothing else). tests/test_answer_slot.py
fails first should the SDK stop making its waiter this way.
"""

from __future__ import annotations

import asyncio
import types
from typing import Any

import anyio
import mcp.shared.jsonrpc_dispatcher as dispatcher

_MARK = "_mcpgw_answer_slots"


class _Slot:
    __slots__ = ("item", "full", "waiter", "sender_closed", "receiver_closed")

    def __init__(self) -> None:
        self.item: Any = None
        self.full = False
        self.waiter: asyncio.Future[None] | None = None
        self.sender_closed = False
        self.receiver_closed = False

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class SlotSender:
    """The sending end: ``send_nowait`` and ``close``, as a memory object stream's."""

    __slots__ = ("_slot",)

    def __init__(self, slot: _Slot) -> None:
        self._slot = slot

    def send_nowait(self, item: Any) -> None:
        slot = self._slot
        if slot.sender_closed:
            raise anyio.ClosedResourceError
        if slot.receiver_closed:
            raise anyio.BrokenResourceError
        if slot.full:
            raise anyio.WouldBlock
        slot.item, slot.full = item, True
        slot.wake()

    def close(self) -> None:
        self._slot.sender_closed = True
        self._slot.wake()


class SlotReceiver:
    """The receiving end: ``receive`` and ``close``, as a memory object stream's."""

    __slots__ = ("_slot",)

    def __init__(self, slot: _Slot) -> None:
        self._slot = slot

    async def receive(self) -> Any:
        slot = self._slot
        if slot.receiver_closed:
            raise anyio.ClosedResourceError
        if not slot.full:
            if slot.sender_closed:
                raise anyio.EndOfStream
            waiter = slot.waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter  # cancelled by the caller's scope like any other wait
            finally:
                slot.waiter = None
            if not slot.full:
                raise anyio.EndOfStream
        item, slot.item, slot.full = slot.item, None, False
        return item

    def close(self) -> None:
        self._slot.receiver_closed = True


def slot_pair() -> tuple[SlotSender, SlotReceiver]:
    slot = _Slot()
    return SlotSender(slot), SlotReceiver(slot)


class _CreateStreams:
    """``anyio.create_memory_object_stream`` as the dispatcher calls it (``[T](max_buffer_size)``):
    a slot for one item, anyio's stream for any other size."""

    def __getitem__(self, _item_type: Any) -> "_CreateStreams":
        return self

    def __call__(self, max_buffer_size: float = 0, item_type: Any = None) -> Any:
        if max_buffer_size == 1:
            return slot_pair()
        return anyio.create_memory_object_stream(max_buffer_size)


def install() -> None:
    """Make the SDK's dispatcher wait for its answers in slots (idempotent)."""
    if getattr(dispatcher.anyio, _MARK, False):
        return
    patched = types.ModuleType(anyio.__name__, anyio.__doc__)
    patched.__dict__.update(vars(anyio))
    patched.__dict__["__getattr__"] = lambda name: getattr(anyio, name)  # whatever anyio makes later
    patched.create_memory_object_stream = _CreateStreams()  # type: ignore[attr-defined]
    setattr(patched, _MARK, True)
    dispatcher.anyio = patched  # type: ignore[attr-defined]
