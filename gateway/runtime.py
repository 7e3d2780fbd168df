"""The running gateway: its config, its upstream pool, and one routing table per endpoint.

Endpoints are the root (every server) and one per namespace. Tables are rebuilt whole whenever an
upstream's catalog changes and installed with one assignment, so a handler that read a table at
the start of a request sees one consistent view until it answers.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import anyio

from gateway.config.model import GatewayConfig
from gateway.routing import Collision, RoutingTable, build_routing_table
from gateway.upstreams.pool import UpstreamPool

log = logging.getLogger("mcpgw")

ROOT = ""  # the endpoint name of the root endpoint (all servers)


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.pool = UpstreamPool(config.servers.values(), on_change=self.rebuild)
        self.tables: dict[str, RoutingTable] = {}
        self._reported: set[Collision] = set()
        self._inflight = 0
        self._idle = anyio.Event()
        self._idle.set()
        self.rebuild()

    def endpoints(self) -> list[str]:
        return [ROOT, *self.config.namespaces]

    def table(self, endpoint: str) -> RoutingTable:
        return self.tables[endpoint]

    @contextmanager
    def tracked(self) -> Iterator[None]:
        """Count a request forwarded upstream, so shutdown can wait for the ones in flight."""
        if self._inflight == 0:
            self._idle = anyio.Event()
        self._inflight += 1
        try:
            yield
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until no forwarded request is in flight, at most ``timeout``; True if drained."""
        with anyio.move_on_after(timeout):
            await self._idle.wait()
        if self._inflight:
            log.warning("%d request(s) still in flight after %gs; cancelling them", self._inflight, timeout)
        return self._inflight == 0

    def rebuild(self) -> None:
        """Build every endpoint's table from the current catalogs and swap them in at once."""
        catalogs = self.pool.catalogs()
        naming = self.config.gateway.naming
        servers = self.config.servers
        tables = {ROOT: build_routing_table(list(servers.values()), naming, catalogs)}
        for name, namespace in self.config.namespaces.items():
            members = [servers[s] for s in namespace.servers if s in servers]
            tables[name] = build_routing_table(members, naming, catalogs)
        self.tables = tables
        self._report(tables[ROOT])

    def _report(self, table: RoutingTable) -> None:
        for collision in table.collisions:
            if collision not in self._reported:
                outcome = f"served by '{collision.kept}'" if collision.kept else "served by none of them"
                log.warning("%s %r is offered by %s: %s (naming.on_collision: %s)", collision.kind, collision.name,
                            ", ".join(collision.servers), outcome, self.config.gateway.naming.on_collision)
        self._reported = set(table.collisions)
