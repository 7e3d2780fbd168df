"""The live upstreams: started on demand, kept across reloads while their connection is unchanged,
retired after their requests in flight are done (bounded). One task group owns them all, so leaving
``run`` stops every one (and reaps stdio children)."""

from __future__ import annotations

import logging
from typing import Callable

import anyio
from anyio.abc import TaskGroup, TaskStatus

from gateway.config.model import ServerConfig
from gateway.upstreams.back_channel import DownstreamHooks
from gateway.upstreams.transports import connection_fingerprint
from gateway.upstreams.upstream import Upstream

log = logging.getLogger("mcpgw.upstream")

Key = tuple[str, str]  # (server name, connection fingerprint)


class UpstreamPool:
    def __init__(self, on_change: Callable[[], None], hooks: DownstreamHooks = DownstreamHooks()) -> None:
        self._on_change = on_change
        self._hooks = hooks
        self._upstreams: dict[Key, Upstream] = {}
        self._tg: TaskGroup | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    def acquire(self, server: ServerConfig) -> tuple[Upstream, bool]:
        """The upstream for ``server``: the running one if its connection is unchanged (the caller
        hands it the new policies once the configuration is in service), else a new one, started
        now. True if new."""
        key = (server.name, connection_fingerprint(server))
        existing = self._upstreams.get(key)
        if existing is not None:
            return existing, False
        assert self._tg is not None, "the pool is not running"
        upstream = Upstream(server, self._on_change, self._hooks)
        self._upstreams[key] = upstream
        self._tg.start_soon(upstream.run)
        return upstream, True

    def discard(self, upstream: Upstream, reason: str) -> None:
        """Stop an upstream now (one that was started for a reload that was then rejected)."""
        self._forget(upstream)
        upstream.stop(reason)

    async def retire(self, upstream: Upstream, drain_timeout: float, replaced: bool = False) -> None:
        """Stop an upstream no configuration uses any more, once its requests in flight are done
        (``replaced``: its server is still configured, with another connection)."""
        self._forget(upstream)
        if not await upstream.inflight.wait_idle(drain_timeout):
            log.warning("%d request(s) still in flight after %gs; cancelling them", upstream.inflight.count,
                        drain_timeout, extra={"server": upstream.name})
        upstream.stop(f"server '{upstream.name}' was removed or changed by a configuration reload")
        log.info("stopped: %s", "replaced by its new connection" if replaced else "no longer in the configuration",
                 extra={"server": upstream.name})

    def _forget(self, upstream: Upstream) -> None:
        self._upstreams = {k: u for k, u in self._upstreams.items() if u is not upstream}
