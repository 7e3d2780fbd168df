"""The stdio front: MCP over the process's stdin and stdout, on the event loop's own pipes.

The SDK's ``stdio_server`` reads and writes through worker threads (``anyio.wrap_file``: a thread
round trip for each write and each flush), and the gateway's own stdin reader handed every line
over from a thread too: about half of the gateway's CPU per ``tools/call`` went to waking threads.
Here stdin and stdout are asyncio pipe transports (epoll), so a message costs no thread at all.

The contract is ``stdio_server``'s, so the SDK's server loop cannot tell the difference: the read
stream yields a ``SessionMessage`` per line, or the exception a line failed to parse with
(``jsonrpc_message_adapter.validate_json``, as the SDK does); every ``SessionMessage`` written is
one line, ``model_dump_json(by_alias=True, exclude_unset=True)``. While serving, fd 1 points at
stderr (as ``stdio_server`` does it): a stray ``print`` or child output can never corrupt the wire.

Each stream is given a file description of its own when one can be had (``/proc/self/fd/N``
reopens a pipe, a FIFO or a terminal): making the wire non-blocking must not make the terminal or
a ``2>&1`` stderr shared with the client non-blocking too. A socket (Node clients hand their
children socket pairs) cannot be reopened; its duplicate is made non-blocking and its flags are
put back on the way out. What epoll cannot watch (stdin from a regular file, ``/dev/null``) is
read by a daemon thread and written from a worker thread, as before.

Ends: stdin closing ends the input (the server loop then stops once its answers are written);
``StdinLines.close()`` does the same on a graceful stop; stdout closing (the client stopped
reading) is logged once, ends the input, and later answers are dropped rather than blocking.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import select
import selectors
import stat
import threading
from contextlib import aclosing, asynccontextmanager, nullcontext, suppress
from typing import Any, AsyncIterator, Callable

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import mcp_types as types
from mcp.shared.message import SessionMessage

log = logging.getLogger("mcpgw")
CHUNK = 1 << 16
DRAIN_TIMEOUT = 5.0  # once the server loop has ended, how long its last answers may take to leave
MAX_BATCH = 64  # messages written at once, at most


def _is_pollable(fd: int, events: int) -> bool:
    """Whether the event loop's selector can watch ``fd`` (epoll refuses regular files and /dev/null)."""
    with selectors.DefaultSelector() as selector:
        try:
            selector.register(fd, events)
        except (OSError, ValueError):
            return False
    return True


class _Wire:
    """A descriptor of our own for one end of the wire, for the event loop to make non-blocking.

    ``private``: the file description is ours alone (a pipe, FIFO or terminal reopened through
    /proc). Otherwise it is a duplicate sharing the original's description, whose flags ``close``
    puts back."""

    def __init__(self, fd: int, flags: int) -> None:
        self.private = False
        self._restore: int | None = None
        self.fd = _reopen(fd, flags)
        if self.fd >= 0:
            self.private = True
        else:
            self.fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
            self._restore = fcntl.fcntl(self.fd, fcntl.F_GETFL)

    def file(self, mode: str) -> Any:
        """A file object on a duplicate, for a pipe transport, which owns and closes it (asyncio
        closes the file, uvloop the descriptor): ours stays ours, to restore the flags with."""
        return os.fdopen(fcntl.fcntl(self.fd, fcntl.F_DUPFD_CLOEXEC, 3), mode, buffering=0)

    def close(self) -> None:
        if self.fd < 0:
            return
        if self._restore is not None:
            with suppress(OSError):
                fcntl.fcntl(self.fd, fcntl.F_SETFL, self._restore)
        with suppress(OSError):
            os.close(self.fd)
        self.fd = -1


def _reopen(fd: int, flags: int) -> int:
    """A new file description of what ``fd`` is, for pipes, FIFOs and terminals (Linux), else -1.
    Non-blocking open: a pipe whose writer has already gone must not block the open."""
    mode = os.fstat(fd).st_mode
    if not stat.S_ISFIFO(mode) and not stat.S_ISCHR(mode):
        return -1
    try:
        new = os.open(f"/proc/self/fd/{fd}", flags | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return -1
    if os.path.sameopenfile(new, fd):
        return new
    os.close(new)
    return -1


def _same_file(fd: int, other: int) -> bool:
    try:
        return os.path.sameopenfile(fd, other)
    except OSError:
        return False


def _pipe_capable(fd: int, events: int) -> bool:
    mode = os.fstat(fd).st_mode
    return (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)) and _is_pollable(fd, events)


class StdinLines:
    """stdin as async lines (bytes, without their newline): an asyncio read pipe when stdin is a
    pipe, socket or terminal, else (a regular file, /dev/null) a daemon thread of our own.

    The thread is a daemon because a thread blocked in ``read()`` cannot be interrupted and the
    SDK's worker threads are joined at exit: a gateway told to stop while its client keeps stdin
    open would never exit. ``close()`` ends the input now, as if the client had closed stdin.
    """

    def __init__(self, fd: int = 0) -> None:
        self._fd = fd
        self._closed = False
        self._on_close: Callable[[], None] | None = None

    def close(self) -> None:
        self._closed = True
        if self._on_close is not None:
            self._on_close()

    async def lines(self) -> AsyncIterator[bytes]:
        """Every line until EOF or ``close()``; a last line without a newline counts."""
        if self._closed:
            return
        chunks = self._pipe_chunks() if _pipe_capable(self._fd, selectors.EVENT_READ) else self._thread_chunks()
        pending: list[bytes] = []
        async with aclosing(chunks):
            async for chunk in chunks:
                start = 0
                while (end := chunk.find(b"\n", start)) >= 0:
                    if pending:
                        pending.append(chunk[start:end])
                        yield b"".join(pending)
                        pending.clear()
                    else:
                        yield chunk[start:end]
                    start = end + 1
                if start < len(chunk):
                    pending.append(chunk[start:])
        if pending:
            yield b"".join(pending)

    async def _pipe_chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        wire = _Wire(self._fd, os.O_RDONLY)
        try:
            reader = asyncio.StreamReader(limit=CHUNK, loop=loop)
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
                                                        wire.file("rb"))
            self._on_close = lambda: None if transport.is_closing() else transport.close()
            try:
                while not self._closed and (chunk := await _read_chunk(reader)):
                    yield chunk
            finally:
                self._on_close = None
                if not transport.is_closing():
                    transport.close()
        finally:
            wire.close()

    async def _thread_chunks(self) -> AsyncIterator[bytes]:
        send, receive = anyio.create_memory_object_stream[bytes](16)
        fd = fcntl.fcntl(self._fd, fcntl.F_DUPFD_CLOEXEC, 3)
        threading.Thread(target=_pump, args=(fd, send, anyio.lowlevel.current_token()), name="stdin",
                         daemon=True).start()
        self._on_close = send.close
        try:
            async with receive:
                async for chunk in receive:
                    yield chunk
        finally:
            self._on_close = None


async def _read_chunk(reader: asyncio.StreamReader) -> bytes:
    """The next bytes of stdin; b"" at its end. A read error (a terminal hung up) ends it too."""
    try:
        return await reader.read(CHUNK)
    except OSError as exc:
        log.debug("reading stdin failed: %s", exc)
        return b""


def _pump(fd: int, send: Any, token: Any) -> None:
    """Raw reads of a duplicate of fd 0: no lock shared with ``sys.stdin``, which the interpreter
    still finalizes at exit while this thread may be blocked in ``read()``. A read error ends the
    input as EOF does."""
    try:
        try:
            while chunk := os.read(fd, CHUNK):
                anyio.from_thread.run(send.send, chunk, token=token)
        except OSError as exc:
            log.debug("reading stdin failed: %s", exc)
        anyio.from_thread.run_sync(send.close, token=token)
    except (RuntimeError, anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass  # the gateway is stopping: nobody is reading any more
    finally:
        os.close(fd)


class _Flow(asyncio.Protocol):
    """Flow control of the stdout pipe: a writer waits while the pipe is full. ``lost`` once the
    reader has gone (EPIPE, or the pipe's read end seen closing) or the transport closed."""

    def __init__(self) -> None:
        self.lost = False
        self.closed = anyio.Event()
        self._writable: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()
        self.closed.set()

    def _wake(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    async def writable(self) -> None:
        if self._writable is not None:
            await self._writable


class _Stdout:
    """Where answers go: an asyncio write pipe; or a worker thread for what epoll cannot watch (a
    regular file, /dev/null) and for a socket shared with stderr, which must stay blocking."""

    def __init__(self, fd: int = 1) -> None:
        self._wire = _Wire(fd, os.O_WRONLY)
        self._transport: Any = None
        self._flow: _Flow | None = None
        self._threaded = not _pipe_capable(self._wire.fd, selectors.EVENT_WRITE) or (
            not self._wire.private and _same_file(fd, 2))

    async def open(self) -> None:
        if not self._threaded:
            self._transport, self._flow = await asyncio.get_running_loop().connect_write_pipe(
                _Flow, self._wire.file("wb"))

    async def write(self, data: bytes) -> None:
        """Raises OSError (BrokenPipeError) once the reader has gone."""
        flow = self._flow
        if flow is None:
            await anyio.to_thread.run_sync(_write_all, self._wire.fd, data)
            return
        if flow.lost or self._transport.is_closing():
            raise BrokenPipeError("stdout closed")
        try:
            self._transport.write(data)
        except RuntimeError as exc:  # uvloop: the handle closed before connection_lost was called
            raise BrokenPipeError("stdout closed") from exc
        await flow.writable()

    async def aclose(self) -> None:
        """Let what is buffered leave, bounded (a client that no longer reads cannot hold the
        gateway, nor can it hold a forced stop), then close our descriptor."""
        try:
            if self._flow is not None:
                if not self._transport.is_closing():
                    self._transport.close()
                with anyio.move_on_after(DRAIN_TIMEOUT):
                    await self._flow.closed.wait()
        finally:
            if self._flow is not None and not self._flow.lost:
                with suppress(RuntimeError):
                    self._transport.abort()
            self._wire.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:  # a description someone else made non-blocking
            select.select([], [fd], [])


@asynccontextmanager
async def _stdout_diverted() -> AsyncIterator[None]:
    """fd 1 points at stderr while serving (at /dev/null without one), and back on the way out."""
    saved = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    try:
        try:
            os.dup2(2, 1)
        except OSError:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.close(null)
        yield
    finally:
        with suppress(OSError):
            os.dup2(saved, 1)
        os.close(saved)


class StdioFront:
    """The two memory streams ``stdio_server`` gives the SDK's server loop, over stdin and stdout
    (``stdout``: another descriptor, for tests; fd 1 is diverted only when it is the wire).
    ``output_lost``: serving ended because stdout was closed."""

    def __init__(self, stdin: StdinLines, stdout: int = 1) -> None:
        self.stdin = stdin
        self.output_lost = False
        self._stdout_fd = stdout

    @asynccontextmanager
    async def streams(self) -> AsyncIterator[tuple[Any, Any]]:
        stdout = _Stdout(self._stdout_fd)  # before the diversion: the wire is what fd 1 is now
        read_send, read_receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_send, write_receive = anyio.create_memory_object_stream[SessionMessage](0)
        try:
            await stdout.open()
            diverted = _stdout_diverted() if self._stdout_fd == 1 else nullcontext()
            async with diverted, anyio.create_task_group() as tg:
                tg.start_soon(self._read, read_send)
                tg.start_soon(self._write, write_receive, stdout)
                try:
                    yield read_receive, write_send
                finally:  # the server loop has ended: stop reading, write what it sent, then leave
                    self.stdin.close()
                    write_send.close()
        finally:
            await stdout.aclose()

    async def _read(self, send: Any) -> None:
        validate = types.jsonrpc_message_adapter.validate_json
        lines = self.stdin.lines()
        try:
            async with send, aclosing(lines):
                async for line in lines:
                    try:
                        message = validate(line.decode("utf-8", "replace"), by_name=False)
                    except Exception as exc:  # noqa: BLE001 - the SDK's contract: the loop gets the error
                        await send.send(exc)
                        continue
                    await send.send(SessionMessage(message))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the server loop stopped reading

    async def _write(self, receive: Any, stdout: _Stdout) -> None:
        """One line per message; the messages already waiting (many calls answered at once) go
        out in one write, not one system call each."""
        async with receive:
            async for session_message in receive:
                lines = [_encoded(session_message)]
                while len(lines) < MAX_BATCH:
                    try:
                        lines.append(_encoded(receive.receive_nowait()))
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                if self.output_lost:
                    continue  # nobody reads: dropped, so the server loop never blocks on an answer
                lines.append(b"")
                try:
                    await stdout.write(b"\n".join(lines))
                except OSError:  # EPIPE and the like: the client stopped reading
                    self.output_lost = True
                    log.warning("output closed; stopping")
                    self.stdin.close()


def _encoded(session_message: SessionMessage) -> bytes:
    """What the SDK's stdio server writes for a message (``model_dump_json(by_alias=True,
    exclude_unset=True)``), as bytes."""
    message = session_message.message
    return type(message).__pydantic_serializer__.to_json(message, by_alias=True, exclude_unset=True)
