"""Connections to upstream MCP servers: one transport module, one supervisor per server, one pool."""
