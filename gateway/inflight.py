"""Counting requests in flight, so that stopping something can wait for them (bounded)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import anyio


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._idle = anyio.Event()
        self._idle.set()

    @contextmanager
    def track(self) -> Iterator[None]:
        if self.count == 0:
            self._idle = anyio.Event()
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is in flight, at most ``timeout`` seconds; True if idle."""
        with anyio.move_on_after(timeout):
            await self._idle.wait()
        return self.count == 0
