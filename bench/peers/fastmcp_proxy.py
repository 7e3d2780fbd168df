"""The FastMCP proxy as a benchmark peer: runs inside bench/.venvs/fastmcp, never in mcpgw's venv.

    python fastmcp_proxy.py CONFIG.json

CONFIG.json is an ``mcpServers`` dict (the format FastMCP's ``create_proxy`` takes: one stdio
``command``/``args`` entry, or several ``url`` entries). The proxy serves Streamable HTTP on
127.0.0.1, an ephemeral port, through FastMCP's own ``run_http_async`` with every other setting at
FastMCP's default (stateful sessions, SSE answers, INFO logging), as ``fastmcp run`` would; uvicorn
announces the port (``Uvicorn running on http://127.0.0.1:PORT``), the endpoint is ``/mcp``.
"""

from __future__ import annotations

import asyncio
import json
import sys

from fastmcp.server import create_proxy


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit(__doc__)
    with open(argv[0], encoding="utf-8") as fh:
        config = json.load(fh)
    proxy = create_proxy(config, name="fastmcp-bench-proxy")
    try:
        asyncio.run(proxy.run_http_async(show_banner=False, transport="http", host="127.0.0.1", port=0,
                                         path="/mcp"))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
