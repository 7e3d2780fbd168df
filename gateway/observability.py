"""What operators see: Prometheus metrics and the health reports, read from the gateway's state.

Counters and histograms are updated per request; everything that is a state (upstream up, circuit,
restarts, config version, sessions) is read from the current snapshot at scrape time by a custom
collector, so there is no second copy of the state to keep in sync. Each gateway has its own
registry (no process-global metrics), which keeps tests and embedded gateways apart.
"""

from __future__ import annotations

import os
import socket
import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

if TYPE_CHECKING:
    from gateway.runtime import Gateway
    from gateway.upstreams.upstream import Upstream

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
REPLICA = os.environ.get("MCPGW_REPLICA") or socket.gethostname()
"""Which replica this is, in /health and /metrics: the host name (a Kubernetes pod's name), or
``MCPGW_REPLICA`` where several replicas share a host."""


class Metrics:
    def __init__(self, gateway: "Gateway") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.answered = _Answered()
        self.registry.register(self.answered)
        self.reloads = Counter("mcpgw_reloads", "Configuration reloads, by outcome.", ["outcome"],
                               registry=self.registry)
        self.rate_limited = Counter("mcpgw_rate_limited", "Requests refused by a rate limit.", ["scope"],
                                    registry=self.registry)
        self.registry.register(_StateCollector(gateway))

    def observe(self, method: str, server: str, outcome: str, seconds: float) -> None:
        """Count one answered request (``mcp_proxy_requests_total``, ``mcp_proxy_latency_seconds``)."""
        self.answered.observe(method, server, outcome, seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Latency:
    __slots__ = ("buckets", "sum", "created")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0
        self.created = time.time()


class _Answered(Collector):
    """The per-request metrics, kept as plain numbers and turned into Prometheus families when
    scraped. prometheus_client's ``Counter`` and ``Histogram`` take a lock for every increment and
    walk the buckets in Python: 1.6% of a call's instructions, for thread safety the gateway does
    not need (requests are counted and scrapes answered on the event loop's one thread). The
    exposition is the same: ``mcp_proxy_requests_total`` and ``_created``, the histogram's
    ``_bucket``/``_count``/``_sum`` and ``_created``."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str], list[float]] = {}  # (method, server, outcome): [count, created]
        self._latency: dict[tuple[str, str], _Latency] = {}

    def observe(self, method: str, server: str, outcome: str, seconds: float) -> None:
        counted = self._counts.get((method, server, outcome))
        if counted is None:
            counted = self._counts[(method, server, outcome)] = [0, time.time()]
        counted[0] += 1
        latency = self._latency.get((method, server))
        if latency is None:
            latency = self._latency[(method, server)] = _Latency()
        latency.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bound >= seconds
        latency.sum += seconds

    def collect(self) -> Iterator[Any]:
        requests = CounterMetricFamily("mcp_proxy_requests", "MCP requests answered, by method, server and outcome.",
                                       labels=["method", "server", "outcome"])
        for labels, (count, created) in self._counts.items():
            requests.add_metric(list(labels), count, created=created)
        yield requests
        latency = HistogramMetricFamily("mcp_proxy_latency_seconds", "Time to answer an MCP request.",
                                        labels=["method", "server"])
        for labels, found in self._latency.items():
            cumulative, buckets = 0, []
            for bound, count in zip([*map(_bound, LATENCY_BUCKETS), "+Inf"], found.buckets):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric(list(labels), buckets, found.sum)
            latency.samples.append(Sample("mcp_proxy_latency_seconds_created", dict(zip(("method", "server"), labels)),
                                          found.created))
        yield latency

    def describe(self) -> Iterator[Any]:
        return iter(())  # families made per scrape: nothing to register ahead (no name clash to check)


def _bound(value: float) -> str:
    """A bucket's ``le`` label as prometheus_client writes it (``0.005``, ``1.0``, ``60.0``)."""
    return repr(float(value))


_CIRCUIT = {"closed": 0, "half_open": 1, "open": 2}


class _StateCollector(Collector):
    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Any]:
        snap = self.gateway.current
        up = GaugeMetricFamily("mcpgw_upstream_up", "1 when the upstream is connected.", labels=["server"])
        circuit = GaugeMetricFamily("mcpgw_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.",
                                    labels=["server"])
        restarts = GaugeMetricFamily("mcpgw_upstream_restarts", "Reconnections since the upstream first connected.",
                                     labels=["server"])
        for name, upstream in snap.upstreams.items():
            up.add_metric([name], 1.0 if upstream.ready else 0.0)
            circuit.add_metric([name], _CIRCUIT[upstream.breaker.state.value])
            restarts.add_metric([name], max(upstream.status.connects - 1, 0))
        yield from (up, circuit, restarts)
        info = GaugeMetricFamily("mcpgw_config_info", "The configuration in service.", labels=["version", "digest", "replica"])
        info.add_metric([str(snap.version), snap.digest, REPLICA], 1.0)
        yield info
        yield GaugeMetricFamily("mcpgw_sessions_active", "Handshake-era client connections known to the gateway.",
                                value=self.gateway.sessions.count())


def health_report(gateway: "Gateway", last_rejected: Any = None) -> dict[str, Any]:
    """``GET /health``: the summary a load balancer or a person glances at."""
    ready, total = gateway.counts()
    snap = gateway.current
    sources_ok = all(s.state == "ok" for s in gateway.sources.status.values())  # stale or refused: degraded
    return {
        "status": ("healthy" if sources_ok else "degraded") if ready == total else "degraded" if ready else "unhealthy",
        "replica": REPLICA,
        "servers": {"connected": ready, "healthy": ready, "total": total},
        "config": {"version": snap.version, "digest": snap.digest, "loaded_at": snap.loaded_at,
                   "last_rejected": {"at": last_rejected.at, "error": last_rejected.error} if last_rejected else None},
        **({"sources": [s.report() for s in gateway.sources.status.values()]} if gateway.sources.status else {}),
        # shown, not graded: with Redis down, limits count per replica but every request is served
        **({"rate_limits": gateway.limits.store_status()} if gateway.limits.enabled else {}),
    }


def servers_report(gateway: "Gateway") -> dict[str, Any]:
    """``GET /health/servers``: one entry per upstream, for diagnosis."""
    return {"servers": [_server_report(upstream) for upstream in gateway.current.upstreams.values()]}


def _server_report(upstream: "Upstream") -> dict[str, Any]:
    circuit = upstream.breaker.state.value
    state = upstream.status.state.value
    status = "circuit_open" if circuit != "closed" else "healthy" if state == "ready" else state
    latency = upstream.status.latency_ms
    return {"name": upstream.name, "status": status, "state": state, "transport": upstream.config.transport,
            "protocol_version": upstream.status.protocol_version,
            "latency": None if latency is None else round(latency, 1), "last_error": upstream.status.last_error,
            "restarts": max(upstream.status.connects - 1, 0),
            "circuit": {"state": circuit, "retry_after": round(upstream.breaker.retry_after(), 1)},
            "in_flight": upstream.inflight.count,
            "stderr_tail": list(upstream.stderr.lines)[-10:]}  # masked when captured
