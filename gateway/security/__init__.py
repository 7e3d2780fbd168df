"""Who may call the gateway over HTTP: API keys (``auth``), and the checks every request to an MCP
endpoint passes before the SDK sees it (``front_door``)."""
