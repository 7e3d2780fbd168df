"""The benchmark's upstream: a tiny MCP server (the SDK's low-level ``Server``) with an ``echo`` tool.

    python bench/upstream.py [--transport stdio|http] [--tools N] [--name NAME]

* ``echo(text)`` returns ``text`` unchanged, as one text content block;
* ``--tools N`` makes it list N tools in all: ``echo`` and ``t0001`` .. ``t{N-1}`` (each a copy
  of ``echo`` with its own name and description), for ``tools/list`` of large catalogues;
* ``stdio`` (default): stdout is the MCP channel; ``http``: Streamable HTTP on 127.0.0.1, an
  ephemeral port; one line ``LISTENING http://127.0.0.1:PORT/mcp`` on stdout once it accepts
  connections, then it serves until SIGTERM/SIGINT.

The list result is built once, at start, and every call does the least a server can do, so what
the benchmark measures on top of it is the transport and whatever stands in between.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server

_SCHEMA = {"type": "object", "properties": {"text": {"type": "string", "description": "What to echo."}},
           "required": ["text"]}


def tool_list(count: int) -> types.ListToolsResult:
    tools = [types.Tool(name="echo", description="Return the given text unchanged.", input_schema=_SCHEMA)]
    tools += [types.Tool(name=f"t{i:04d}", description=f"Echo tool number {i}: returns its text unchanged.",
                         input_schema=_SCHEMA) for i in range(1, count)]
    return types.ListToolsResult(tools=tools)


def build_server(name: str, count: int) -> Server[Any]:
    listing = tool_list(max(1, count))
    names = frozenset(tool.name for tool in listing.tools)

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return listing

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        text = (params.arguments or {}).get("text")
        if params.name not in names or not isinstance(text, str):
            return types.CallToolResult(content=[types.TextContent(type="text", text="bad call")], is_error=True)
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    server = Server(name, version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)
    server.middleware = []  # the OpenTelemetry middleware is a no-op without an exporter: skip it entirely
    return server


async def serve_stdio(server: Server[Any]) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def serve_http(server: Server[Any]) -> None:
    import uvicorn

    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY only on sockets whose ``proto`` says TCP,
    # and accepted sockets inherit the listener's (0 with a bare socket()). Without it, an SSE answer
    # (headers, then a chunk) waits for the client's delayed ACK: about 40 ms per request.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    app = server.streamable_http_app(host="127.0.0.1", max_sessions=None)

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                sys.stdout.write(f"LISTENING {url}\n")
                sys.stdout.flush()

    config = uvicorn.Config(app, log_config=None, access_log=False, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=1, backlog=2048)
    await _Server(config).serve(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--tools", type=int, default=1, help="how many tools to list (echo included)")
    parser.add_argument("--name", default="bench-upstream")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    server = build_server(args.name, args.tools)
    try:
        anyio.run(serve_stdio if args.transport == "stdio" else serve_http, server)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
