"""Helpers to run the fixture upstream (``tests/fixtures/upstream.py``) as a real process.

Import from a test module as ``from upstreams import ...``: there is no ``tests/__init__.py``, so
pytest's default ``prepend`` import mode puts ``tests/`` on ``sys.path`` for every test module (and
``tests/conftest.py``). That works under both ``pytest`` and ``python -m pytest``.

* ``stdio_params(name, ...)`` -> ``StdioServerParameters`` for ``Client(...)`` or a gateway config.
* ``async with http_upstream(name, transport="http"|"sse", ...) as url:`` starts the fixture on an
  ephemeral port and yields its URL (a plain ``str``); the process is terminated on exit.
* ``async with running_upstream(...) as up:`` is the same but yields ``RunningUpstream`` (url,
  process, stderr path) for tests that need the exit code or the fixture's stderr.
* ``wait_for_event(path, "CANCELLED slow")`` waits (bounded) for a line in a ``--event-log`` file.
* ``client_target(url, transport)`` -> what to hand ``mcp.Client`` for that URL (a Streamable HTTP
  URL string as is; an SSE URL wrapped in ``sse_client``).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from mcp import StdioServerParameters

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "upstream.py"

STARTUP_TIMEOUT = 20.0  # seconds to wait for the LISTENING line (a cold interpreter imports mcp + uvicorn)
TERMINATE_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL


def fixture_args(
    name: str,
    transport: str = "stdio",
    tool_set: str = "basic",
    many: int = 0,
    event_log: str | Path | None = None,
) -> list[str]:
    """The fixture's command-line arguments (without the interpreter)."""
    args = [str(FIXTURE), "--name", name, "--transport", transport, "--tool-set", tool_set]
    if many:
        args += ["--many", str(many)]
    if event_log is not None:
        args += ["--event-log", str(event_log)]
    return args


def stdio_params(
    name: str, tool_set: str = "basic", many: int = 0, event_log: str | Path | None = None
) -> StdioServerParameters:
    """Parameters that launch the fixture over stdio with this interpreter."""
    return StdioServerParameters(command=sys.executable, args=fixture_args(name, "stdio", tool_set, many, event_log))


def client_target(url: str, transport: str) -> Any:
    """What to pass to ``mcp.Client`` to reach a fixture URL of the given transport."""
    if transport == "sse":
        from mcp.client.sse import sse_client

        return sse_client(url)
    return url


@dataclass
class RunningUpstream:
    url: str
    process: Process
    stderr_path: Path

    def stderr(self) -> str:
        """Everything the fixture has written to stderr so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


@asynccontextmanager
async def running_upstream(
    name: str,
    transport: str = "http",
    tool_set: str = "basic",
    many: int = 0,
    event_log: str | Path | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> AsyncIterator[RunningUpstream]:
    """Start the fixture over ``http`` or ``sse``; yield once it is accepting; always reap it."""
    if transport not in ("http", "sse"):
        raise ValueError(f"transport must be 'http' or 'sse' (use stdio_params for stdio), not {transport!r}")
    async with running_fixture(fixture_args(name, transport, tool_set, many, event_log), startup_timeout) as upstream:
        yield upstream


@asynccontextmanager
async def running_fixture(args: list[str], startup_timeout: float = STARTUP_TIMEOUT) -> AsyncIterator[RunningUpstream]:
    """The fixture started with ``args`` (an HTTP transport); yielded once it accepts; always reaped."""
    with tempfile.TemporaryDirectory(prefix="mcpgw-upstream-") as tmp:
        stderr_path = Path(tmp) / "stderr.log"
        with open(stderr_path, "wb") as stderr_file:  # the child writes here: it can never block on a pipe
            process = await anyio.open_process([sys.executable, *args], stdin=subprocess.DEVNULL,
                                               stdout=subprocess.PIPE, stderr=stderr_file)
        try:
            url = await read_listening_line(process, stderr_path, startup_timeout)
            yield RunningUpstream(url=url, process=process, stderr_path=stderr_path)
        finally:
            with anyio.CancelScope(shield=True):
                await stop_process(process)


@asynccontextmanager
async def http_upstream(
    name: str,
    transport: str = "http",
    tool_set: str = "basic",
    many: int = 0,
    event_log: str | Path | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> AsyncIterator[str]:
    """``async with http_upstream("alpha") as url:`` -- the fixture's URL while it runs."""
    async with running_upstream(name, transport, tool_set, many, event_log, startup_timeout) as upstream:
        yield upstream.url


async def read_listening_line(process: Process, stderr_path: Path, timeout: float) -> str:
    """The URL a fixture server prints as `LISTENING <url>` once it accepts connections."""
    assert process.stdout is not None
    buffer = b""
    try:
        with anyio.fail_after(timeout):
            while b"\n" not in buffer:
                try:
                    buffer += await process.stdout.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    break
    except TimeoutError:
        raise RuntimeError(
            f"the server printed no LISTENING line within {timeout}s; stderr:\n{_tail(stderr_path)}"
        ) from None
    line = buffer.split(b"\n", 1)[0].decode(errors="replace").strip()
    if not line.startswith("LISTENING "):
        raise RuntimeError(f"the server did not start (stdout {line!r}); stderr:\n{_tail(stderr_path)}")
    return line.removeprefix("LISTENING ")


async def stop_process(process: Process, timeout: float = TERMINATE_TIMEOUT) -> int:
    """SIGTERM, wait a bounded time, then SIGKILL; close the pipes either way; the exit code."""
    if process.returncode is None:
        try:
            process.terminate()
        except ProcessLookupError:
            pass
        with anyio.move_on_after(timeout):
            await process.wait()
        if process.returncode is None:
            try:
                process.kill()
            except ProcessLookupError:
                pass
    await process.aclose()  # closes the pipes and waits for the (now dying) process
    return process.returncode  # type: ignore[return-value]


async def wait_for_event(path: str | Path, line: str, timeout: float = 10.0, poll: float = 0.02,
                         count: int = 1) -> None:
    """Wait (bounded) until the fixture's ``--event-log`` file holds ``line`` (e.g. "CANCELLED slow"),
    ``count`` times.

    The file is written by another process, so there is nothing to await but the file itself: this
    polls it under ``anyio.fail_after(timeout)`` and raises ``TimeoutError`` if the line never shows.
    """
    path = Path(path)
    with anyio.fail_after(timeout):
        while True:
            try:
                if path.read_text(encoding="utf-8").splitlines().count(line) >= count:
                    return
            except FileNotFoundError:
                pass
            await anyio.sleep(poll)


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:]
    except OSError:
        return "<no stderr>"
