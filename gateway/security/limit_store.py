"""Rate-limit buckets shared by replicas, in Redis (``rate_limits.storage: redis://...``).

The limiter (``limits.py``) decides which buckets a request needs and what a refusal says; this
module only keeps those buckets where every replica sees them, and knows how that place fails.

**One script, all or none.** A request's buckets are checked and charged by one Lua script
(``EVALSHA``, loaded once per server by ``register_script``), which Redis runs atomically: either
every bucket had room and each is charged one unit, or nothing is written and the script answers
which buckets were full and how long until each has room. Each bucket is a hash ``{level, at}``:
the same leaky bucket as ``aiolimiter.AsyncLimiter(requests, per)``, whose level drains one unit
every ``per / requests`` seconds and which has room while ``level + 1 <= requests``. Time is the
Redis server's (``TIME`` inside the script), so the replicas' clocks never matter. Keys are
``mcpgw:rl:<rule>:<sha256 of the identity>`` (no client id or key name is stored in clear) and
expire once the bucket has drained, at most one period after their last charge.

**An outage never becomes a gateway outage.** Every Redis call has a short socket timeout and no
retries. Any failure raises ``StoreUnavailable`` (the one place Redis errors are translated); the
limiter then counts that request in this process. One warning per outage names the store (its
password masked) and the cause; while the store is down, one request per ``BACKOFF`` probes it and
the others count locally without waiting on it; the first success logs that limits are shared again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

import anyio

from gateway.errors import GatewayError

log = logging.getLogger("mcpgw")

KEY_PREFIX = "mcpgw:rl:"
CLIENT_NAME = "mcpgw-rate-limits"  # in Redis' CLIENT LIST: whose connections these are
CALL_TIMEOUT = 0.25  # seconds, per socket operation: a slow Redis must not slow every request down
BACKOFF = 5.0  # seconds between probes of a store that failed
_CALLS_PER_CHARGE = 6  # at worst: connect, CLIENT SETNAME, EVALSHA, SCRIPT LOAD (a restarted Redis forgot it), EVALSHA
_CLOSE_TIMEOUT = 1.0
_MAX_CAUSE = 200
_US = 1_000_000  # the script counts in microseconds: Redis TIME's resolution, exact in a double

# KEYS[i]: a bucket. ARGV[2i-1], ARGV[2i]: its capacity (requests) and its unit (microseconds one
# request takes to drain). Returns {} when every bucket had room and all were charged; otherwise
# {i, wait, ...} for each full bucket (wait: microseconds until it has room) and writes nothing.
CHARGE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local levels, blocked = {}, {}
for i, key in ipairs(KEYS) do
  local requests, unit = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', key, 'level', 'at')
  local level = 0
  if state[1] then
    local elapsed = math.max(0, now - tonumber(state[2]))
    level = math.max(0, tonumber(state[1]) - elapsed / unit)
  end
  levels[i] = level
  if level + 1 > requests then
    blocked[#blocked + 1] = i
    blocked[#blocked + 1] = math.ceil((level + 1 - requests) * unit)
  end
end
if #blocked == 0 then
  for i, key in ipairs(KEYS) do
    local level = levels[i] + 1
    redis.call('HSET', key, 'level', string.format('%.17g', level), 'at', string.format('%.0f', now))
    redis.call('PEXPIRE', key, math.ceil(level * tonumber(ARGV[2 * i]) / 1000))
  end
end
return blocked
"""


class StoreUnavailable(GatewayError):
    """The shared store could not answer; the request is counted in this process instead."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket a request needs: where it lives and its shape."""

    key: str
    requests: int
    unit: float  # seconds one request takes to drain


def rule_tag(rule: Any, occurrence: int = 0) -> str:
    """A short name for a rule, the same on every replica with the same rule. ``occurrence``
    tells apart equal rules listed twice, which in memory are two bucket families, not one."""
    text = json.dumps(asdict(rule), sort_keys=True, default=list) + f"#{occurrence}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def bucket_key(tag: str, identity: str) -> str:
    """The Redis key of one identity's bucket of a rule. Hashed: a client's address or key name
    must not sit in clear in a database others may read."""
    return f"{KEY_PREFIX}{tag}:{hashlib.sha256(identity.encode()).hexdigest()[:32]}"


def redact_url(url: str) -> str:
    """``url`` as it may be shown (logs, errors, health): its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<an unparsable URL>"
    if not password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class RedisStore:
    """The buckets of every replica, in one Redis. Created without connecting; the client (and its
    connection pool) is made on first use and kept until ``aclose``."""

    def __init__(self, url: str, *, timeout: Optional[float] = None, backoff: Optional[float] = None) -> None:
        self.url = url
        self.shown = redact_url(url)
        self._password = _password(url)
        self._timeout = CALL_TIMEOUT if timeout is None else timeout
        self._backoff = BACKOFF if backoff is None else backoff
        self._client: Any = None
        self._script: Any = None
        self._state = "ok"
        self._since = time.time()
        self._last_error: Optional[str] = None
        self._retry_at = 0.0
        self._closed = False

    def ready(self) -> bool:
        """Should this request try the store? Always while it works; while it is down, one request
        per back-off probes it and the others count locally without waiting on it."""
        if self._closed:
            return False
        if self._state == "ok":
            return True
        now = time.monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + self._backoff
        return True

    async def charge(self, buckets: Sequence[Bucket]) -> list[tuple[int, float]]:
        """Charge every bucket one unit if all have room (atomically); else charge nothing and
        return the full ones as ``(index, seconds until it has room)``. Raises ``StoreUnavailable``."""
        try:
            with anyio.fail_after(_CALLS_PER_CHARGE * self._timeout):
                reply = await self._evaluate(buckets)
        except Exception as exc:  # noqa: BLE001 - whatever Redis does, the request goes on, counted here
            self._failed(exc)
            raise StoreUnavailable(f"rate-limit store {self.shown} is unavailable: {self._last_error}") from exc
        self._succeeded()
        return [(int(reply[i]) - 1, int(reply[i + 1]) / _US) for i in range(0, len(reply), 2)]

    def status(self) -> dict[str, Any]:
        """For ``/health``: the state and its cause, never the URL (it may name a password)."""
        return {"storage": "redis", "state": self._state, "since": self._since, "last_error": self._last_error}

    async def aclose(self) -> None:
        """Close the client and its connections (bounded). Later requests count in this process."""
        self._closed = True
        client, self._client, self._script = self._client, None, None
        if client is None:
            return
        with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
            try:
                await client.aclose()
            except Exception as exc:  # noqa: BLE001 - stopping: nothing left to protect
                log.debug("closing the rate-limit store %s: %s", self.shown, self._cause(exc))

    async def _evaluate(self, buckets: Sequence[Bucket]) -> list[Any]:
        if self._script is None:
            self._script = self._connect().register_script(CHARGE_SCRIPT)
        args: list[str] = []
        for bucket in buckets:
            args += [str(bucket.requests), repr(bucket.unit * _US)]
        return list(await self._script(keys=[b.key for b in buckets], args=args))

    def _connect(self) -> Any:
        """The client, made once: one connection pool for the life of the store (and of every
        reload that keeps its URL). Fails fast: a socket timeout on every call, and one immediate
        retry only for a connection that was closed (a pooled connection to a Redis that has
        restarted since), never for a timeout, so a hung Redis costs one timeout, not several."""
        import redis.asyncio as aioredis  # optional (extra `redis`); a missing package is a failure like any
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as Closed

        self._client = aioredis.Redis.from_url(
            self.url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(Closed,)), client_name=CLIENT_NAME)
        return self._client

    def _failed(self, exc: BaseException) -> None:
        self._last_error = self._cause(exc)
        self._retry_at = time.monotonic() + self._backoff
        if self._state == "ok" and not self._closed:
            self._state, self._since = "unavailable", time.time()
            log.warning("rate-limit store %s is unavailable (%s): counting in this process, retrying every %gs",
                        self.shown, self._last_error, self._backoff)

    def _succeeded(self) -> None:
        if self._state != "ok":
            self._state, self._since, self._last_error = "ok", time.time(), None
            log.info("rate-limit store %s is back: limits are shared again", self.shown)

    def _cause(self, exc: BaseException) -> str:
        """The error in a few words, with the password masked should a library ever quote it."""
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        for secret in filter(None, {self._password, unquote(self._password or "")}):
            text = text.replace(secret, "***")
        return text if len(text) <= _MAX_CAUSE else text[:_MAX_CAUSE - 3] + "..."


def _password(url: str) -> Optional[str]:
    try:
        return urlsplit(url).password
    except ValueError:
        return None
