"""mcpgw: a declarative MCP gateway.

Many upstream MCP servers are served to clients as one server, with every behaviour declared in one
YAML file (see ``docs/configuration.md``).
"""

__version__ = "0.1.0"
