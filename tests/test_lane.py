"""Requests handled in the task of the POST that carries them (gateway/lane.py), and the SDK's own
path beside it (``MCPGW_LANE=0``): what a client sees is the same on both."""

from __future__ import annotations

import inspect
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
import httpx2
import mcp.server.runner as sdk_runner
import mcp.server.streamable_http_manager as sdk_manager
import pytest
from gateway_harness import gateway_http
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_PARAMS, JSONRPCError, JSONRPCNotification, JSONRPCRequest, JSONRPCResponse
from raw_rpc import JSON_AND_SSE, call, open_session
from test_resumability import sse_events
from test_transparency import ClientSide, config_file, text
from upstreams import wait_for_event

from gateway import lane, sse

pytestmark = pytest.mark.anyio
WAIT = 60
PATHS = {"lane": {}, "sdk": {"MCPGW_LANE": "0"}}


def test_the_lane_takes_the_steps_the_sdks_dispatcher_takes() -> None:
    """The lane repeats what ``_dispatch_request`` does before it spawns, then calls the SDK's
    ``_handle_request``: if the SDK changes either, this fails rather than the lane drifting from
    it (a missing part alone would only turn the lane off, logged)."""
    before_spawn = inspect.getsource(JSONRPCDispatcher._dispatch_request)
    for step in ("progress_token_from_params(req.params)", "self._transport_builder(metadata)",
                 "_JSONRPCDispatchContext(", "_InFlight(scope=scope, dctx=dctx)",
                 "self._spawn(self._handle_request, req, dctx, scope, on_request"):
        assert step in before_spawn, step
    assert list(inspect.signature(JSONRPCDispatcher._handle_request).parameters) == [
        "self", "req", "dctx", "scope", "on_request"]
    send, receive = anyio.create_memory_object_stream[Any](1)
    transport = sse.GatewayTransport(mcp_session_id="s")
    dispatcher: JSONRPCDispatcher[Any] = JSONRPCDispatcher(receive, sse._DirectRoutes(transport, send))
    assert isinstance(lane.Lane.attach(dispatcher, on_request=None), lane.Lane)
    assert sse.transport_of(dispatcher) is transport
    assert sse.transport_of(JSONRPCDispatcher(receive, send)) is None  # not a gateway transport's: no lane


def test_the_session_manager_serves_its_sessions_with_a_lane() -> None:
    """The SDK's manager calls ``serve_connection`` by its own name (stateless sessions) and through
    the runner's ``serve_loop`` (sessions): both are the gateway's once installed."""
    lane.install()
    assert sdk_manager.serve_connection is lane.serve_connection
    assert sdk_runner.serve_connection is lane.serve_connection
    assert "await serve_connection(" in inspect.getsource(sdk_runner.serve_loop)
    assert "await serve_loop(" in inspect.getsource(sdk_manager.StreamableHTTPSessionManager._serve_opening_request)


@pytest.mark.parametrize("path", PATHS)
async def test_a_call_that_reports_progress_streams_it_before_its_result(tmp_path: Path, path: str) -> None:
    config, _ = config_file(tmp_path)
    side = ClientSide("p")
    with anyio.fail_after(WAIT):
        async with gateway_http(config, env=PATHS[path]) as gw, Client(gw.url, mode="legacy") as client:
            result = await client.call_tool("alpha__progress", {"steps": 3}, progress_callback=side.on_progress)
            assert text(result) == "completed 3 steps" and side.progress == [1, 2, 3]
            assert text(await client.call_tool("alpha__echo", {"text": "next"})) == "next"
            assert "Traceback" not in gw.stderr()


@pytest.mark.parametrize("path", PATHS)
async def test_a_session_ended_mid_call_cancels_the_call_at_the_upstream(tmp_path: Path, path: str) -> None:
    config, events = config_file(tmp_path)
    with anyio.fail_after(WAIT):
        async with gateway_http(config, env=PATHS[path]) as gw, httpx2.AsyncClient(timeout=30) as http:
            session = await open_session(http, gw.url)
            ended = anyio.Event()

            async def slow_call() -> None:
                async with http.stream("POST", gw.url, headers={**JSON_AND_SSE, **session},
                                       json=call("alpha__slow", 7, seconds=30)) as answer:
                    async for _ in sse_events(answer):  # to its end, whatever it holds
                        pass
                ended.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow_call)
                await wait_for_event(events, "STARTED slow")
                deleted = await http.delete(gw.url, headers=session)
                assert deleted.status_code in (200, 204)
                await ended.wait()  # the call's POST ends with its session
            await wait_for_event(events, "CANCELLED slow")
            other = await open_session(http, gw.url)
            answer = await http.post(gw.url, headers={**JSON_AND_SSE, **other}, json=call("alpha__echo", 8, text="on"))
            assert answer.json()["result"]["content"][0]["text"] == "on"
            gone = await http.post(gw.url, headers={**JSON_AND_SSE, **session}, json=call("alpha__echo", 9, text="x"))
            assert gone.status_code == 404


# --- the lane on the SDK's own dispatcher, without HTTP ---------------------------------------------


async def _no_notifications(*_: Any) -> None:
    return None


@asynccontextmanager
async def _session(on_request: Any) -> AsyncIterator[tuple[lane.Lane, Any, Any]]:
    """A running dispatcher and its lane: (the lane, what the peer sends it, what it writes)."""
    to_session, session_reads = anyio.create_memory_object_stream[Any](16)
    session_writes, from_session = anyio.create_memory_object_stream[Any](16)
    dispatcher: JSONRPCDispatcher[Any] = JSONRPCDispatcher(session_reads, session_writes,
                                                           inline_methods=frozenset({"initialize"}))  # as serve_loop
    the_lane = lane.Lane.attach(dispatcher, on_request)
    assert the_lane is not None
    async with anyio.create_task_group() as tg:
        await tg.start(partial(dispatcher.run, on_request, _no_notifications))
        yield the_lane, to_session, from_session
        tg.cancel_scope.cancel()


def _request(id: int, method: str = "tools/call") -> JSONRPCRequest:
    return JSONRPCRequest(jsonrpc="2.0", id=id, method=method, params={"name": "t"})


async def test_the_lane_answers_through_the_sessions_write_stream() -> None:
    async def on_request(dctx: Any, method: str, params: Any) -> dict[str, Any]:
        if params["name"] == "boom":
            raise MCPError(INVALID_PARAMS, "no such thing")
        return {"method": method, "id": dctx.request_id}

    with anyio.fail_after(WAIT):
        async with _session(on_request) as (the_lane, _, written):
            await the_lane.handle(_request(1), None)
            answer = (await written.receive()).message
            assert isinstance(answer, JSONRPCResponse) and answer.id == 1
            assert answer.result == {"method": "tools/call", "id": 1}
            failing = JSONRPCRequest(jsonrpc="2.0", id=2, method="tools/call", params={"name": "boom"})
            await the_lane.handle(failing, None)
            error = (await written.receive()).message
            assert isinstance(error, JSONRPCError) and error.id == 2 and error.error.message == "no such thing"


@pytest.mark.parametrize("by", ["the peer", "the session's end"])
async def test_a_request_the_lane_handles_is_cancelled_by_the_peer_or_the_sessions_end(by: str) -> None:
    started, finished = anyio.Event(), anyio.Event()

    async def on_request(dctx: Any, method: str, params: Any) -> dict[str, Any]:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("not reached")

    async def handle(the_lane: lane.Lane) -> None:
        await the_lane.handle(_request(5), None)
        finished.set()

    with anyio.fail_after(WAIT):
        async with _session(on_request) as (the_lane, peer, written), anyio.create_task_group() as tg:
            assert the_lane.takes(_request(5)) and not the_lane.takes(_request(6, "initialize"))
            tg.start_soon(handle, the_lane)
            await started.wait()
            if by == "the peer":
                cancel = JSONRPCNotification(jsonrpc="2.0", method="notifications/cancelled", params={"requestId": 5})
                await peer.send(SessionMessage(cancel))
            else:
                the_lane.close()
            await finished.wait()
            with pytest.raises(anyio.WouldBlock):
                written.receive_nowait()  # a cancelled request is not answered by the dispatcher
            assert the_lane.takes(_request(7)) == (by == "the peer")
