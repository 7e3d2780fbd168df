"""A tiny demo MCP server that ships with mcpgw.

It exists so the quickstart has an upstream to put behind the gateway that needs nothing but the
installed package: no network, no API key, no Node. Run it as ``python -m gateway.demo``; it speaks
MCP over stdio, so stdout is the protocol channel and all logging goes to stderr.

It offers three tools (``echo``, ``add``, ``now``), one prompt (``greet``), one resource
(``demo://readme``) and one resource template (``demo://notes/{topic}``).
"""

from __future__ import annotations

from datetime import datetime, timezone

from mcp.server import MCPServer
from mcp.server.mcpserver import UserMessage

SERVER_NAME = "mcpgw-demo"

README = (
    "mcpgw-demo: the demo upstream bundled with mcpgw.\n"
    "Tools: echo, add, now. Prompt: greet. Resources: demo://readme, demo://notes/{topic}.\n"
)


def create_server() -> MCPServer:
    """Build the demo server (constructing an MCPServer configures logging, so not at import)."""
    server = MCPServer(SERVER_NAME, instructions="A demo server bundled with mcpgw.", log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Return the given text unchanged."""
        return text

    @server.tool()
    def add(a: float, b: float) -> float:
        """Return the sum of a and b."""
        return a + b

    @server.tool()
    def now() -> str:
        """Return the current UTC time in ISO-8601 format."""
        return datetime.now(timezone.utc).isoformat()

    @server.prompt()
    def greet(name: str) -> list[UserMessage]:
        """Ask the model to greet someone by name."""
        return [UserMessage(f"Say hello to {name}.")]

    @server.resource("demo://readme", name="readme", mime_type="text/plain")
    def readme() -> str:
        """What this demo server is."""
        return README

    @server.resource("demo://notes/{topic}", name="notes", mime_type="text/plain")
    def notes(topic: str) -> str:
        """A one-line note about a topic."""
        return f"A note about {topic}.\n"

    return server


def main() -> None:
    """Serve the demo over stdio until stdin closes."""
    create_server().run("stdio")


if __name__ == "__main__":
    main()
