"""Run the real ``mcpgw serve`` as a process, the way users do, for end-to-end tests.

Import as ``from gateway_harness import ...`` (``tests/`` is on ``sys.path`` under pytest).

* ``write_config(dir, text)`` writes a config file and returns its path.
* ``async with gateway_stdio(config, mode=...) as client:`` an SDK ``Client`` talking to
  ``mcpgw serve CONFIG`` over stdio.
* ``async with gateway_http(config, *args) as gw:`` ``mcpgw serve CONFIG --transport
  streamable-http --port 0``; ``gw.url`` is the ``/mcp`` endpoint read from the log line, ``gw.process``
  the process, ``gw.stderr()`` what it logged. On exit: SIGTERM, a bounded wait, then kill.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from mcp import Client, StdioServerParameters
from upstreams import stop_process

MCPGW = str(Path(sys.executable).with_name("mcpgw"))
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
_LISTENING = re.compile(r"listening on (https?://\S+)")


async def eventually(condition: Callable[[], Any], poll: float = 0.02) -> Any:
    """Wait until ``condition()`` (sync or async) is truthy and return it. Only for states that
    announce themselves nowhere but in a log or a status page; the caller's ``fail_after`` bounds it."""
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        await anyio.sleep(poll)


def write_config(directory: Path, text: str, name: str = "proxy.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", os.defpath), "HOME": os.environ.get("HOME", "/tmp")}


@asynccontextmanager
async def gateway_stdio(config: Path, mode: str = "auto", **client_options: object) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=MCPGW, args=["serve", str(config)], env=_env(), cwd=str(config.parent))
    async with Client(params, mode=mode, **client_options) as client:  # type: ignore[arg-type]
        yield client


@dataclass
class RunningGateway:
    url: str
    process: Process
    stderr_path: Path

    @property
    def base(self) -> str:
        return self.url.rsplit("/mcp", 1)[0]

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


@asynccontextmanager
async def gateway_http(config: Path, *args: str, env: dict[str, str] | None = None) -> AsyncIterator[RunningGateway]:
    with tempfile.TemporaryDirectory() as tmp:
        stderr_path = Path(tmp) / "stderr.log"
        with stderr_path.open("wb") as stderr:
            process = await anyio.open_process(
                [MCPGW, "serve", str(config), "--transport", "streamable-http", "--port", "0", *args],
                stdin=-3, stdout=-3, stderr=stderr, env={**_env(), **(env or {})}, cwd=str(config.parent))  # -3: DEVNULL
            try:
                url = await _listening_url(process, stderr_path)
                yield RunningGateway(url, process, stderr_path)
            finally:
                with anyio.CancelScope(shield=True):
                    await stop(process)


async def _listening_url(process: Process, stderr_path: Path) -> str:
    with anyio.fail_after(STARTUP_TIMEOUT):
        while True:
            found = _LISTENING.search(stderr_path.read_text(encoding="utf-8", errors="replace"))
            if found:
                return found.group(1)
            if process.returncode is not None:
                raise RuntimeError(f"mcpgw exited with {process.returncode}:\n{stderr_path.read_text()}")
            await anyio.sleep(0.05)


async def stop(process: Process) -> int:
    """SIGTERM the gateway and wait (bounded) for it to exit; kill it if it does not."""
    return await stop_process(process, STOP_TIMEOUT)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
