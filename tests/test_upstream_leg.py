"""The per-request work of the upstream leg that the gateway keeps small: the caller's capabilities
(sent with every request to a 2026-07-28 upstream) are dumped once per declared object, and the
end of an upstream's read side is seen without a relay task per connection."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import anyio
import mcp_types as types
import pytest

from gateway.caller import Caller
from gateway.upstreams.connection import Streams, watched

pytestmark = pytest.mark.anyio


def caller(capabilities: Any, version: str = "2025-11-25") -> Caller:
    session = SimpleNamespace(client_capabilities=capabilities, _connection=object())
    return Caller(SimpleNamespace(session=session, protocol_version=version, meta=None), "")


def test_a_sessions_capabilities_are_dumped_once_and_follow_what_it_declares() -> None:
    declared = types.ClientCapabilities(sampling=types.SamplingCapability(), roots=types.RootsCapability(list_changed=True))
    first = caller(declared).capabilities()
    assert first == {"sampling": {}, "roots": {"listChanged": True}}
    assert caller(declared).capabilities() is first  # another request of the same session
    other = types.ClientCapabilities(elicitation=types.ElicitationCapability())
    assert caller(other).capabilities() == {"elicitation": {}}
    assert caller(None).capabilities() == {}


def test_a_2026_client_declares_with_each_request_so_nothing_is_kept() -> None:
    declared = types.ClientCapabilities(sampling=types.SamplingCapability())
    one = caller(declared, "2026-07-28")
    assert one.capabilities() is one.capabilities() == {"sampling": {}}  # once per request
    assert caller(declared, "2026-07-28").capabilities() is not one.capabilities()


async def test_the_end_of_the_read_side_is_reported_once() -> None:
    send, receive = anyio.create_memory_object_stream[Any](1)
    ended: list[bool] = []
    with anyio.fail_after(5):
        async with watched(Streams((receive, send)), lambda: ended.append(True)) as (read, _):
            await send.send("message")
            send.close()
            assert [item async for item in read] == ["message"]
            assert ended == [True]
            await read.aclose()
    assert ended == [True]


async def test_a_read_side_closed_by_the_session_is_reported_too() -> None:
    send, receive = anyio.create_memory_object_stream[Any](1)
    ended: list[bool] = []
    with anyio.fail_after(5):
        async with watched(Streams((receive, send)), lambda: ended.append(True)) as (read, _):
            async with read:
                pass
    assert ended == [True]
    send.close()
