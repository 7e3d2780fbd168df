"""All upstreams of a gateway, started and stopped together in one task group."""

from __future__ import annotations

from typing import Callable, Iterable

import anyio
from anyio.abc import TaskStatus

from gateway.config.model import ServerConfig
from gateway.routing import Catalog
from gateway.upstreams.upstream import State, Upstream


class UpstreamPool:
    """One supervised Upstream per enabled server; leaving ``run`` stops (and reaps) them all."""

    def __init__(self, servers: Iterable[ServerConfig], on_change: Callable[[], None]) -> None:
        self.upstreams = {s.name: Upstream(s, on_change) for s in servers if s.enabled}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            for upstream in self.upstreams.values():
                tg.start_soon(upstream.run)
            task_status.started()

    async def wait_first_attempts(self) -> None:
        """Until every upstream has connected or failed once (each bounded by its connect_timeout),
        so a gateway starts serving with what can be had, never waiting on one broken server."""
        for upstream in self.upstreams.values():
            await upstream.first_attempt.wait()

    def get(self, name: str) -> Upstream | None:
        return self.upstreams.get(name)

    def catalogs(self) -> dict[str, Catalog]:
        return {name: u.catalog for name, u in self.upstreams.items() if u.catalog is not None}

    def counts(self) -> tuple[int, int]:
        """(ready, total)."""
        ready = sum(u.status.state is State.READY for u in self.upstreams.values())
        return ready, len(self.upstreams)
