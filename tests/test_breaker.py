"""The circuit breaker of one upstream, driven by a fake clock: no sleeps, exact times."""

import pytest

from gateway.config.model import CircuitBreakerPolicy
from gateway.upstreams.breaker import BreakerState, CircuitBreaker, describe


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock, **policy) -> CircuitBreaker:
    policy = {"failures": 3, "cooldown": 30.0, **policy}
    return CircuitBreaker(CircuitBreakerPolicy(**policy), clock)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record_failure()


def open_breaker(clock) -> CircuitBreaker:
    breaker = make(clock)
    fail(breaker, 3)
    assert breaker.state is BreakerState.OPEN
    return breaker


def test_default_policy_and_clock():
    breaker = CircuitBreaker(CircuitBreakerPolicy())
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert 29.0 < breaker.retry_after() <= 30.0


def test_stays_closed_below_the_threshold(clock):
    breaker = make(clock)
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.state == "closed"  # a str enum: compares and serialises as its value
    assert breaker.allow() and breaker.allow()
    assert not breaker.opened
    assert breaker.retry_after() == 0
    assert breaker.consecutive_failures == 2
    assert describe(breaker) == "circuit closed"


def test_a_success_resets_the_count(clock):
    breaker = make(clock)
    for _ in range(5):
        fail(breaker, 2)
        breaker.record_success()
    assert breaker.consecutive_failures == 0
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED  # only 2 consecutive, not 12 in all


def test_opens_at_exactly_n_consecutive_failures(clock):
    breaker = make(clock)
    fail(breaker, 2)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened
    assert not breaker.allow()


def test_refuses_while_open_and_retry_after_counts_down(clock):
    breaker = open_breaker(clock)
    assert breaker.retry_after() == 30.0
    assert describe(breaker) == "circuit open after 3 consecutive failures; next try in 30s"
    clock.advance(17.5)
    assert not breaker.allow()
    assert breaker.retry_after() == 12.5
    assert describe(breaker) == "circuit open after 3 consecutive failures; next try in 13s"
    clock.advance(12.4)
    assert not breaker.allow()
    assert breaker.retry_after() == pytest.approx(0.1)
    assert describe(breaker).endswith("next try in 1s")  # rounded up, never "0s" while refusing
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.retry_after() == 0


def test_late_outcomes_while_open_change_nothing(clock):
    """Answers to requests sent before the circuit opened say nothing about now."""
    breaker = open_breaker(clock)
    clock.advance(20)
    breaker.record_failure()
    assert breaker.retry_after() == 10.0  # the cooldown is not lengthened
    breaker.record_success()
    assert breaker.state is BreakerState.OPEN  # nor is the circuit closed


def test_half_open_admits_exactly_one_probe(clock):
    breaker = open_breaker(clock)
    clock.advance(30)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.opened
    assert describe(breaker) == (
        "circuit half-open after 3 consecutive failures; the next request is a probe")
    assert breaker.allow()
    assert breaker.probing
    assert [breaker.allow() for _ in range(5)] == [False] * 5
    clock.advance(1000)  # however long the probe takes, it stays the only one
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()
    assert describe(breaker).endswith("a probe request is in flight")


def test_probe_success_closes(clock):
    breaker = open_breaker(clock)
    clock.advance(30)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert not breaker.probing
    assert breaker.consecutive_failures == 0
    assert all(breaker.allow() for _ in range(3))
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED  # the count started again from zero


def test_probe_failure_reopens_with_a_fresh_cooldown(clock):
    breaker = open_breaker(clock)
    clock.advance(45)
    assert breaker.allow()
    clock.advance(5)  # the probe takes 5s to fail
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.probing
    assert breaker.retry_after() == 30.0  # from the probe's failure, not from the first opening
    assert not breaker.allow()
    assert describe(breaker) == "circuit open after 4 consecutive failures; next try in 30s"
    clock.advance(30)
    assert breaker.allow()  # a new probe


def test_disabled_policy_never_opens(clock):
    breaker = make(clock, enabled=False)
    fail(breaker, 100)
    assert breaker.state is BreakerState.CLOSED
    assert all(breaker.allow() for _ in range(10))
    assert breaker.retry_after() == 0
    assert breaker.changes == 0
    assert describe(breaker) == "circuit closed"


def test_disabling_an_open_breaker_closes_it(clock):
    breaker = open_breaker(clock)
    breaker.policy = CircuitBreakerPolicy(enabled=False)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.changes == 2  # opened, then closed: the gateway learns it is visible again
    breaker.policy = CircuitBreakerPolicy(failures=3)
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED  # re-enabled with a clean count


def test_lower_threshold_takes_effect_at_once(clock):
    breaker = make(clock, failures=5)
    fail(breaker, 1)
    breaker.policy = CircuitBreakerPolicy(failures=2, cooldown=30.0)
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_count_above_a_new_threshold_opens_on_the_next_failure(clock):
    breaker = make(clock, failures=5)
    fail(breaker, 4)
    breaker.policy = CircuitBreakerPolicy(failures=2)
    assert breaker.state is BreakerState.CLOSED  # a policy swap alone opens nothing
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_new_cooldown_applies_to_a_circuit_already_open(clock):
    breaker = open_breaker(clock)
    clock.advance(10)
    breaker.policy = CircuitBreakerPolicy(failures=3, cooldown=60.0)
    assert breaker.retry_after() == 50.0
    breaker.policy = CircuitBreakerPolicy(failures=3, cooldown=5.0)
    assert breaker.state is BreakerState.HALF_OPEN


def test_changes_counts_only_closed_to_open_and_back(clock):
    breaker = make(clock)
    fail(breaker, 2)
    breaker.record_success()
    assert breaker.changes == 0
    fail(breaker, 3)
    assert breaker.changes == 1  # closed -> open
    fail(breaker, 3)
    clock.advance(30)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.changes == 1  # open -> half-open is still "not closed"
    breaker.allow()
    breaker.record_failure()
    assert breaker.changes == 1  # half-open -> open too
    clock.advance(30)
    breaker.allow()
    breaker.record_success()
    assert breaker.changes == 2  # half-open -> closed
    breaker.record_success()
    breaker.reset()
    assert breaker.changes == 2  # reset of a closed breaker is no transition


def test_reset(clock):
    breaker = open_breaker(clock)
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.retry_after() == 0
    assert breaker.changes == 2
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED  # the count was cleared too

    breaker = open_breaker(clock)
    clock.advance(30)
    assert breaker.allow()
    breaker.reset()  # reconnecting while a probe is in flight
    assert not breaker.probing
    assert breaker.allow()
