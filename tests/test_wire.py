"""Results passed on in wire form (gateway/upstreams/wire.py): sent through the SDK's session,
checked and shaped once for the client's protocol version, and an upstream whose result breaks the
protocol answered with an error that names it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from gateway_harness import gateway_stdio, write_config
from mcp import Client
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError
from upstreams import fixture_args, stdio_params

from gateway.upstreams import wire

pytestmark = pytest.mark.anyio
WAIT = 60
LEGACY, MODERN = "2025-11-25", "2026-07-28"
CONTENT = [{"type": "text", "text": "hi"}]


def test_a_newer_servers_result_is_cut_to_an_older_clients_version() -> None:
    result = wire.WireResult("tools/call", {"content": CONTENT, "resultType": "complete", "ttlMs": 5}, MODERN)
    assert result.shaped(LEGACY) == {"content": CONTENT}


def test_an_older_servers_result_is_complete_for_a_newer_client_and_keeps_to_its_own_version() -> None:
    result = wire.WireResult("tools/call", {"content": CONTENT, "ttlMs": 5}, LEGACY)  # ttlMs is 2026-07-28's
    assert result.shaped(MODERN) == {"content": CONTENT, "isError": False, "resultType": "complete"}
    read = wire.WireResult("resources/read", {"contents": [{"uri": "x:/a", "text": "hi"}]}, LEGACY)
    assert read.shaped(MODERN) == {"contents": [{"uri": "x:/a", "text": "hi"}], "resultType": "complete",
                                   "ttlMs": 0, "cacheScope": "private"}


def test_fields_the_clients_version_requires_take_the_sdks_defaults_and_the_rest_is_kept() -> None:
    """In the SDK's union for the version, a read result without its caching fields would pass as an
    input-required result and come out as nothing but ``resultType``."""
    read = wire.WireResult("resources/read", {"contents": [{"uri": "x:/a", "text": "hi"}], "resultType": "complete"},
                           MODERN)
    assert read.shaped(MODERN)["contents"] == [{"uri": "x:/a", "text": "hi"}]


def test_a_result_that_breaks_the_clients_version_is_refused() -> None:
    with pytest.raises(ValidationError):
        wire.WireResult("tools/call", {"content": "not a list"}, LEGACY).shaped(LEGACY)
    with pytest.raises(ValidationError):
        wire.WireResult("prompts/get", {"messages": [{"role": "nobody"}]}, MODERN).shaped(MODERN)


def _sdk_stamp(era: str, log_level: str | None = "warning") -> Any:
    from mcp.client.session import _make_handshake_stamp, _make_modern_stamp
    if era == LEGACY:
        return _make_handshake_stamp(LEGACY)
    return _make_modern_stamp(MODERN, {"name": "mcpgw", "version": "1"}, {"sampling": {}},
                              lambda name, arguments: {"Mcp-Param-Region": "eu"}, log_level=log_level)


@pytest.mark.parametrize("era", [LEGACY, MODERN])
@pytest.mark.parametrize("log_level", [None, "warning"])
@pytest.mark.parametrize("method,params", [
    ("tools/call", {"name": "echo", "arguments": {"text": "hi"}}),
    ("tools/call", {"name": "echo", "_meta": {"logLevel": "debug", "progressToken": 7}}),
    ("resources/read", {"uri": "x:/a"}),
    ("ping", None),
])
def test_a_pipes_stamp_puts_in_the_sdks_meta_without_the_headers(era: str, log_level: str | None, method: str,
                                                                 params: dict[str, Any] | None) -> None:
    """What a stdio session sends (``wire.without_headers``): the request exactly as the SDK's stamp
    makes it, a request's own log level kept over the session's, and none of the HTTP headers."""
    def data() -> dict[str, Any]:
        made: dict[str, Any] = {"method": method}
        if params is not None:
            made["params"] = json.loads(json.dumps(params))
        return made

    sdk_data, sdk_opts = data(), {}
    _sdk_stamp(era, log_level)(sdk_data, sdk_opts)
    ours, our_opts = data(), {}
    wire.without_headers(_sdk_stamp(era, log_level))(ours, our_opts)
    if era == LEGACY and params is None:
        assert "params" not in ours
    else:
        assert ours.get("params", {}) == sdk_data.get("params", {})
    assert "headers" in sdk_opts and "headers" not in our_opts
    assert our_opts == {key: value for key, value in sdk_opts.items() if key != "headers"}


def test_attempt_params_carry_the_answers_and_leave_the_request_as_it_was() -> None:
    request = wire.Request("tools/call", wire.present(name="t", arguments=None))
    answers = {"q1": types.ElicitResult(action="accept", content={"answer": "yes"})}
    params = request.attempt(answers, "state-1", {"k": "v"})
    assert params == {"name": "t", "inputResponses": {"q1": {"action": "accept", "content": {"answer": "yes"}}},
                      "requestState": "state-1", "_meta": {"k": "v"}}
    assert request.params == {"name": "t"}


class _PublicOnly:
    """A session with only the SDK's public surface (as another SDK release might have it)."""

    def __init__(self, session: Any) -> None:
        self.protocol_version = session.protocol_version
        self.send_request = session.send_request


async def _never_asked(context: Any, params: Any) -> types.ElicitResult:
    raise AssertionError("the question goes back in the result, not to the client")


class _Client:
    def __init__(self, session: Any) -> None:
        self.session = session


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_result_comes_back_as_sent_without_the_servers_stamp_by_either_path(mode: str) -> None:
    """The dispatcher's path and the public ``send_request`` give the same result: the server's
    own, without its ``serverInfo`` stamp; an input-required result comes back as the SDK's model."""
    echo = wire.Request("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
    with anyio.fail_after(WAIT):
        async with Client(stdio_params("alpha"), mode=mode, elicitation_callback=_never_asked) as client:
            fast = await wire.send(client, echo, echo.attempt(None, None, None))
            public = await wire.send(_Client(_PublicOnly(client.session)), echo, echo.attempt(None, None, None))
            assert isinstance(fast, wire.WireResult) and isinstance(public, wire.WireResult)
            assert fast.result == public.result
            assert fast.result["content"] == CONTENT and "_meta" not in fast.result
            assert fast.version == public.version == client.protocol_version
            if client.protocol_version == MODERN:
                ask = wire.Request("tools/call", {"name": "ask", "arguments": {"question": "ok?"}})
                asked = await wire.send(client, ask, ask.attempt(None, None, None))
                assert isinstance(asked, types.InputRequiredResult) and asked.input_requests


@pytest.mark.parametrize("upstream_protocol", ["auto", LEGACY])
async def test_an_upstream_whose_result_breaks_the_protocol_is_named_and_the_rest_keeps_serving(
        tmp_path: Path, upstream_protocol: str) -> None:
    server = {"command": sys.executable, "args": fixture_args("liar", "stdio", "lying"), "protocol": upstream_protocol}
    path = write_config(tmp_path, json.dumps({"version": 1, "servers": {"liar": server}}))
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path) as client:
            broken = await client.call_tool("liar__malformed", {})
            assert broken.is_error
            assert broken.content[0].text == ("server 'liar' answered tools/call with a result that breaks the "
                                              "protocol (content: Input should be a valid list)")
            with pytest.raises(MCPError, match=r"server 'liar' answered prompts/get with a result that breaks "
                                               r"the protocol \(messages: Input should be a valid list\)"):
                await client.get_prompt("liar__malformed")
            fine = await client.call_tool("liar__well_formed", {})
            assert not fine.is_error and fine.content[0].text == "fine"
