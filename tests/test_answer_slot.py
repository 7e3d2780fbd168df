"""A sent request's answer awaited in a slot (gateway/answer_slot.py): the slot keeps the memory
stream contract the SDK's dispatcher relies on, and the dispatcher, given slots, still times out,
is cancelled, and wakes its waiters when the connection closes."""

from __future__ import annotations

import inspect
from typing import Any

import anyio
import mcp.shared.jsonrpc_dispatcher as sdk_dispatcher
import pytest
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, JSONRPCNotification, JSONRPCRequest, JSONRPCResponse

from gateway import answer_slot

pytestmark = pytest.mark.anyio


def test_the_dispatcher_makes_its_waiter_where_the_slot_is_put() -> None:
    """If the SDK stops making a request's waiter as a one-item memory stream of its module's
    ``anyio``, this fails rather than the slot silently never being used."""
    assert "anyio.create_memory_object_stream[dict[str, Any] | ErrorData](1)" in inspect.getsource(
        sdk_dispatcher.JSONRPCDispatcher.send_raw_request)
    answer_slot.install()
    answer_slot.install()  # idempotent
    patched = sdk_dispatcher.anyio
    assert isinstance(patched.create_memory_object_stream[int](1)[0], answer_slot.SlotSender)
    assert patched.CancelScope is anyio.CancelScope and patched.lowlevel is anyio.lowlevel
    assert patched.get_cancelled_exc_class is anyio.get_cancelled_exc_class
    send, receive = patched.create_memory_object_stream[int](5)  # any other size: anyio's own
    assert type(send).__module__ == "anyio.streams.memory"
    send.close(), receive.close()


async def test_an_item_sent_first_is_taken_without_waiting() -> None:
    send, receive = answer_slot.slot_pair()
    send.send_nowait("answer")
    with pytest.raises(anyio.WouldBlock):
        send.send_nowait("a second answer to the same request")
    with anyio.fail_after(5):
        assert await receive.receive() == "answer"


async def test_a_waiting_receiver_is_woken_by_the_item() -> None:
    send, receive = answer_slot.slot_pair()
    got: list[Any] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            async def wait() -> None:
                got.append(await receive.receive())
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            send.send_nowait("answer")
    assert got == ["answer"]


async def test_a_closed_end_refuses_as_a_memory_stream_does() -> None:
    send, receive = answer_slot.slot_pair()
    receive.close()
    with pytest.raises(anyio.BrokenResourceError):
        send.send_nowait("too late")
    with pytest.raises(anyio.ClosedResourceError):
        await receive.receive()
    send.close()
    with pytest.raises(anyio.ClosedResourceError):
        send.send_nowait("after close")


async def test_a_sender_closing_empty_ends_the_wait() -> None:
    send, receive = answer_slot.slot_pair()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            async def wait() -> None:
                with pytest.raises(anyio.EndOfStream):
                    await receive.receive()
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            send.close()


async def test_a_cancelled_wait_leaves_a_later_answer_unclaimed() -> None:
    send, receive = answer_slot.slot_pair()
    with anyio.fail_after(5):
        with anyio.move_on_after(0.01) as scope:
            await receive.receive()
    assert scope.cancelled_caught
    receive.close()  # as the dispatcher does once the wait is over
    with pytest.raises(anyio.BrokenResourceError):
        send.send_nowait("late answer")


class _Peer:
    """The other end of a dispatcher's streams: what it was sent, and a way to answer."""

    def __init__(self) -> None:
        self.to_dispatcher, self.dispatcher_reads = anyio.create_memory_object_stream[Any](10)
        self.dispatcher_writes, self.from_dispatcher = anyio.create_memory_object_stream[SessionMessage](10)

    async def next_sent(self) -> Any:
        return (await self.from_dispatcher.receive()).message


async def _nothing(*_args: Any) -> None:
    return None


async def _with_dispatcher(test: Any) -> None:
    answer_slot.install()
    peer = _Peer()
    dispatcher = sdk_dispatcher.JSONRPCDispatcher(peer.dispatcher_reads, peer.dispatcher_writes)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher.run, _nothing, _nothing)
            await test(dispatcher, peer)
            await peer.to_dispatcher.aclose()


async def test_the_dispatcher_gets_its_answer_through_the_slot() -> None:
    async def test(dispatcher: Any, peer: _Peer) -> None:
        async with anyio.create_task_group() as tg:
            async def answer() -> None:
                request = await peer.next_sent()
                assert isinstance(request, JSONRPCRequest) and request.method == "tools/call"
                await peer.to_dispatcher.send(SessionMessage(JSONRPCResponse(jsonrpc="2.0", id=request.id,
                                                                             result={"content": []})))
            tg.start_soon(answer)
            assert await dispatcher.send_raw_request("tools/call", {"name": "echo"}) == {"content": []}

    await _with_dispatcher(test)


async def test_the_dispatcher_times_out_and_cancels_at_the_peer() -> None:
    async def test(dispatcher: Any, peer: _Peer) -> None:
        with pytest.raises(MCPError) as raised:
            await dispatcher.send_raw_request("tools/call", {"name": "slow"}, {"timeout": 0.05})
        assert raised.value.code == REQUEST_TIMEOUT
        request, cancel = await peer.next_sent(), await peer.next_sent()
        assert isinstance(cancel, JSONRPCNotification) and cancel.method == "notifications/cancelled"
        assert cancel.params is not None and cancel.params["requestId"] == request.id
        # The answer arriving after all is dropped; the dispatcher goes on.
        await peer.to_dispatcher.send(SessionMessage(JSONRPCResponse(jsonrpc="2.0", id=request.id, result={})))

    await _with_dispatcher(test)


async def test_a_caller_that_gives_up_cancels_at_the_peer() -> None:
    async def test(dispatcher: Any, peer: _Peer) -> None:
        with anyio.move_on_after(0.05) as scope:
            await dispatcher.send_raw_request("tools/call", {"name": "slow"})
        assert scope.cancelled_caught
        request, cancel = await peer.next_sent(), await peer.next_sent()
        assert isinstance(cancel, JSONRPCNotification) and cancel.params["requestId"] == request.id  # type: ignore[index]

    await _with_dispatcher(test)


async def test_waiters_learn_the_connection_closed() -> None:
    async def test(dispatcher: Any, peer: _Peer) -> None:
        async with anyio.create_task_group() as tg:
            async def close_once_sent() -> None:
                await peer.next_sent()
                await peer.to_dispatcher.aclose()  # EOF: the dispatcher wakes its waiters
            tg.start_soon(close_once_sent)
            with pytest.raises(MCPError) as raised:
                await dispatcher.send_raw_request("tools/call", {"name": "echo"})
        assert raised.value.code == CONNECTION_CLOSED

    await _with_dispatcher(test)
