"""A stdio upstream's streams without relay tasks (gateway/upstreams/pipes.py), against real children:
what the session reads from a child that writes well, badly or not at all, what it writes, and
how the child is stopped. The whole gateway over these streams is tested everywhere else (every
stdio upstream of the suite runs on them)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import TextIO
from pathlib import Path

import anyio
import mcp.client.stdio as sdk_stdio
import mcp_types as types
import pytest
from mcp.client.stdio import StdioServerParameters
from mcp.shared.message import SessionMessage

from gateway.upstreams.pipes import CHUNK, stdio_pipes

pytestmark = pytest.mark.anyio
WAIT = 20


@pytest.fixture(params=[pytest.param(("asyncio", {}), id="asyncio"),
                        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """Both loops the gateway runs on: the standard one and uvloop (its default), whose own spawn
    and pipes behave differently from the standard library's."""
    return request.param


@pytest.fixture
def errlog() -> Iterator[TextIO]:
    """Where the children's stderr goes (the gateway gives a pipe it logs from)."""
    with open(os.devnull, "w") as sink:
        yield sink


def child(script: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-c", script])


def test_the_sdk_parts_reused_are_there() -> None:
    """Spawning, parsing a line and stopping the child are the SDK's own functions, private ones:
    if a release renames them, this names which."""
    for name in ("_create_platform_compatible_process", "_drain_stdout", "_get_executable_command", "_parse_line",
                 "_stop_server_process", "get_default_environment"):
        assert callable(getattr(sdk_stdio, name)), name


async def test_each_line_is_a_message_or_the_error_it_failed_with_in_order(errlog: TextIO) -> None:
    response = '{"jsonrpc":"2.0","id":1,"result":{}}'
    long_text = "x" * (3 * CHUNK)  # one line over several reads
    script = (
        "import sys\n"
        "out = sys.stdout.buffer\n"
        f"out.write(b'not json\\n' + {response.encode()!r} + b'\\n')\n"
        "out.write(b'\\xff\\xfe\\n')\n"
        "note = '{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"%s\"}}'\n"
        f"out.write((note % ('x' * {3 * CHUNK})).encode() + b'\\n')\n"
        "out.write(b'{\"jsonrpc\":\"2.0\",\"id\":2,\"resu')\n"  # the last line never ends: dropped
        "out.flush()\n")
    with anyio.fail_after(WAIT):
        async with stdio_pipes(child(script), errlog) as (lines, _):
            got = [item async for item in lines]
    assert isinstance(got[0], Exception)
    assert isinstance(got[1], SessionMessage) and got[1].message == types.JSONRPCResponse(
        jsonrpc="2.0", id=1, result={})
    assert isinstance(got[2], Exception), "invalid UTF-8 is that line's error, the connection goes on"
    assert isinstance(got[3], SessionMessage) and got[3].message.params["data"] == long_text
    assert len(got) == 4


async def test_a_message_written_is_one_line_on_the_childs_stdin(errlog: TextIO) -> None:
    echo = "import sys\nfor line in sys.stdin.buffer:\n    sys.stdout.buffer.write(line); sys.stdout.flush()\n"
    request = types.JSONRPCRequest(jsonrpc="2.0", id=7, method="tools/call", params={"name": "é", "arguments": {}})
    with anyio.fail_after(WAIT):
        async with stdio_pipes(child(echo), errlog) as (lines, writes):
            await writes.send(SessionMessage(request))
            await writes.send(SessionMessage(request))
            first, second = await lines.receive(), await lines.receive()
    assert isinstance(first, SessionMessage) and first.message == request
    assert isinstance(second, SessionMessage) and second.message == request


async def test_a_child_that_closes_its_stdin_ends_the_connection_for_reader_and_writer(errlog: TextIO) -> None:
    """As with the SDK's writer: a broken stdin ends the read side too, so no request waits for an
    answer that cannot come. (Under uvloop's own spawn the child kept a copy of its stdin, so its
    closing it went unseen: writes filled the pipe and waited until the call's timeout.)"""
    script = "import os, time\nos.close(0)\ntime.sleep(60)\n"
    request = SessionMessage(types.JSONRPCRequest(jsonrpc="2.0", id=1, method="ping"))
    with anyio.fail_after(WAIT):
        async with stdio_pipes(child(script), errlog) as (lines, writes):
            async with anyio.create_task_group() as tg:
                ended = anyio.Event()

                async def read() -> None:
                    with pytest.raises(anyio.EndOfStream):
                        await lines.receive()
                    ended.set()

                tg.start_soon(read)
                with pytest.raises(anyio.BrokenResourceError):
                    while True:  # writes fill the pipe until the child has closed its end, then break
                        await writes.send(request)
                await ended.wait()
            with pytest.raises(anyio.ClosedResourceError):
                await writes.send(request)


async def test_a_child_with_unread_output_still_stops_gracefully(tmp_path: Path, errlog: TextIO) -> None:
    """Leaving drains stdout while the child is stopped: one blocked on a full pipe can finish,
    see stdin close and exit by itself, not only by the kill."""
    marker = tmp_path / "exited"
    script = ("import sys\n"
              "sys.stdout.buffer.write(b'x' * (1 << 20) + b'\\n'); sys.stdout.flush()\n"
              "sys.stdin.buffer.read()\n"
              f"open({str(marker)!r}, 'w').write('clean')\n")
    with anyio.fail_after(WAIT):
        async with stdio_pipes(child(script), errlog):
            pass
    assert marker.read_text() == "clean"


async def test_a_closed_read_side_says_so(errlog: TextIO) -> None:
    with anyio.fail_after(WAIT):
        async with stdio_pipes(child("import time; time.sleep(60)"), errlog) as (lines, _):
            await lines.aclose()
            with pytest.raises(anyio.ClosedResourceError):
                await lines.receive()


async def test_a_child_that_dies_is_seen_dying_though_a_process_it_started_lives_on(errlog: TextIO) -> None:
    """A server that started a helper (here one that inherits every descriptor it may, as Node's
    spawn does) and then crashed: its stdout ends, so calls fail now rather than at their timeout.
    Under uvloop's own spawn the helper held a copy of the server's stdout and nothing ended."""
    script = ("import subprocess, sys\n"
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], close_fds=False,\n"
              "                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)\n"
              "sys.exit(3)\n")
    with anyio.fail_after(WAIT):
        async with stdio_pipes(child(script), errlog) as (lines, _):
            with pytest.raises(anyio.EndOfStream):
                await lines.receive()


async def test_the_child_holds_its_three_pipes_and_nothing_else(errlog: TextIO) -> None:
    """No descriptor of the gateway's, or copy of its own pipes, reaches the child; stdin and stdout
    are pipes, so a server may open /dev/stdin (a socket pair, uvloop's own, cannot be opened)."""
    script = ("import json, os, stat\n"
              "fds = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))\n"
              "open('/dev/stdin', 'rb').close()\n"
              "pipes = [stat.S_ISFIFO(os.fstat(fd).st_mode) for fd in (0, 1)]\n"
              "print(json.dumps({'jsonrpc': '2.0', 'method': 'fds', 'params': {'fds': fds, 'pipes': pipes}}), flush=True)\n")
    with anyio.fail_after(WAIT):
        async with stdio_pipes(child(script), errlog) as (lines, _):
            report = await lines.receive()
    assert isinstance(report, SessionMessage), report
    params = report.message.params
    assert params["pipes"] == [True, True]
    assert params["fds"][:3] == [0, 1, 2] and len(params["fds"]) == 4, params["fds"]  # the fourth: listdir's own
