"""The per-request metrics (``observability._Answered``): kept as plain numbers, exposed exactly as
prometheus_client's own ``Counter`` and ``Histogram`` would expose the same observations."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.observability import LATENCY_BUCKETS, _Answered

# On a bound, between bounds, below the first, above the last: every bucket rule in play.
OBSERVED = [("tools/call", "alpha", "ok", 0.0005), ("tools/call", "alpha", "ok", 0.0004),
            ("tools/call", "alpha", "ok", 0.0011), ("tools/call", "", "unknown", 61.0),
            ("tools/list", "", "ok", 10.0), ("tools/call", "alpha", "tool_error", 0.025),
            ("prompts/get", "beta", "timeout", 30.0)]


def _exposed(registry: CollectorRegistry) -> str:
    """The text exposition, creation times (when each series began) left out."""
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(registry).decode())


def test_the_request_metrics_read_as_prometheus_clients_own_would() -> None:
    theirs = CollectorRegistry()
    requests = Counter("mcp_proxy_requests", "MCP requests answered, by method, server and outcome.",
                       ["method", "server", "outcome"], registry=theirs)
    latency = Histogram("mcp_proxy_latency_seconds", "Time to answer an MCP request.", ["method", "server"],
                        buckets=LATENCY_BUCKETS, registry=theirs)
    ours = CollectorRegistry()
    answered = _Answered()
    ours.register(answered)
    for method, server, outcome, seconds in OBSERVED:
        requests.labels(method, server, outcome).inc()
        latency.labels(method, server).observe(seconds)
        answered.observe(method, server, outcome, seconds)
    exposed = _exposed(ours)
    assert exposed == _exposed(theirs)
    assert 'mcp_proxy_latency_seconds_bucket{le="0.0005",method="tools/call",server="alpha"} 2.0' in exposed
