"""The stdio front (``gateway.stdio_front``): MCP over stdin/stdout on the event loop's pipes.

In-process over real pipes, a terminal and a regular file: lines arrive whole however the bytes
are cut, the descriptors handed to the gateway are left as they were (blocking), ``close()`` ends
the input, a malformed line reaches the server loop as the error it is (the SDK's contract), and
a reader that goes away is noticed. Then the real gateway: stdin from a regular file, garbage
lines on a pipe, and stdout closed under it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import subprocess
import sys
import tty
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import mcp_types as types
import pytest
from gateway_harness import MCPGW, write_config
from mcp.shared.message import SessionMessage
from upstreams import fixture_args

from gateway.stdio_front import StdinLines, StdioFront

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[pytest.param(("asyncio", {}), id="asyncio"),
                        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Both event loops the gateway runs on: asyncio's own, and uvloop where it is installed
    (their pipe transports differ: uvloop's own the descriptor, and refuse writes once closed)."""
    if request.param[1] and importlib.util.find_spec("uvloop") is None:
        pytest.skip("uvloop is not installed")
    return request.param
WAIT = 30
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


async def all_lines(stdin: StdinLines) -> list[bytes]:
    return [line async for line in stdin.lines()]


# --- in-process -----------------------------------------------------------------------------------

async def test_lines_arrive_whole_however_the_bytes_are_cut_and_the_pipe_stays_blocking() -> None:
    read, write = os.pipe()
    try:
        stdin = StdinLines(read)
        got: list[bytes] = []
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                async def collect() -> None:
                    got.extend(await all_lines(stdin))
                tg.start_soon(collect)
                for piece in (b'{"a":', b' 1}\n{"b": 2}\r\n\n{"c"', b": 3}"):
                    os.write(write, piece)
                    await anyio.sleep(0)  # each piece may arrive on its own
                os.close(write)
                write = -1
        assert got == [b'{"a": 1}', b'{"b": 2}\r', b"", b'{"c": 3}']  # the last one has no newline
        assert os.get_blocking(read), "the descriptor we were given must stay as it was"
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)


async def test_a_terminal_is_read_on_the_loop_and_left_blocking() -> None:
    leader, follower = os.openpty()
    try:
        stdin = StdinLines(follower)
        with anyio.fail_after(WAIT):
            lines = stdin.lines()
            os.write(leader, b'{"a": 1}\n')
            assert await lines.__anext__() == b'{"a": 1}'
            stdin.close()
            assert [rest async for rest in lines] == []
        assert os.get_blocking(follower)
    finally:
        os.close(leader)
        os.close(follower)


async def test_answers_reach_a_terminal() -> None:
    leader, follower = os.openpty()
    tty.setraw(follower)  # no line discipline between what is written and what the leader reads
    in_read, in_write = os.pipe()
    try:
        front = StdioFront(StdinLines(in_read), stdout=follower)
        with anyio.fail_after(WAIT):
            async with front.streams() as (read, write):
                await write.send(SessionMessage(types.JSONRPCResponse(jsonrpc="2.0", id=1, result={})))
                await anyio.wait_readable(leader)
                assert os.read(leader, 1024) == b'{"jsonrpc":"2.0","id":1,"result":{}}\n'
                os.close(in_write)
                in_write = -1
                with pytest.raises(anyio.EndOfStream):
                    await read.receive()
                await write.aclose()
        assert os.get_blocking(follower)
    finally:
        for fd in (leader, follower, in_read, in_write):
            if fd >= 0:
                os.close(fd)


async def test_a_regular_file_is_read_by_a_thread_to_its_end(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n')
    fd = os.open(path, os.O_RDONLY)
    try:
        with anyio.fail_after(WAIT):
            assert await all_lines(StdinLines(fd)) == [b'{"a": 1}', b'{"b": 2}']
    finally:
        os.close(fd)


async def test_close_ends_the_input_while_the_client_keeps_stdin_open() -> None:
    read, write = os.pipe()
    try:
        with anyio.fail_after(WAIT):
            closed_early = StdinLines(read)
            closed_early.close()
            assert await all_lines(closed_early) == []
            stdin = StdinLines(read)
            lines = stdin.lines()
            os.write(write, b"first\n")
            assert await lines.__anext__() == b"first"  # reading, and waiting for more
            stdin.close()
            assert [rest async for rest in lines] == []
    finally:
        os.close(read)
        os.close(write)


async def test_the_front_keeps_the_sdk_contract_and_notices_a_reader_that_left() -> None:
    """A malformed line is handed to the server loop as its exception, a good one as a
    SessionMessage; answers are written one JSON line each, as the SDK's stdio server writes them;
    once the client stops reading, the input ends instead of answers piling up."""
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    front = StdioFront(StdinLines(in_read), stdout=out_write)
    try:
        with anyio.fail_after(WAIT):
            async with front.streams() as (read, write):
                os.write(in_write, b"not json\n" + line({"jsonrpc": "2.0", "id": 7, "method": "ping"}))
                assert isinstance(await read.receive(), Exception)
                ping = await read.receive()
                assert isinstance(ping, SessionMessage) and ping.message.method == "ping"  # type: ignore[union-attr]
                answer = types.JSONRPCResponse(jsonrpc="2.0", id=7, result={"é": "\u2028"})
                await write.send(SessionMessage(answer))
                await anyio.wait_readable(out_read)
                written = os.read(out_read, 65536)
                assert written == answer.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
                os.close(out_read)
                out_read = -1
                for n in range(3):  # the first write after the reader left may still land in the pipe
                    await write.send(SessionMessage(types.JSONRPCResponse(jsonrpc="2.0", id=n, result={})))
                    if front.output_lost:
                        break
                assert front.output_lost
                with pytest.raises(anyio.EndOfStream):
                    await read.receive()  # the input ended although stdin is still open
                await write.aclose()
    finally:
        for fd in (in_read, in_write, out_write, out_read):
            if fd >= 0:
                os.close(fd)


async def test_answers_sent_together_arrive_as_whole_lines_in_order() -> None:
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    try:
        front = StdioFront(StdinLines(in_read), stdout=out_write)
        with anyio.fail_after(WAIT):
            async with front.streams() as (_, write):
                async with anyio.create_task_group() as tg:
                    for n in range(200):  # senders queue up while the writer is busy: written in batches
                        tg.start_soon(write.send, SessionMessage(types.JSONRPCResponse(jsonrpc="2.0", id=n, result={})))
                        await anyio.lowlevel.checkpoint()  # queued in this order
                received = b""
                while received.count(b"\n") < 200:
                    await anyio.wait_readable(out_read)
                    received += os.read(out_read, 1 << 16)
                os.close(in_write)
                in_write = -1
                await write.aclose()
        assert [json.loads(text)["id"] for text in received.splitlines()] == list(range(200))
    finally:
        for fd in (in_read, in_write, out_read, out_write):
            if fd >= 0:
                os.close(fd)


# --- the real gateway -----------------------------------------------------------------------------

def gateway_config(tmp_path: Path) -> Path:
    return write_config(tmp_path, json.dumps({"version": 1, "servers": {
        "alpha": {"command": sys.executable, "args": fixture_args("alpha")}}}))


def test_stdin_from_a_regular_file_is_served_until_its_end(tmp_path: Path) -> None:
    """``mcpgw serve < requests.jsonl``: answered (initialize is answered before the next line is
    read; later requests may still be in flight when the input ends), then a clean stop."""
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(line(INITIALIZE) + line(INITIALIZED) + b"garbage\n" + line(
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
    with requests.open("rb") as stdin:
        result = subprocess.run([MCPGW, "serve", str(gateway_config(tmp_path)), "--no-watch"], stdin=stdin,
                                capture_output=True, timeout=WAIT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    answers = [json.loads(text) for text in result.stdout.decode().splitlines()]
    assert answers[0]["id"] == 1 and answers[0]["result"]["serverInfo"]["name"] == "mcpgw"
    assert all(answer["id"] == 2 for answer in answers[1:])
    assert "input closed; stopping" in result.stderr.decode()


async def test_garbage_lines_do_not_end_the_session(tmp_path: Path) -> None:
    stderr_path = tmp_path / "stderr.log"
    with anyio.fail_after(WAIT), stderr_path.open("wb") as stderr:
        process = await anyio.open_process([MCPGW, "serve", str(gateway_config(tmp_path)), "--no-watch"],
                                           stderr=stderr, cwd=str(tmp_path))
        try:
            assert process.stdin and process.stdout
            await process.stdin.send(b"not json at all\n" + line(INITIALIZE) + line(INITIALIZED) + b'{"id": 3}\n\n'
                                     + b"\xff\xfe\n" + line({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
            answers = await read_answers(process.stdout, 2)
            assert answers[1]["result"]["protocolVersion"] == "2025-11-25"
            assert "alpha__whoami" in {tool["name"] for tool in answers[2]["result"]["tools"]}
            await process.stdin.aclose()
            assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def test_the_gateway_stops_when_its_client_stops_reading(tmp_path: Path) -> None:
    """stdout closed (EPIPE): logged once, and the gateway stops as when stdin closes."""
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen([MCPGW, "serve", str(gateway_config(tmp_path)), "--no-watch"], cwd=tmp_path,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        try:
            assert process.stdin and process.stdout
            process.stdin.write(line(INITIALIZE))
            process.stdin.flush()
            assert select.select([process.stdout], [], [], WAIT)[0], "no answer to initialize"
            assert json.loads(process.stdout.readline())["id"] == 1
            process.stdout.close()  # the client stops reading; stdin stays open
            process.stdin.write(line(INITIALIZED) + line({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
            process.stdin.flush()
            assert process.wait(timeout=WAIT) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    log = stderr_path.read_text()
    assert "output closed; stopping" in log and "Traceback" not in log


async def read_answers(stdout: Any, last_id: int) -> dict[Any, Any]:
    """JSON-RPC answers from the gateway's stdout, by id, until the one with ``last_id``."""
    answers: dict[Any, Any] = {}
    buffer = b""
    while last_id not in answers:
        buffer += await stdout.receive()
        *complete, buffer = buffer.split(b"\n")
        for text in complete:
            message = json.loads(text)
            answers[message.get("id")] = message
    return answers
