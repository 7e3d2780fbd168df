"""A circuit breaker for one upstream: after ``failures`` consecutive failures, stop sending it
requests for ``cooldown`` seconds, then let one probe through to decide whether to close again.

It is pure and synchronous (no I/O, no tasks, no locks): the gateway runs in one event loop and
never awaits between ``allow()`` and marking the probe in flight, so nothing can interleave. The
clock is injected so tests drive time without sleeping. The policy is read on every decision,
because a config reload may swap it while the upstream (and so the breaker) is kept.

Every request that ``allow()`` admitted must record exactly one outcome (in a ``finally``; a
cancelled request counts as a failure): in HALF_OPEN a probe whose outcome is never recorded keeps
every other request out until ``reset()``.
"""

from __future__ import annotations

import math
import time
from enum import Enum
from typing import Callable, Optional

from gateway.config.model import CircuitBreakerPolicy


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """The breaker of one upstream. ``changes`` counts transitions between CLOSED and not-CLOSED
    (OPEN <-> HALF_OPEN does not count), so the gateway can rebuild routing tables for
    ``on_open: hide`` only when the answer to "is it hidden?" may have changed."""

    def __init__(self, policy: CircuitBreakerPolicy,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._policy = policy
        self.consecutive_failures = 0            # kept while open, for messages
        self.changes = 0
        self._opened_at: Optional[float] = None  # None: CLOSED
        self._probing = False                    # a HALF_OPEN probe is in flight

    @property
    def policy(self) -> CircuitBreakerPolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: CircuitBreakerPolicy) -> None:
        """Thresholds and cooldowns apply from the next decision. Disabling closes the circuit
        now, so ``opened`` and ``changes`` never claim a circuit that no longer blocks anything."""
        self._policy = policy
        if not policy.enabled:
            self.reset()

    @property
    def state(self) -> BreakerState:
        """Computed rather than stored: OPEN turns HALF_OPEN by the passing of time alone."""
        if self._opened_at is None or not self._policy.enabled:
            return BreakerState.CLOSED
        if self._probing or self._clock() - self._opened_at >= self._policy.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def opened(self) -> bool:
        return self.state is not BreakerState.CLOSED

    @property
    def probing(self) -> bool:
        return self._probing

    def allow(self) -> bool:
        """May a request go to the upstream now? In HALF_OPEN only the first caller may (it
        becomes the probe); one probe is enough to learn whether the upstream is back, and a
        crowd of them would hit a server that may still be struggling."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        """CLOSED: the failures were not consecutive after all. HALF_OPEN: the probe worked, close.
        OPEN: a late answer to a request sent before opening; it says nothing about now."""
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self.reset()
        elif state is BreakerState.CLOSED:
            self.consecutive_failures = 0

    def record_failure(self) -> None:
        """Count a failure; at the threshold open, and a failed probe opens for a new cooldown.
        OPEN: a late failure of a request sent before opening must not lengthen the cooldown."""
        if not self._policy.enabled:
            return
        state = self.state
        if state is BreakerState.OPEN:
            return
        self.consecutive_failures += 1
        if state is BreakerState.HALF_OPEN or self.consecutive_failures >= self._policy.failures:
            if state is BreakerState.CLOSED:
                self.changes += 1
            self._opened_at = self._clock()
            self._probing = False

    def retry_after(self) -> float:
        """Seconds until a probe may be tried; 0 when not OPEN."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        assert self._opened_at is not None
        return max(0.0, self._opened_at + self._policy.cooldown - self._clock())

    def reset(self) -> None:
        """Back to CLOSED with no failures counted (the upstream reconnected: a fresh start)."""
        if self._opened_at is not None:
            self.changes += 1
        self._opened_at = None
        self._probing = False
        self.consecutive_failures = 0


def describe(breaker: CircuitBreaker) -> str:
    """The breaker's state in words, for error messages a person (or a model) reads."""
    state = breaker.state
    if state is BreakerState.CLOSED:
        return "circuit closed"
    n = breaker.consecutive_failures
    after = f"after {n} consecutive failure{'s' if n != 1 else ''}"
    if state is BreakerState.OPEN:
        # Rounded up: "next try in 0s" while still refusing would be a lie.
        return f"circuit open {after}; next try in {math.ceil(breaker.retry_after())}s"
    probe = "a probe request is in flight" if breaker.probing else "the next request is a probe"
    return f"circuit half-open {after}; {probe}"
