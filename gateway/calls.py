"""One request a client made, from its arrival to its answer: who made it, what it was charged,
how it ended. Counted in the metrics, charged to the rate limits, written to the audit log.

Over HTTP the caller is the API key's name the front door found (``security.front_door``), or the
client's address when no key was needed; over stdio it is the one local client.
"""

from __future__ import annotations

import time
from typing import Any

from mcp.shared.exceptions import MCPError

from gateway.routing import Route
from gateway.security.front_door import principal_of, session_id_of
from gateway.security.limits import RateLimited

RATE_LIMITED = -32029  # JSON-RPC server-error range; mirrors HTTP 429. `data` says when to retry
# Requests that do work upstream get an audit line; the list methods are answered from memory.
AUDITED = frozenset({"tools/call", "prompts/get", "resources/read", "completion/complete", "resources/subscribe",
                     "resources/unsubscribe", "logging/setLevel"})


class CallRecord:
    __slots__ = ("arguments", "client", "gateway", "key", "method", "name", "outcome", "over_http", "server",
                 "session", "started", "upstream_name")

    def __init__(self, gateway: Any, method: str, ctx: Any) -> None:
        self.gateway, self.method = gateway, method
        self.server, self.outcome = "", "ok"
        self.name: str | None = None
        self.upstream_name: str | None = None
        self.arguments: Any = None
        request = getattr(ctx, "request", None)
        self.over_http = request is not None
        principal = principal_of(request.scope) if request is not None else None
        self.key = principal.name if principal is not None else None
        self.session = session_id_of(request.scope) if request is not None else None
        client = request.scope.get("client") if request is not None else None
        address = client[0] if client else None
        self.client = self.key or (f"address:{address}" if address else "stdio")
        self.started = time.perf_counter()

    def routed(self, route: Route, name: str) -> None:
        self.server, self.upstream_name, self.name = route.server, route.upstream_name, name

    async def admit(self, tool: str | None = None) -> None:
        """Charge this request to the rate limits that apply; a refusal is a JSON-RPC error that
        states the limit and when to retry. Over HTTP the request-wide rules were charged when the
        request arrived (with HTTP 429); over stdio they are charged here."""
        try:
            await self.gateway.limits.admit(method=self.method, key=self.client, server=self.server or None,
                                            tool=tool, include_request_rules=not self.over_http)
        except RateLimited as exc:
            self.outcome = "rate_limited"
            self.gateway.metrics.rate_limited.labels(exc.rule.scope).inc()
            raise MCPError(RATE_LIMITED, str(exc), data=exc.data) from exc

    def __enter__(self) -> "CallRecord":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and self.outcome == "ok":
            self.outcome = "error"
        seconds = time.perf_counter() - self.started
        self.gateway.metrics.observe(self.method, self.server, self.outcome, seconds)
        if self.server:
            self.gateway.sources.report(self.gateway.current.config, self.server, self.method, self.name,
                                        self.outcome == "ok", self.outcome if self.outcome != "ok" else None,
                                        seconds * 1000)
        audit = self.gateway.audit
        if audit is not None and self.method in AUDITED:
            audit.record(key=self.key, session=self.session, method=self.method, name=self.name,
                         upstream_name=self.upstream_name, server=self.server or None, duration_ms=seconds * 1000,
                         outcome=self.outcome, error=exc_type.__name__ if exc_type is not None else None,
                         arguments=self.arguments)
