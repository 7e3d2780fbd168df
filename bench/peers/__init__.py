"""The peers of the proxy benchmark, each installed in a virtual environment of its own.

A peer (``mcp-proxy``, the FastMCP proxy) brings its own MCP SDK, often another major version
than mcpgw's, so it cannot share mcpgw's environment: each gets ``bench/.venvs/NAME`` (gitignored),
created on demand by ``python -m bench.run`` with ``python -m venv`` and ``pip install``, and
reused while it holds the requirement it was made for (written to ``.bench-requirement`` once the
install succeeded: change the requirement and the next run builds it anew). Creating one needs
PyPI; without it the run goes on without that peer and says why.

``fastmcp_proxy.py`` beside this file is the FastMCP proxy's launcher; it runs only inside the
peer's environment (it imports ``fastmcp``), never in mcpgw's.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS = HERE.parent / ".venvs"
FASTMCP_SCRIPT = HERE / "fastmcp_proxy.py"
INSTALL_TIMEOUT = 600.0  # seconds for one venv and its pip install (PyPI reached, a cold cache)
PROBE_TIMEOUT = 60.0
MARKER = ".bench-requirement"


@dataclass(frozen=True)
class Peer:
    """A proxy from PyPI: ``requirement`` is what is installed (and the key of its venv)."""

    name: str  # the venv's directory name
    requirement: str  # a pip requirement, e.g. "mcp-proxy==0.13.*"
    package: str  # the distribution whose version is reported

    @property
    def venv(self) -> Path:
        return VENVS / self.name

    def bin(self, executable: str) -> str:
        return str(self.venv / "bin" / executable)

    def ready(self) -> bool:
        """Already installed for this very requirement (a venv made for another version is not)."""
        marker = self.venv / MARKER
        return (self.venv / "bin" / "python").exists() and marker.exists() and \
            marker.read_text(encoding="utf-8").strip() == self.requirement


PEERS = {
    "mcp-proxy": Peer("mcp-proxy", "mcp-proxy==0.13.*", "mcp-proxy"),
    "fastmcp": Peer("fastmcp", "fastmcp==4.*", "fastmcp"),
}


async def _run(argv: list[str], timeout: float) -> str:
    """Run a command to completion within ``timeout``; its output, or RuntimeError saying why not."""
    process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except BaseException:  # a timeout or an interrupted run: leave no pip behind
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    text = output.decode(errors="replace")
    if process.returncode != 0:
        tail = " | ".join(line for line in text.splitlines()[-3:] if line.strip())
        raise RuntimeError(f"`{' '.join(argv[:4])} ...` exited {process.returncode}: {tail[-300:]}")
    return text


async def ensure(peer: Peer, timeout: float = INSTALL_TIMEOUT) -> dict[str, str]:
    """The peer's venv, created and installed unless already there: the versions it holds
    (``{package: version, "mcp": version}``). Raises RuntimeError/TimeoutError when it cannot be had
    (no network, say); a half-made venv is removed so the next run starts clean."""
    if not peer.ready():
        shutil.rmtree(peer.venv, ignore_errors=True)
        peer.venv.parent.mkdir(parents=True, exist_ok=True)
        try:
            await _run([sys.executable, "-m", "venv", str(peer.venv)], timeout)
            await _run([peer.bin("python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        peer.requirement], timeout)
        except BaseException:
            shutil.rmtree(peer.venv, ignore_errors=True)
            raise
        (peer.venv / MARKER).write_text(peer.requirement + "\n", encoding="utf-8")
    return await versions(peer)


async def versions(peer: Peer) -> dict[str, str]:
    """What the venv actually holds (the requirement is a range): the peer's and its MCP SDK's version."""
    probe = ("import json, importlib.metadata as m; "
             f"print(json.dumps({{n: m.version(n) for n in ({peer.package!r}, 'mcp')}}))")
    return json.loads((await _run([peer.bin("python"), "-c", probe], PROBE_TIMEOUT)).strip().splitlines()[-1])
