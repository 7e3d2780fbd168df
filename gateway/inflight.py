"""Counting requests in flight, so that stopping something can wait for them (bounded)."""

from __future__ import annotations

from typing import Any

import anyio


class InFlight:
    """``with inflight.track():`` around each request. Every call passes here and almost none is
    waited for, so the event a waiter needs is made by the waiter, not by each request that finds
    the count at zero, and the count is a plain context manager rather than a generator."""

    def __init__(self) -> None:
        self.count = 0
        self._idle: anyio.Event | None = None  # set when the count next reaches zero; made by a waiter

    def track(self) -> "InFlight":
        return self

    def __enter__(self) -> None:
        self.count += 1

    def __exit__(self, *exc: Any) -> None:
        self.count -= 1
        if self.count == 0 and self._idle is not None:
            self._idle.set()
            self._idle = None

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is in flight, at most ``timeout`` seconds; True if idle."""
        if self.count:
            if self._idle is None:
                self._idle = anyio.Event()
            idle = self._idle
            with anyio.move_on_after(timeout):
                await idle.wait()
        return self.count == 0
