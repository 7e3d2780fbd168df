"""``mcpgw status``: a running gateway's health, fetched from its status endpoints and shown as a table."""

from __future__ import annotations

from typing import Any

import httpx2

from gateway.errors import GatewayError


class StatusUnavailable(GatewayError):
    """The gateway's status endpoints could not be reached or did not answer as expected."""


def fetch_status(url: str, timeout: float = 5.0) -> tuple[dict[str, Any], dict[str, Any]]:
    base = url.rstrip("/").removesuffix("/mcp").removesuffix("/health")
    try:
        with httpx2.Client(timeout=timeout) as http:
            health = http.get(base + "/health")
            servers = http.get(base + "/health/servers")
            health.raise_for_status()
            servers.raise_for_status()
            return health.json(), servers.json()
    except (httpx2.HTTPError, ValueError) as exc:
        raise StatusUnavailable(f"no status at {base}: {type(exc).__name__}: {exc}") from exc


def render_status(health: dict[str, Any], servers: dict[str, Any]) -> str:
    config = health.get("config", {})
    lines = [f"{health.get('status', '?')}: {health['servers']['connected']} of {health['servers']['total']} servers "
             f"connected; config version {config.get('version')} ({config.get('digest')})"]
    rejected = config.get("last_rejected")
    if rejected:
        lines.append(f"last rejected reload: {rejected['error']}")
    rows = [("SERVER", "STATUS", "LATENCY", "RESTARTS", "CIRCUIT", "LAST ERROR")]
    for server in servers.get("servers", []):
        latency = "-" if server.get("latency") is None else f"{server['latency']:.1f}ms"
        rows.append((server["name"], server["status"], latency, str(server["restarts"]), server["circuit"]["state"],
                     server.get("last_error") or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in rows]
    return "\n".join(line.rstrip() for line in lines)
