"""A stdio upstream's child process, started by the standard library on every event loop.

The SDK starts the child with ``anyio.open_process``, which is the event loop's own spawn. Under
uvloop (the gateway's loop) that spawn leaves duplicates of the child's ends of its pipes open in
the child, at other descriptor numbers, and its stdin and stdout are socket pairs. Three things
follow, all seen from the gateway:

- a child that closes its stdin is not seen doing so: it still holds a copy, so writes fill the
  socket and wait until the call's timeout;
- a child that dies while a process it started lives on (a browser, a helper left in the
  background) is not seen dying: that process inherited the copies, so stdout never ends and
  calls wait for answers that cannot come;
- ``/dev/stdin`` and ``/proc/self/fd/1`` cannot be opened by the child (a socket is not a file).

Here the child is started by ``subprocess.Popen`` (``close_fds``: it holds its three standard
descriptors and nothing else; pipes, in its own session as the SDK starts it), in a worker thread
so the fork never holds up the loop, and the gateway's ends are the loop's own pipe transports.
The object returned is an ``anyio.abc.Process``, so the SDK's stop (stdin closed, a grace period,
the whole group terminated, then killed) works on it unchanged. Windows keeps the SDK's spawn.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import anyio
import anyio.to_thread
from anyio.abc import ByteReceiveStream, ByteSendStream, Process

CHUNK = 1 << 16  # the most read from stdout at once
EXIT_POLL_INTERVAL = 0.05  # how often ``wait`` looks whether the child has exited


async def spawn(command: str, args: list[str], env: dict[str, str], errlog: TextIO,
                cwd: Path | str | None) -> Process:
    """The child started with pipes for stdin and stdout, stderr to ``errlog``, in a new session.
    Raises what ``Popen`` raises (``FileNotFoundError`` naming the command, ``PermissionError``).
    Shielded: a cancellation arriving meanwhile is seen by the caller, who then stops the child."""
    with anyio.CancelScope(shield=True):
        child_stdin, our_stdin = os.pipe()
        our_stdout, child_stdout = os.pipe()
        try:
            popen = await anyio.to_thread.run_sync(partial(
                subprocess.Popen, [command, *args], stdin=child_stdin, stdout=child_stdout, stderr=errlog, env=env,
                cwd=cwd, close_fds=True, start_new_session=True))
        except BaseException:
            os.close(our_stdin)
            os.close(our_stdout)
            raise
        finally:
            os.close(child_stdin)
            os.close(child_stdout)
        ends = _PipeEnd(our_stdout), _PipeEnd(our_stdin)
        try:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=CHUNK, loop=loop)
            read_transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader, loop=loop), ends[0])
            write_transport, flow = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, ends[1])
        except BaseException:
            for end in ends:
                end.close()
            popen.kill()
            popen.wait()
            raise
    writer = asyncio.StreamWriter(write_transport, flow, None, loop)
    return ChildProcess(popen, PipeSend(writer), PipeReceive(reader, read_transport))


class _PipeEnd:
    """Our end of one of the child's pipes, for a pipe transport to own. Closed at most once, and
    only while its number still names this pipe: uvloop's transport closes the descriptor itself
    and then calls ``close`` as well (MagicStack/uvloop#763), by which time another thread may
    have been given the same number."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._identity = _identity(fd)

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0 and _identity(fd) == self._identity:
            os.close(fd)


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        status = os.fstat(fd)
    except OSError:
        return None
    return status.st_dev, status.st_ino


class PipeReceive(ByteReceiveStream):
    """The child's stdout. ``EndOfStream`` at its end, or once closed."""

    def __init__(self, reader: asyncio.StreamReader, transport: asyncio.ReadTransport) -> None:
        self._reader = reader
        self._transport = transport

    async def receive(self, max_bytes: int = CHUNK) -> bytes:
        data = await self._reader.read(max_bytes)
        if not data:
            raise anyio.EndOfStream
        return data

    async def aclose(self) -> None:
        self._transport.close()  # the protocol's connection_lost ends a read in progress
        self._reader.feed_eof()


class PipeSend(ByteSendStream):
    """The child's stdin. ``send`` returns at once unless the pipe is full (no yield to the loop
    per message); ``BrokenResourceError`` once the child has closed its end."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def send(self, item: bytes) -> None:
        writer = self._writer
        if writer.is_closing():
            raise anyio.BrokenResourceError
        try:
            writer.write(item)
            await writer.drain()
        except (ConnectionError, RuntimeError) as exc:  # EPIPE; uvloop: a write to a closed pipe
            raise anyio.BrokenResourceError from exc

    async def aclose(self) -> None:
        self._writer.close()


class ChildProcess(Process):
    """A ``Popen`` child behind anyio's process interface. ``returncode`` reaps the child once it
    has exited (the SDK's stop polls it)."""

    def __init__(self, popen: subprocess.Popen[bytes], stdin: PipeSend, stdout: PipeReceive) -> None:
        self._popen = popen
        self._stdin = stdin
        self._stdout = stdout

    async def aclose(self) -> None:
        await self._stdin.aclose()
        await self._stdout.aclose()
        await self.wait()

    async def wait(self) -> int:
        while (code := self._popen.poll()) is None:
            await anyio.sleep(EXIT_POLL_INTERVAL)
        return code

    def terminate(self) -> None:
        self._popen.terminate()

    def kill(self) -> None:
        self._popen.kill()

    def send_signal(self, signal: Any) -> None:
        self._popen.send_signal(signal)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    @property
    def stdin(self) -> PipeSend:
        return self._stdin

    @property
    def stdout(self) -> PipeReceive:
        return self._stdout

    @property
    def stderr(self) -> None:
        return None
