"""The running gateway: one immutable Snapshot at a time, and the pool of upstreams behind it.

A Snapshot is everything a request needs (config, the upstream of each server, a routing table per
endpoint), built beside the one in use and installed with one assignment. Handlers read
``gateway.current`` once per request and keep that snapshot until they answer, so a reload or a
reconnect never changes the ground under a request. Two things install snapshots: ``apply`` (a new
configuration: version + 1) and a catalog change of an upstream (same version, new tables).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

import anyio
import mcp_types as types
from anyio.abc import TaskGroup, TaskStatus

from gateway.config.digest import digest as config_digest
from gateway.config.model import GatewayConfig
from gateway.errors import GatewayError
from gateway.observability import Metrics
from gateway.parked import ParkedCalls
from gateway.redact import REDACT
from gateway.routing import Collision, RoutingTable, build_routing_table
from gateway.security.arguments import ArgumentValidator
from gateway.security.audit import AuditLog
from gateway.security.limits import RateLimiter
from gateway.sessions import SessionRegistry
from gateway.sources.remote import RemoteSources
from gateway.subscriptions import ResourceSubscriptions
from gateway.upstreams.back_channel import DownstreamHooks
from gateway.upstreams.pool import UpstreamPool
from gateway.upstreams.upstream import State, Upstream

log = logging.getLogger("mcpgw")

ROOT = ""  # the endpoint name of the root endpoint (all servers)
NOTIFY_DEBOUNCE = 0.2  # seconds: a burst of changes (a reload, many reconnects) is announced once
_EMPTY = RoutingTable.empty()


class ReloadRejected(GatewayError):
    """A new configuration could not be put in service; the running one stays."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    digest: str
    config: GatewayConfig
    upstreams: Mapping[str, Upstream]
    tables: Mapping[str, RoutingTable]
    loaded_at: float = field(default_factory=time.time)
    # server -> (prompt, its result): custom instructions from a remote source, answered by the gateway
    local_prompts: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)

    def table(self, endpoint: str) -> RoutingTable:
        return self.tables.get(endpoint, _EMPTY)

    def endpoints(self) -> list[str]:
        return [ROOT, *self.config.namespaces]


class Gateway:
    def __init__(self, config: GatewayConfig, sources: RemoteSources | None = None) -> None:
        self.sessions = SessionRegistry()
        self.sources = sources or RemoteSources()
        self.subscriptions = ResourceSubscriptions()
        self.parked = ParkedCalls()
        self.limits = RateLimiter.from_config(config.rate_limits)
        self.audit = AuditLog.from_config(config.observability.audit)
        self.arguments = ArgumentValidator()
        self.pool = UpstreamPool(on_change=self._catalog_changed, hooks=DownstreamHooks(
            resource_updated=self._resource_updated, server_log=self._server_log,
            subscribed_uris=self.subscriptions.uris))
        self._initial = config
        REDACT.learn(config)
        self.current = Snapshot(0, config_digest(config), config, MappingProxyType({}), MappingProxyType({}))
        self._announced: dict[str, RoutingTable] = {}
        self._changed = anyio.Event()
        self._tg: TaskGroup | None = None
        self._reported: set[Collision] = set()
        self.metrics = Metrics(self)  # last: its collector reads the state above

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the upstreams of the initial configuration and keep the gateway's background work
        going until cancelled. Started once every upstream has connected or failed once (each
        bounded by its connect_timeout), so serving begins with what can be had."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await tg.start(self.pool.run)
                await tg.start(self.parked.run)
                upstreams = {s.name: self.pool.acquire(s)[0] for s in self._initial.servers.values() if s.enabled}
                for upstream in upstreams.values():
                    await upstream.first_attempt.wait()
                self._install(self._snapshot(1, self._initial, upstreams))
                self._announced = dict(self.current.tables)
                tg.start_soon(self._announce_changes)
                task_status.started()
        finally:
            await self.limits.aclose()  # the shared store's connections (bounded and shielded inside)

    async def apply(self, config: GatewayConfig) -> Snapshot:
        """Put ``config`` in service: start what is new or changed and wait until it has listed
        (before the swap), swap, then retire what only the old snapshot used. Raises ReloadRejected,
        leaving the running snapshot untouched, when a new or changed server cannot be started."""
        old = self.current
        audit = self._audit_for(config)
        acquired = {s.name: self.pool.acquire(s) for s in config.servers.values() if s.enabled}
        started = [u for u, new in acquired.values() if new]
        for upstream in started:
            await upstream.first_attempt.wait()
        failed = [u for u in started if u.status.state is not State.READY]
        if failed:
            reasons = "; ".join(u.unavailable_reason() for u in failed)
            for upstream in started:
                self.pool.discard(upstream, "the configuration reload that started it was rejected")
            if audit is not None and audit is not self.audit:
                audit.close()
            raise ReloadRejected(f"could not start {len(failed)} server(s): {reasons}")
        for name, (upstream, _) in acquired.items():
            upstream.config = config.servers[name]  # policies (timeouts, retries, breaker) take effect now
        limits, self.limits = self.limits, RateLimiter.from_config(config.rate_limits, previous=self.limits)  # unchanged rules keep counting
        if audit is not self.audit:
            replaced, self.audit = self.audit, audit
            if replaced is not None:
                replaced.close()
        new = self._snapshot(old.version + 1, config, {name: u for name, (u, _) in acquired.items()})
        self._install(new)
        await limits.aclose(keep=self.limits)  # a store no longer named is closed; the same URL keeps its client
        kept = set(map(id, new.upstreams.values()))
        for upstream in old.upstreams.values():
            if id(upstream) not in kept:
                assert self._tg is not None
                self._tg.start_soon(self.pool.retire, upstream, config.gateway.drain_timeout,
                                    upstream.name in new.upstreams)
        return new

    def _audit_for(self, config: GatewayConfig) -> AuditLog | None:
        """The audit log ``config`` asks for: the running one if unchanged, else a new one (a file
        that cannot be opened rejects the reload, like a server that cannot start)."""
        if config.observability.audit == self.current.config.observability.audit:
            return self.audit
        try:
            return AuditLog.from_config(config.observability.audit)
        except OSError as exc:
            raise ReloadRejected(f"cannot open the audit log: {exc}") from exc

    async def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight on any upstream, at most ``timeout``; True if drained."""
        deadline = anyio.current_time() + timeout
        drained = True
        for upstream in self.current.upstreams.values():
            drained &= await upstream.inflight.wait_idle(max(0.0, deadline - anyio.current_time()))
        if not drained:
            log.warning("requests still in flight after %gs; cancelling them", timeout)
        return drained

    def counts(self) -> tuple[int, int]:
        """(ready, total) upstreams of the current snapshot."""
        upstreams = self.current.upstreams.values()
        return sum(u.status.state is State.READY for u in upstreams), len(upstreams)

    def servers_of(self, endpoint: str) -> list[str]:
        """The servers whose offers ``endpoint`` serves."""
        config = self.current.config
        return list(config.servers) if endpoint == ROOT else list(config.namespaces[endpoint].servers)

    def endpoints_serving(self, server: str) -> list[str]:
        """The endpoints whose clients see ``server``."""
        namespaces = self.current.config.namespaces
        return [ROOT, *(name for name, namespace in namespaces.items() if server in namespace.servers)]

    async def _resource_updated(self, server: str, uri: str) -> None:
        subscribers = self.subscriptions.subscribers(server, uri)
        await self.sessions.resource_updated(self.endpoints_serving(server), uri, subscribers)
        if self.subscriptions.drop_if_empty(server, uri) and self._tg is not None:
            self._tg.start_soon(self._unsubscribe_upstream, server, uri)

    async def _unsubscribe_upstream(self, server: str, uri: str) -> None:
        """Every subscriber of ``uri`` went away without unsubscribing: stop the updates."""
        upstream = self.current.upstreams.get(server)
        if upstream is None:
            return
        try:
            await upstream.set_subscribed(uri, False)
        except Exception as exc:  # noqa: BLE001 - best effort: the worst case is an unread update
            log.debug("could not unsubscribe %s (%s)", uri, type(exc).__name__, extra={"server": server})

    async def _server_log(self, server: str, params: types.LoggingMessageNotificationParams) -> None:
        await self.sessions.server_log(self.endpoints_serving(server), params)

    def _snapshot(self, version: int, config: GatewayConfig, upstreams: dict[str, Upstream]) -> Snapshot:
        local = self.sources.local_prompts(config)
        return Snapshot(version, config_digest(config), config, MappingProxyType(upstreams),
                        MappingProxyType(_tables(config, upstreams, local)), local_prompts=MappingProxyType(local))

    def _catalog_changed(self) -> None:
        snap = self.current
        if snap.version:  # before the first snapshot, run() builds the tables itself
            self._install(Snapshot(snap.version, snap.digest, snap.config, snap.upstreams,
                                   MappingProxyType(_tables(snap.config, dict(snap.upstreams), snap.local_prompts)),
                                   snap.loaded_at, snap.local_prompts))

    def _install(self, snapshot: Snapshot) -> None:
        REDACT.learn(snapshot.config)
        self.current = snapshot  # the swap: one assignment
        self._report(snapshot)
        self._changed.set()

    async def _announce_changes(self) -> None:
        """Tell clients when what they can list has changed: debounced, and only for real changes."""
        while True:
            await self._changed.wait()
            await anyio.sleep(NOTIFY_DEBOUNCE)
            self._changed = anyio.Event()
            tables = dict(self.current.tables)
            for endpoint in set(tables) | set(self._announced):
                before, after = self._announced.get(endpoint, _EMPTY), tables.get(endpoint, _EMPTY)
                kinds = list(dict.fromkeys(kind for kind, attr in _LISTS if getattr(before, attr) != getattr(after, attr)))
                if kinds:
                    await self.sessions.announce(endpoint, kinds)
            self._announced = tables

    def _report(self, snapshot: Snapshot) -> None:
        table = snapshot.table(ROOT)
        for collision in table.collisions:
            if collision not in self._reported:
                outcome = f"served by '{collision.kept}'" if collision.kept else "served by none of them"
                log.warning("%s %r is offered by %s: %s (naming.on_collision: %s)", collision.kind, collision.name,
                            ", ".join(collision.servers), outcome, snapshot.config.gateway.naming.on_collision)
        self._reported = set(table.collisions)


_LISTS = (("tools", "list_tools"), ("prompts", "list_prompts"), ("resources", "list_resources"),
          ("resources", "list_resource_templates"))


def _tables(config: GatewayConfig, upstreams: dict[str, Upstream],
            local_prompts: Mapping[str, tuple[Any, Any]] | None = None) -> dict[str, RoutingTable]:
    catalogs = {name: u.catalog for name, u in upstreams.items() if u.catalog is not None and not u.hidden}
    for name, (prompt, _) in (local_prompts or {}).items():  # custom instructions of a remote source
        if name in catalogs:
            catalogs[name] = replace(catalogs[name], prompts=(*catalogs[name].prompts, prompt))
    naming, servers = config.gateway.naming, config.servers
    tables = {ROOT: build_routing_table(list(servers.values()), naming, catalogs)}
    for name, namespace in config.namespaces.items():
        tables[name] = build_routing_table([servers[s] for s in namespace.servers if s in servers], naming, catalogs)
    return tables
