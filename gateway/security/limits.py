"""Rate limits (``rate_limits``): each rule is a family of ``aiolimiter`` buckets, and a request must
fit in every rule that applies to it. Nothing ever queues without bound: a request that does not
fit is refused at once, or after waiting at most ``max_wait`` for room.

Which rules are charged where, so that no rule is charged twice for one call:

- **Request-wide rules** are the ``global`` and ``key`` rules without ``methods``. They count
  whatever a client sends, so over HTTP they are charged once per HTTP request, before its body is
  read, by ``admit_request`` (a refusal there is HTTP 429 with ``Retry-After``).
- **Call rules** are all the others: any rule with ``methods`` and every ``server`` and ``tool``
  rule. They need the JSON-RPC method, server or tool, so they are charged per call by ``admit``
  (a refusal there is a JSON-RPC error, or a tool error, stating the limit and when to retry).
- A message that arrives without an HTTP request around it (stdio) is charged for both in one
  ``admit(..., include_request_rules=True)``, so all its rules are decided together.

A refusal never consumes capacity: every bucket the request needs is checked first and only then
are they all charged. ``AsyncLimiter.acquire()`` returns without suspending when
``has_capacity()`` has just said yes, so nothing runs between the check and the charge on the
event loop; the only slack is that a request waiting for ``max_wait`` is not a queue (one arriving
later may take the room it was waiting for), which is acceptable for a limit that exists to stop
floods, not to order them.

``retry_after`` is ``per / requests``, the time one unit of the bucket takes to drain. A full
bucket frees its next unit within that time, so it is an upper bound: a client that waits that
long finds room unless someone else took it first.

Buckets of the ``key``, ``server`` and ``tool`` scopes are kept per identity in an LRU bounded by
``max_buckets`` per rule: a flood of distinct client ids evicts the idlest buckets instead of
growing memory. An evicted bucket forgets its level, so the bound should stay well above the number
of clients active within one period.

``storage: redis://...`` (``limit_store.py``) keeps the buckets in Redis instead, shared by every
replica (``shared = True``): the same rules, the same all-or-none charge (one Lua script), the same
refusals and retry estimates, and ``max_wait`` bounded by the same deadline. A request the store
cannot answer (Redis down, slow, or the ``redis`` package missing) is counted by the in-process
buckets above: an outage of Redis loosens the limits to per replica for a while; it never refuses a
request, and delays one at most by a Redis call's short timeout. ``store_status()`` says which it
is, for ``/health``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from fnmatch import fnmatchcase
from typing import Any, Iterable, Optional

import anyio
from aiolimiter import AsyncLimiter

from gateway.config.model import RateLimitRule, RateLimits
from gateway.errors import GatewayError
from gateway.security.limit_store import Bucket, RedisStore, StoreUnavailable, bucket_key, rule_tag

MAX_BUCKETS = 10_000
_MIN_SLEEP = 0.001  # never spin: a float-rounding shortfall sleeps a millisecond, not zero


class RateLimited(GatewayError):
    """A request exceeded ``rule``; it may be retried after ``retry_after`` seconds (> 0).

    The message states the limit and the wait, never who the client is: the caller's identity is
    the client's own business, and an address or key must not end up in someone else's logs."""

    def __init__(self, rule: RateLimitRule, retry_after: float) -> None:
        self.rule = rule
        self.retry_after = retry_after
        super().__init__(f"rate limit exceeded: {describe_rule(rule)}; retry after {retry_after:.1f}s")

    @property
    def retry_after_header(self) -> str:
        """The ``Retry-After`` value: whole seconds (RFC 9110 has no fractions), rounded up."""
        return str(max(1, math.ceil(self.retry_after)))

    @property
    def data(self) -> dict[str, Any]:
        """Machine-readable detail for the JSON-RPC error's ``data``."""
        return {"retryAfter": self.retry_after, "scope": self.rule.scope,
                "requests": self.rule.requests, "per": self.rule.per}


def describe_rule(rule: RateLimitRule) -> str:
    """``60 tools/call per 60s per client``: what counts, how many, per what period, for whom."""
    methods = _effective_methods(rule)
    what = " or ".join(sorted(methods)) if methods else ("request" if rule.requests == 1 else "requests")
    whom = {"global": "in total", "key": "per client"}.get(rule.scope)
    if whom is None:
        whom = f"per {rule.scope}" + (f" matching '{rule.match}'" if rule.match else "")
    return f"{rule.requests} {what} per {rule.per:g}s {whom}"


def is_request_wide(rule: RateLimitRule) -> bool:
    """Does the rule count whole requests (charged by ``admit_request``) rather than calls?"""
    return rule.scope in ("global", "key") and rule.methods is None


def _effective_methods(rule: RateLimitRule) -> Optional[frozenset[str]]:
    """The methods a rule counts; ``None`` is all. A ``tool`` rule counts ``tools/call`` unless
    told otherwise (the schema's documented default)."""
    if rule.methods:
        return frozenset(rule.methods)
    return frozenset({"tools/call"}) if rule.scope == "tool" else None


class _RuleBuckets:
    """One rule's buckets: one for ``global``, one per identity (LRU-bounded) for the others.
    In memory here; ``tag`` names them in a shared store."""

    def __init__(self, rule: RateLimitRule, max_buckets: int, tag: str = "") -> None:
        self.rule = rule
        self.tag = tag or rule_tag(rule)
        self.methods = _effective_methods(rule)
        self.unit = rule.per / rule.requests  # seconds for one unit to drain: the retry estimate
        self._max_buckets = max_buckets
        self._buckets: OrderedDict[str, AsyncLimiter] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def identity(self, method: str, key: str, server: Optional[str], tool: Optional[str]) -> Optional[str]:
        """Which bucket of this rule a request falls in, or ``None`` when the rule does not apply."""
        if self.methods is not None and method not in self.methods:
            return None
        scope, match = self.rule.scope, self.rule.match
        if scope == "global":
            return ""
        if scope == "key":
            return key
        name = server if scope == "server" else tool
        if name is None or (match is not None and not fnmatchcase(name, match)):
            return None
        return name

    def bucket(self, identity: str) -> AsyncLimiter:
        limiter = self._buckets.get(identity)
        if limiter is not None:
            self._buckets.move_to_end(identity)
            return limiter
        limiter = self._buckets[identity] = AsyncLimiter(self.rule.requests, self.rule.per)
        while len(self._buckets) > self._max_buckets:
            self._buckets.popitem(last=False)
        return limiter

    def shared_bucket(self, identity: str) -> Bucket:
        return Bucket(bucket_key(self.tag, identity), self.rule.requests, self.unit)


_Charge = tuple[_RuleBuckets, str]  # a rule, and the identity whose bucket of it is charged
_Local = tuple[_RuleBuckets, AsyncLimiter]


class RateLimiter:
    """The rate limits of one configuration. ``from_config(None)`` limits nothing."""

    def __init__(self, rules: Iterable[_RuleBuckets] = (), max_wait: float = 0.0,
                 store: Optional[RedisStore] = None) -> None:
        self.max_wait = max_wait
        self._store = store
        families = tuple(rules)
        self._request_families = tuple(f for f in families if is_request_wide(f.rule))
        self._call_families = tuple(f for f in families if not is_request_wide(f.rule))

    @classmethod
    def from_config(cls, limits: Optional[RateLimits], *, previous: Optional["RateLimiter"] = None,
                    max_buckets: int = MAX_BUCKETS) -> "RateLimiter":
        """Build the limiter of a configuration. Rules equal to one of ``previous`` keep its buckets,
        so a reload (of this or any other part of the file) does not hand every client a fresh
        allowance; the same ``storage`` URL keeps its Redis client and connections."""
        if limits is None:
            return cls()
        reusable: dict[RateLimitRule, list[_RuleBuckets]] = {}
        for family in previous.families if previous is not None else ():
            reusable.setdefault(family.rule, []).append(family)
        seen: dict[RateLimitRule, int] = {}

        def family_of(rule: RateLimitRule) -> _RuleBuckets:
            occurrence = seen[rule] = seen.get(rule, -1) + 1
            kept = reusable.get(rule)
            return kept.pop(0) if kept else _RuleBuckets(rule, max_buckets, rule_tag(rule, occurrence))

        families = [family_of(rule) for rule in limits.rules]
        return cls(families, limits.max_wait, _store_for(limits.storage, previous))

    @property
    def shared(self) -> bool:
        """Do the buckets live in a store every replica shares (Redis)? While that store is down,
        requests are counted in this process: ``store_status()`` tells."""
        return self._store is not None

    def store_status(self) -> dict[str, Any]:
        """Where the buckets live and whether that works, without anything secret (for ``/health``)."""
        return self._store.status() if self._store is not None else {"storage": "memory", "state": "ok"}

    async def aclose(self, keep: Optional["RateLimiter"] = None) -> None:
        """Close the shared store, unless ``keep`` (the limiter replacing this one) still uses it."""
        if self._store is not None and (keep is None or keep._store is not self._store):
            await self._store.aclose()

    @property
    def families(self) -> tuple[_RuleBuckets, ...]:
        return self._request_families + self._call_families

    @property
    def enabled(self) -> bool:
        return bool(self._request_families or self._call_families)

    @property
    def request_rules(self) -> tuple[RateLimitRule, ...]:
        """The rules ``admit_request`` charges (whole requests; HTTP 429 when exceeded)."""
        return tuple(f.rule for f in self._request_families)

    @property
    def call_rules(self) -> tuple[RateLimitRule, ...]:
        """The rules ``admit`` charges (per JSON-RPC call)."""
        return tuple(f.rule for f in self._call_families)

    async def admit_request(self, *, key: str) -> None:
        """Charge one HTTP request from ``key`` (the API key's name, or the client's address when
        unauthenticated) to the request-wide rules; raises ``RateLimited``."""
        if self._request_families:
            await self._take(self._charges(self._request_families, "", key, None, None))

    async def admit(self, *, method: str, key: str, server: Optional[str] = None,
                    tool: Optional[str] = None, include_request_rules: bool = False) -> None:
        """Charge one call to the call rules that apply; raises ``RateLimited``. ``tool`` is the
        exposed (prefixed) name, ``server`` the server's name. Pass ``include_request_rules`` when
        no ``admit_request`` ran for this message (stdio)."""
        families = self._call_families
        if include_request_rules:
            families = self._request_families + families
        if families:
            charges = self._charges(families, method, key, server, tool)
            if charges:
                await self._take(charges)

    @staticmethod
    def _charges(families: tuple[_RuleBuckets, ...], method: str, key: str,
                 server: Optional[str], tool: Optional[str]) -> list[_Charge]:
        charges = []
        for family in families:
            identity = family.identity(method, key, server, tool)
            if identity is not None:
                charges.append((family, identity))
        return charges

    async def _take(self, charges: list[_Charge]) -> None:
        """Charge every bucket, or none: wait (at most ``max_wait``) until all have room. In the
        shared store when there is one and it answers, else in this process."""
        deadline = anyio.current_time() + self.max_wait
        if self._store is not None and self._store.ready():
            try:
                return await self._take_shared(self._store, charges, deadline)
            except StoreUnavailable:
                pass  # the store said so in the log (once per outage): this request counts here
        await _take_local([(family, family.bucket(identity)) for family, identity in charges], deadline)

    @staticmethod
    async def _take_shared(store: RedisStore, charges: list[_Charge], deadline: float) -> None:
        """The shared twin of ``_take_local``. Never cancels a charge in flight: a charge cut off
        after Redis ran it would be a refusal that consumed capacity."""
        buckets = [family.shared_bucket(identity) for family, identity in charges]
        blocked = await store.charge(buckets)
        while blocked:
            pause = max(_bounded_wait(wait, charges[i][0].unit) for i, wait in blocked)
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                break
            await anyio.sleep(min(pause, remaining))
            if pause > remaining:
                break
            blocked = await store.charge(buckets)
        if blocked:
            _refuse([charges[i][0] for i, _ in blocked])


def _store_for(storage: str, previous: Optional[RateLimiter]) -> Optional[RedisStore]:
    """The store ``storage`` names: none for memory, the previous limiter's for the same URL."""
    if storage == "memory":
        return None
    kept = previous._store if previous is not None else None
    return kept if kept is not None and kept.url == storage else RedisStore(storage)


async def _take_local(charges: list[_Local], deadline: float) -> None:
    """Charge every in-process bucket, or none. ``AsyncLimiter.acquire()`` returns without
    suspending right after ``has_capacity()`` said yes, so nothing runs between check and charge."""
    blocked = _blocked(charges)
    remaining = deadline - anyio.current_time()
    if blocked and remaining > 0:
        with anyio.move_on_after(remaining):
            while blocked:
                await anyio.sleep(max(_time_to_room(limiter) for _, limiter in blocked))
                blocked = _blocked(charges)
    if blocked:
        _refuse([family for family, _ in blocked])
    for _, limiter in charges:
        await limiter.acquire()  # has room: returns without suspending


def _refuse(blocked: list[_RuleBuckets]) -> None:
    """Refuse with the full rule that takes longest to free a unit: waiting that long is enough."""
    family = max(blocked, key=lambda f: f.unit)
    raise RateLimited(family.rule, family.unit)


def _blocked(charges: list[_Local]) -> list[_Local]:
    return [(family, limiter) for family, limiter in charges if not limiter.has_capacity()]


def _bounded_wait(wait: float, unit: float) -> float:
    """How long to sleep before trying again: the bucket's own estimate, never zero, never more
    than one unit (the refill of one unit is an upper bound on any wait for one unit)."""
    return min(unit, max(_MIN_SLEEP, wait))


def _time_to_room(limiter: AsyncLimiter) -> float:
    """How long until ``limiter`` has room for one more, read just after ``has_capacity()`` leaked
    it. aiolimiter has no public accessor for its level: this is the one private read of it, and
    without it the wait falls back to one unit's drain time (an upper bound)."""
    unit = limiter.time_period / limiter.max_rate
    level = getattr(limiter, "_level", None)
    if not isinstance(level, float | int):
        return unit
    return _bounded_wait((level + 1 - limiter.max_rate) * unit, unit)
