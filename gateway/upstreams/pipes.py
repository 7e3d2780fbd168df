"""A stdio upstream's streams, read and written by the session's own tasks: no relay tasks.

The SDK's ``stdio_client`` puts two tasks and two rendezvous memory streams between the client
session and the child's pipes: a reader task parsing stdout into a stream, a writer task taking
messages off another stream and writing them to stdin. Every request and every answer of a call
crosses one of them, a task switch each way, about a tenth of the gateway's CPU per call
(docs/benchmarks.md). Here the read side *is* the pipe: the session's receive loop reads stdout
itself, a chunk at a time, and is handed one parsed message per line; the write side writes each
message to stdin from the task sending it (one write, flow control by the pipe's drain).

The child is started as the SDK starts it (its own process group, the SDK's default environment),
but by the standard library, with pipes and nothing else open in it (``spawn.py``: uvloop's spawn
leaves copies of the pipes' ends in the child, which hides a child's exit or its closing stdin).
Everything else is the SDK's, reused from ``mcp.client.stdio`` rather than copied: how a line is
parsed (a bad line is handed to the session as the error it is, the connection goes on), and how
the child is stopped (stdin closed, a grace period, then the whole group terminated and killed),
with stdout drained meanwhile so a child blocked on a full pipe can still exit.
tests/test_upstream_pipes.py guards the SDK names used here.

Differences: lines are parsed as the bytes they are (pydantic reads UTF-8 itself: invalid UTF-8 in
a line is that line's parse error, not the end of the connection), and nothing is read ahead of
the session: stdout is read only when the session asks for its next message.
"""

from __future__ import annotations

import sys
from collections import deque
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Self, TextIO

import anyio
from mcp.client.stdio import (StdioServerParameters, _create_platform_compatible_process, _drain_stdout,
                              _get_executable_command, _parse_line, _stop_server_process, get_default_environment)
from mcp.shared.message import SessionMessage

from gateway.upstreams.spawn import CHUNK, spawn

_GONE = (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError)


@asynccontextmanager
async def stdio_pipes(params: StdioServerParameters, errlog: TextIO) -> AsyncIterator[tuple["Lines", "Writes"]]:
    """``stdio_client``'s contract: the child started, its (read, write) streams, and on the way
    out the child stopped, whatever happened (shielded, bounded by the SDK's timeouts)."""
    command = await _get_executable_command(params.command)
    start = _create_platform_compatible_process if sys.platform == "win32" else spawn
    process = await start(command=command, args=params.args, env=get_default_environment() | (params.env or {}),
                          errlog=errlog, cwd=params.cwd)
    lines = Lines(process.stdout)
    writes = Writes(process.stdin, lines)
    try:
        yield lines, writes
    finally:
        with anyio.CancelScope(shield=True):
            lines.close()
            writes.close()
            async with anyio.create_task_group() as tg:
                tg.start_soon(_drain_stdout, process)  # a child blocked writing stdout could not exit
                await _stop_server_process(process)  # closes stdout last, which ends the drain


class _Closable:
    """A stream's async context and ``aclose``, both closing it (``close``)."""

    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


class Lines(_Closable):
    """The read stream: one ``SessionMessage`` (or the exception its line failed to parse with) per
    line of the child's stdout, read when asked for. Ends (``EndOfStream``) at EOF or when the pipe
    breaks; ``ClosedResourceError`` once closed. One reader at a time: the session's loop."""

    def __init__(self, stdout: Any) -> None:
        self._stdout = stdout
        self._lines: deque[bytes] = deque()
        self._partial = b""
        self._ended = False
        self._closed = False

    async def receive(self) -> SessionMessage | Exception:
        while not self._lines:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._ended:
                raise anyio.EndOfStream
            try:
                chunk = await self._stdout.receive(CHUNK)
            except _GONE:
                self._ended = True  # a last line without its newline is dropped, as the SDK does
                continue
            parts = (self._partial + chunk).split(b"\n") if self._partial else chunk.split(b"\n")
            self._partial = parts.pop()
            self._lines.extend(parts)
        return _parse_line(self._lines.popleft())  # type: ignore[arg-type]  # bytes parse as str does

    def __aiter__(self) -> "Lines":
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        self._closed = True
        self._lines.clear()

    async def end(self) -> None:
        """The connection is over (stdin broke): a read in progress ends now."""
        self._ended = True
        await self._stdout.aclose()


class Writes(_Closable):
    """The write stream: each message one line on the child's stdin, written by the sending task.
    A broken stdin ends the read side too, as the SDK's writer does: the session then sees the
    connection end instead of a request waiting for an answer that cannot come."""

    def __init__(self, stdin: Any, lines: Lines) -> None:
        self._stdin = stdin
        self._lines = lines
        self._closed = False

    async def send(self, item: SessionMessage) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        message = item.message
        data = type(message).__pydantic_serializer__.to_json(message, by_alias=True, exclude_unset=True)
        try:
            await self._stdin.send(data + b"\n")
        except _GONE as exc:
            self._closed = True
            await self._lines.end()
            raise anyio.BrokenResourceError from exc

    def close(self) -> None:
        self._closed = True
