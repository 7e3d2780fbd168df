"""Rate limits shared by replicas through Redis (``rate_limits.storage: redis://...``), against a
real ``redis-server`` (tests/redis_server.py; skipped without one, failed without one under CI).

"Replicas" here are RateLimiter instances of their own, each with its own Redis client, as two
gateway processes would have; the last test runs two real gateways. Rules are counted per hour
where a test must not see a bucket drain, and a test that must see one drain bounds its wait with
``fail_after`` instead of timing it. The Redis server requires a password throughout, so every test
also proves the password reaches Redis, and the leak test that it reaches nothing else.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from gateway_harness import MCPGW, eventually, gateway_http, write_config
from raw_rpc import answer_text, call, open_session
from redis_server import RedisServer
from upstreams import fixture_args

from gateway.config.loader import load_text
from gateway.config.model import RateLimitRule, RateLimits
from gateway.security import limit_store
from gateway.security.limit_store import StoreUnavailable, redact_url
from gateway.security.limits import RateLimited, RateLimiter

pytestmark = pytest.mark.anyio

PASSWORD = "hunter2-redis-7c1e9a"
WAIT = 30  # seconds for a whole test
HOURLY = 3600.0


@pytest.fixture
async def redis() -> AsyncIterator[RedisServer]:
    async with RedisServer.running(password=PASSWORD) as server:
        yield server


@asynccontextmanager
async def replicas(url: str, *rules: RateLimitRule, n: int = 2, max_wait: float = 0.0) -> AsyncIterator[list[RateLimiter]]:
    limiters = [RateLimiter.from_config(RateLimits(storage=url, rules=rules, max_wait=max_wait)) for _ in range(n)]
    try:
        yield limiters
    finally:
        for limiter in limiters:
            await limiter.aclose()


async def admitted(limits: RateLimiter, key: str = "alice", **call: str) -> bool:
    try:
        await limits.admit(method="tools/call", key=key, **call)
    except RateLimited:
        return False
    return True


async def levels(server: RedisServer) -> list[float]:
    """The level of every bucket in Redis, as the script wrote it."""
    client = server.client()
    try:
        return sorted([float(await client.hget(key, "level")) async for key in client.scan_iter("mcpgw:rl:*")])
    finally:
        await client.aclose()


# --- sharing ---------------------------------------------------------------------------------------

async def test_two_replicas_admit_n_calls_in_total_not_n_each(redis: RedisServer) -> None:
    rule = RateLimitRule(scope="key", requests=5, per=HOURLY, methods=("tools/call",))
    with anyio.fail_after(WAIT):
        async with replicas(redis.url, rule) as (a, b):
            assert a.shared and b.shared
            outcomes = [await admitted(a if i % 2 else b) for i in range(10)]
            assert outcomes == [True] * 5 + [False] * 5
            assert await admitted(b, key="bob")  # another client has a bucket of its own
            assert a.store_status()["state"] == b.store_status()["state"] == "ok"


async def test_keys_are_prefixed_hashed_and_expire_within_the_period(redis: RedisServer) -> None:
    rule = RateLimitRule(scope="key", requests=2, per=60.0, methods=("tools/call",))
    with anyio.fail_after(WAIT):
        async with replicas(redis.url, rule, n=1) as (a,):
            assert await admitted(a, key="alice@10.0.0.7")
        client = redis.client()
        try:
            keys = [key.decode() async for key in client.scan_iter("*")]
            assert len(keys) == 1 and keys[0].startswith("mcpgw:rl:")
            assert "alice" not in keys[0] and "10.0.0.7" not in keys[0]
            assert 0 < await client.pttl(keys[0]) <= 30_000  # one unit of 30s to drain, not forever
        finally:
            await client.aclose()


async def test_a_refusal_charges_no_rule_on_any_replica(redis: RedisServer) -> None:
    per_client = RateLimitRule(scope="key", requests=1, per=HOURLY, methods=("tools/call",))
    in_total = RateLimitRule(scope="global", requests=3, per=HOURLY, methods=("tools/call",))
    with anyio.fail_after(WAIT):
        async with replicas(redis.url, per_client, in_total) as (a, b):
            assert await admitted(a, key="alice")
            with pytest.raises(RateLimited) as refused:
                await b.admit(method="tools/call", key="alice")  # alice is over; the global rule had room
            assert refused.value.rule == per_client
            assert await levels(redis) == [pytest.approx(1, abs=0.01), pytest.approx(1, abs=0.01)]
            # the refusal took nothing from the global rule: two more clients fit, a third does not
            assert [await admitted(b, key="bob"), await admitted(a, key="carol")] == [True, True]
            with pytest.raises(RateLimited) as full:
                await b.admit(method="tools/call", key="dave")
            assert full.value.rule == in_total
            # and dave's refusal left his own bucket empty: nothing in Redis for him
            assert len(await levels(redis)) == 4


async def test_retry_after_and_the_message_are_those_of_the_memory_store(redis: RedisServer) -> None:
    rule = RateLimitRule(scope="key", requests=60, per=60.0, methods=("tools/call",))
    slow = RateLimitRule(scope="global", requests=60, per=HOURLY, methods=("tools/call",))
    with anyio.fail_after(WAIT):
        memory = RateLimiter.from_config(RateLimits(rules=(rule, slow)))
        async with replicas(redis.url, rule, slow) as (a, b):
            for i in range(60):
                assert await admitted(a if i % 2 else b)
                assert await admitted(memory)
            refusals = []
            for limits in (a, b, memory):
                with pytest.raises(RateLimited) as refused:
                    await limits.admit(method="tools/call", key="alice")
                refusals.append(refused.value)
            # both rules are full: the refusal names the one whose unit takes longest to drain
            assert {(r.rule, r.retry_after, str(r)) for r in refusals} == {
                (slow, 60.0, "rate limit exceeded: 60 tools/call per 3600s in total; retry after 60.0s")}


async def test_max_wait_waits_for_room_freed_on_another_replica_then_admits(redis: RedisServer) -> None:
    rule = RateLimitRule(scope="global", requests=1, per=0.3, methods=("tools/call",))
    with anyio.fail_after(WAIT):
        async with replicas(redis.url, rule, max_wait=5.0) as (a, b):
            await a.admit(method="tools/call", key="alice")
            started = anyio.current_time()
            await b.admit(method="tools/call", key="bob")  # waits for a's unit to drain
            assert anyio.current_time() - started >= 0.2
            assert await levels(redis) == [pytest.approx(1, abs=0.1)]


async def test_max_wait_refuses_when_no_room_frees_in_time(redis: RedisServer) -> None:
    rule = RateLimitRule(scope="global", requests=1, per=HOURLY, methods=("tools/call",))
    with anyio.fail_after(WAIT):
        async with replicas(redis.url, rule, max_wait=0.3) as (a, b):
            await a.admit(method="tools/call", key="alice")
            started = anyio.current_time()
            with pytest.raises(RateLimited):
                await b.admit(method="tools/call", key="bob")
            assert 0.25 <= anyio.current_time() - started < 5.0
            assert await levels(redis) == [pytest.approx(1, abs=0.01)]


# --- outages ---------------------------------------------------------------------------------------

async def test_a_redis_outage_counts_locally_warns_once_and_shares_again_once_redis_is_back(
        redis: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limit_store, "BACKOFF", 0.0)  # every call tries Redis: one warning all the same
    caplog.set_level(logging.INFO, logger="mcpgw")
    rule = RateLimitRule(scope="key", requests=2, per=HOURLY, methods=("tools/call",))
    with anyio.fail_after(WAIT):
        async with replicas(redis.url, rule) as (a, b):
            assert await admitted(a)  # shared: alice has one left
            await redis.kill()
            # alice gets a's own bucket, full size, and is still limited by it
            assert [await admitted(a) for _ in range(3)] == [True, True, False]
            status = a.store_status()
            assert (status["storage"], status["state"]) == ("redis", "unavailable") and status["last_error"]
            warnings = [r.getMessage() for r in caplog.records
                        if r.levelno == logging.WARNING and "rate-limit store" in r.getMessage()]
            assert len(warnings) == 1
            assert redact_url(redis.url) in warnings[0] and "unavailable" in warnings[0]

            await redis.start()  # empty: nothing was persisted
            probes = iter(range(1_000_000))

            async def shared_again() -> bool:  # each probe is a client of its own: never refused
                await a.admit(method="tools/call", key=f"probe-{next(probes)}")
                return a.store_status()["state"] == "ok"

            await eventually(shared_again)
            assert [r.getMessage() for r in caplog.records if "is back" in r.getMessage()] == [
                f"rate-limit store {redact_url(redis.url)} is back: limits are shared again"]
            # shared again, on both replicas (b never saw the outage: its pooled connection was stale)
            assert [await admitted(a, key="bob"), await admitted(b, key="bob"), await admitted(a, key="bob")] \
                == [True, True, False]
            assert b.store_status()["state"] == "ok"
            assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_while_backing_off_requests_count_locally_without_trying_redis(
        redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limit_store, "BACKOFF", HOURLY)
    rule = RateLimitRule(scope="key", requests=5, per=HOURLY, methods=("tools/call",))
    with anyio.fail_after(WAIT):
        async with replicas(redis.url, rule, n=1) as (a,):
            await redis.kill()
            assert await admitted(a)  # this one found Redis down
            await redis.start()
            assert await admitted(a)  # Redis is back, but the back-off has not passed: still local
            assert a.store_status()["state"] == "unavailable" and await levels(redis) == []


async def test_a_missing_redis_package_counts_locally_like_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)  # the import fails, as if not installed
    rule = RateLimitRule(scope="key", requests=1, per=HOURLY, methods=("tools/call",))
    with anyio.fail_after(WAIT):
        async with replicas("redis://127.0.0.1:9/0", rule, n=1) as (a,):
            assert [await admitted(a), await admitted(a)] == [True, False]
            status = a.store_status()
            assert status["state"] == "unavailable" and "Error" in status["last_error"]
            assert "redis.asyncio" in status["last_error"]


async def test_the_password_never_shows_in_logs_errors_or_status(
        redis: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limit_store, "BACKOFF", 0.0)  # every call tries Redis: every failure is seen
    caplog.set_level(logging.DEBUG)
    rule = RateLimitRule(scope="key", requests=5, per=HOURLY)
    wrong = redis.url.replace(PASSWORD, PASSWORD[::-1])
    seen: list[str] = []
    with anyio.fail_after(WAIT):
        async with replicas(redis.url, rule, n=1) as (right,), replicas(wrong, rule, n=1) as (refused,):
            await right.admit_request(key="a")
            await refused.admit_request(key="a")  # Redis refuses the password: counted locally
            seen.append(json.dumps(refused.store_status()))
            await redis.kill()
            await right.admit_request(key="a")
            seen.append(json.dumps(right.store_status()))
            store = limit_store.RedisStore(redis.url)
            with pytest.raises(StoreUnavailable) as failed:
                await store.charge([limit_store.Bucket("mcpgw:rl:x:y", 1, 1.0)])
            await store.aclose()
            seen += [str(failed.value), repr(failed.value), str(failed.value.__cause__), store.shown]
    seen += [r.getMessage() for r in caplog.records]
    assert any("AuthenticationError" in s or "WRONGPASS" in s or "invalid" in s for s in seen), seen
    assert any(":***@" in s for s in seen)
    for text in seen:
        assert PASSWORD not in text and PASSWORD[::-1] not in text


def test_redact_url_masks_only_the_password() -> None:
    assert redact_url("redis://:pw@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact_url("rediss://app:s%40cret@cache.internal:6380/2") == "rediss://app:***@cache.internal:6380/2"
    assert redact_url("redis://redis:6379/0") == "redis://redis:6379/0"
    assert "pw" not in redact_url("redis://:pw@[::1")  # unparsable: shown as nothing of it


# --- reloads ---------------------------------------------------------------------------------------

async def our_connections(server: RedisServer) -> list[dict]:
    """The connections the limiters hold (they name themselves), not the test's own."""
    client = server.client()
    try:
        return [c for c in await client.client_list() if c.get("name") == limit_store.CLIENT_NAME]
    finally:
        await client.aclose()


async def test_a_reload_with_the_same_url_keeps_the_connection_and_another_url_closes_it(redis: RedisServer) -> None:
    rule = RateLimitRule(scope="key", requests=5, per=HOURLY)
    with anyio.fail_after(WAIT):
        first = RateLimiter.from_config(RateLimits(storage=redis.url, rules=(rule,)))
        await first.admit_request(key="a")
        (connection,) = await our_connections(redis)
        same = RateLimiter.from_config(RateLimits(storage=redis.url, rules=(rule,)), previous=first)
        await first.aclose(keep=same)  # what the gateway does after a reload
        await same.admit_request(key="a")
        assert [c["id"] for c in await our_connections(redis)] == [connection["id"]]
        assert same.store_status()["state"] == "ok"

        other_url = redis.url.rsplit("/", 1)[0] + "/1"
        other = RateLimiter.from_config(RateLimits(storage=other_url, rules=(rule,)), previous=same)
        await same.aclose(keep=other)
        await other.admit_request(key="a")
        found = await eventually(lambda: _only_on_db(redis, "1"))
        assert connection["id"] not in [c["id"] for c in found]
        await other.aclose()
        assert await eventually(lambda: _none_left(redis))


async def _only_on_db(server: RedisServer, db: str) -> list[dict] | None:
    found = await our_connections(server)
    return found if found and all(c["db"] == db for c in found) else None


async def _none_left(server: RedisServer) -> bool:
    return not await our_connections(server)


# --- the configuration -----------------------------------------------------------------------------

def config_text(storage: str) -> str:
    return json.dumps({"version": 1, "servers": {"alpha": {"command": sys.executable, "args": fixture_args("alpha")}},
                       "rate_limits": {"storage": storage}})


def test_redis_storage_is_no_longer_reported_as_not_enforced() -> None:
    result = load_text(config_text("redis://:${REDIS_PASSWORD}@redis:6379/0"), "proxy.yaml",
                       {"REDIS_PASSWORD": PASSWORD}, Path.cwd())
    assert result.valid and [p.render() for p in result.problems] == []


def test_a_missing_redis_package_is_an_error_that_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "redis" else real(name, *a))
    result = load_text(config_text("redis://redis:6379/0"), "proxy.yaml", {}, Path.cwd())
    assert not result.valid
    (problem,) = result.problems
    assert (problem.code, problem.pointer) == ("missing-package", "/rate_limits/storage")
    assert "redis" in problem.message and "mcpgw[redis]" in (problem.hint or "")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_validate_never_prints_the_url_password(tmp_path: Path, fmt: str) -> None:
    literal = write_config(tmp_path, config_text(f"redis://:{PASSWORD}@redis:6379/0"), "literal.json")
    broken = write_config(tmp_path, config_text(f"redis://:{PASSWORD}@redis:notaport/0"), "broken.json")
    result = subprocess.run([MCPGW, "validate", "--format", fmt, str(literal), str(broken)], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "a password is written into the file" in output  # the literal one: a warning
    assert "not a usable Redis URL" in output  # the broken one: an error, without quoting the URL
    assert PASSWORD not in output


# --- end to end ------------------------------------------------------------------------------------

async def test_two_gateways_share_one_limit_and_keep_serving_through_a_redis_outage(
        tmp_path: Path, redis: RedisServer) -> None:
    rule = {"scope": "global", "methods": ["tools/call"], "requests": 3, "per": "1h"}
    path = write_config(tmp_path, json.dumps({
        "version": 1, "gateway": {"http": {"json_response": True}},
        "servers": {"alpha": {"command": sys.executable, "args": fixture_args("alpha", "stdio")}},
        "rate_limits": {"storage": f"redis://:${{REDIS_PASSWORD}}@127.0.0.1:{redis.port}/0", "rules": [rule]}}))
    env = {"REDIS_PASSWORD": PASSWORD}
    with anyio.fail_after(WAIT * 2):
        async with gateway_http(path, env=env) as one, gateway_http(path, env=env) as two, \
                httpx2.AsyncClient() as http:
            sessions = {one.url: await open_session(http, one.url), two.url: await open_session(http, two.url)}

            async def echo(gw, i: int) -> httpx2.Response:
                return await http.post(gw.url, headers=sessions[gw.url], json=call("alpha__echo", i, text=str(i)))

            assert [answer_text(await echo(gw, i)) for i, gw in enumerate((one, two, one))] == ["0", "1", "2"]
            for i, gw in enumerate((two, one), start=3):
                assert (await echo(gw, i)).json()["error"]["code"] == -32029
            health = (await http.get(one.base + "/health")).json()
            assert health["status"] == "healthy"
            assert (health["rate_limits"]["storage"], health["rate_limits"]["state"]) == ("redis", "ok")

            await redis.kill()
            assert answer_text(await echo(two, 5)) == "5"  # counted in `two` alone, from an empty bucket
            health = (await http.get(two.base + "/health")).json()
            assert health["status"] == "healthy" and health["rate_limits"]["state"] == "unavailable"
            warnings = [line for line in two.stderr().splitlines() if "rate-limit store" in line]
            assert len(warnings) == 1 and "***" in warnings[0], two.stderr()
            assert PASSWORD not in two.stderr() + json.dumps(health)
