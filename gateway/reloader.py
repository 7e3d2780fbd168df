"""Reloading: the same pipeline as ``mcpgw validate``, then ``Gateway.apply``; never half-applied.

A file that does not validate, or a new or changed upstream that cannot be started, is rejected:
the running snapshot keeps serving, the problems are logged exactly as ``validate`` prints them,
and the rejection is kept for ``/health``. A file whose meaning did not change (comments, order,
whitespace) is skipped. Reloads run one at a time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Literal

import anyio

from gateway.config.digest import fingerprint
from gateway.config.loader import LoadResult, check_file
from gateway.errors import ConfigFileError
from gateway.runtime import Gateway, ReloadRejected

log = logging.getLogger("mcpgw")

Outcome = Literal["applied", "skipped", "rejected"]
_RESTART_ONLY = ("transport", "http", "name", "instructions")  # gateway.* settings read once at start


@dataclass(frozen=True, slots=True)
class Rejection:
    at: float
    error: str


class Reloader:
    def __init__(self, gateway: Gateway, path: Path | None, load: Callable[[], LoadResult] | None = None,
                 on_applied: Callable[[], None] = lambda: None) -> None:
        """``path``: the file to read again; without one (the plugged.in drop-in), ``load`` makes
        the configuration the sources are merged into. ``on_applied``: called once a new
        configuration is in service."""
        self.gateway = gateway
        self.on_applied = on_applied
        self.path = path
        self.load: Callable[[], LoadResult] = load or (lambda: check_file(path))  # type: ignore[arg-type]
        self.last_rejected: Rejection | None = None
        self.counts: dict[Outcome, int] = {"applied": 0, "skipped": 0, "rejected": 0}
        self._fingerprint = fingerprint(gateway.current.config)
        self._lock = anyio.Lock()

    async def reload(self, reason: str) -> Outcome:
        async with self._lock:
            outcome = await self._reload(reason)
        self.counts[outcome] += 1
        self.gateway.metrics.reloads.labels(outcome).inc()
        return outcome

    async def _reload(self, reason: str) -> Outcome:
        log.info("reloading %s: %s", self.path or "the configuration", reason)
        try:
            result = self.load()
        except ConfigFileError as exc:
            return self._reject(str(exc))
        for problem in result.problems:
            log.log(logging.ERROR if problem.is_error else logging.WARNING, "%s", problem.render())
        if result.config is None:
            errors = sum(p.is_error for p in result.problems)
            return self._reject(f"{self.path}: invalid configuration ({errors} error{'s' if errors != 1 else ''})")
        config = self.gateway.sources.merged(result.config)  # the file, with each source's latest servers
        new_fingerprint = fingerprint(config)
        if new_fingerprint == self._fingerprint:
            log.info("configuration unchanged; nothing to reload")
            return "skipped"
        self._warn_restart_only(config)
        try:
            snapshot = await self.gateway.apply(config)
        except ReloadRejected as exc:
            return self._reject(str(exc))
        self._fingerprint = new_fingerprint
        log.info("configuration version %d in service (digest %s)", snapshot.version, snapshot.digest)
        self.on_applied()
        return "applied"

    def _reject(self, error: str) -> Outcome:
        self.last_rejected = Rejection(time.time(), error)
        log.error("reload rejected, version %d keeps serving: %s", self.gateway.current.version, error)
        return "rejected"

    def _warn_restart_only(self, new: object) -> None:
        old_gateway, new_gateway = self.gateway.current.config.gateway, new.gateway  # type: ignore[attr-defined]
        for key in _RESTART_ONLY:
            if getattr(old_gateway, key) != getattr(new_gateway, key):
                log.warning("gateway.%s changed: it takes effect at the next restart", key)
