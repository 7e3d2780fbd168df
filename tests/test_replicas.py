"""Several gateway replicas behind one load balancer (issue: scale-out).

Three real ``mcpgw serve`` processes on loopback, each with its own stdio upstream, share one
config file and one session signing key, behind ``round_robin.RoundRobin``: every request goes to
the next replica, so a session's requests alternate between replicas all the time.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from gateway_harness import RunningGateway, eventually, gateway_http, write_config
from loopback import serving
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from raw_rpc import JSON_AND_SSE, LEGACY, answer_text, bearer, call, open_session, rpc
from redis_server import RedisServer
from round_robin import RoundRobin
from upstreams import fixture_args

from gateway import session_ids

pytestmark = pytest.mark.anyio
WAIT = 90  # seconds for a whole test: three gateways and their upstreams start, talk and stop
KEY = "replicas-share-this-signing-key-0123456789"
OPS_KEY = "mcpgw-ops-replicas-5e1f0c2a9b"
CI_KEY = "mcpgw-ci-replicas-7d3b8a6f41"
REDIS_PASSWORD = "replicas-redis-password-3c9e"
NOT_FOUND = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}


def config(prefix: str = "alpha", **top: Any) -> str:
    return json.dumps({
        "version": 1,
        "servers": {"alpha": {"command": sys.executable, "args": fixture_args("alpha", "stdio"), "prefix": prefix}},
        "namespaces": {"team": {"servers": ["alpha"]}},
        "gateway": {"http": {"json_response": True, "session_signing_key": "${MCPGW_SESSION_KEY}"}},
        **top,
    })


@dataclass
class Replicas:
    gateways: list[RunningGateway]
    balancer: RoundRobin
    url: str  # the balancer's /mcp

    @property
    def backends(self) -> list[str]:
        return [gw.base for gw in self.gateways]


@asynccontextmanager
async def replicas(config_path: Path, count: int = 3, key: str = KEY) -> AsyncIterator[Replicas]:
    async with AsyncExitStack() as stack:
        gateways = [await stack.enter_async_context(
            gateway_http(config_path, env={"MCPGW_SESSION_KEY": key, "MCPGW_REPLICA": f"replica-{i}",
                                           "REDIS_PASSWORD": REDIS_PASSWORD}))
            for i in range(count)]
        balancer = RoundRobin([gw.base for gw in gateways])
        stack.push_async_callback(balancer.aclose)
        base = await stack.enter_async_context(serving(balancer))
        yield Replicas(gateways, balancer, base + "/mcp")


def echo_text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def test_a_session_keeps_working_while_its_requests_alternate_between_replicas(tmp_path: Path) -> None:
    path = write_config(tmp_path, config())
    with anyio.fail_after(WAIT):
        async with replicas(path) as r, httpx2.AsyncClient() as http:
            async with Client(streamable_http_client(r.url), mode="legacy") as client:
                assert "alpha__echo" in {tool.name for tool in (await client.list_tools()).tools}
                for i in range(12):
                    assert echo_text(await client.call_tool("alpha__echo", {"text": f"call {i}"})) == f"call {i}"
            async with Client(streamable_http_client(r.url), mode="auto") as modern:  # the 2026 wire: stateless
                for i in range(6):
                    assert echo_text(await modern.call_tool("alpha__echo", {"text": f"m{i}"})) == f"m{i}"
                assert modern.session.protocol_version == "2026-07-28"
            assert all(r.balancer.served[backend] >= 6 for backend in r.backends), r.balancer.served
            rebuilt = [gw for gw in r.gateways if "rebuilt a session from its signed id" in gw.stderr()]
            assert len(rebuilt) >= 2  # every replica but the one that opened it served the session
            for i, gw in enumerate(r.gateways):  # and each says which replica it is
                assert (await http.get(gw.base + "/health")).json()["replica"] == f"replica-{i}"
                assert f'replica="replica-{i}"' in (await http.get(gw.base + "/metrics")).text


async def test_a_replica_killed_mid_run_costs_at_most_its_calls_in_flight(tmp_path: Path) -> None:
    path = write_config(tmp_path, config())
    calls, failed = 24, []
    with anyio.fail_after(WAIT):
        async with replicas(path) as r, Client(streamable_http_client(r.url), mode="legacy") as client:
            victim = r.gateways[1]
            busy = anyio.Event()

            async def one(i: int, limit: anyio.Semaphore) -> None:
                async with limit:
                    try:
                        with anyio.fail_after(20):
                            result = await client.call_tool("alpha__slow", {"seconds": 0.3})
                        assert echo_text(result) == "done"
                    except Exception as exc:  # noqa: BLE001 - what a client sees of a dead replica varies
                        failed.append((i, repr(exc)))
                    if i == calls // 3:
                        busy.set()

            async def kill_while_busy() -> None:
                await busy.wait()
                await eventually(lambda: r.balancer.in_flight[victim.base] > 0)
                victim.process.send_signal(signal.SIGKILL)

            async with anyio.create_task_group() as tg:
                limit = anyio.Semaphore(6)
                tg.start_soon(kill_while_busy)
                for i in range(calls):
                    tg.start_soon(one, i, limit)
            assert await victim.process.wait() == -signal.SIGKILL
            lost = r.balancer.lost
            # what failed is what the dead replica held, at most a concurrency's worth; nothing else
            assert 1 <= lost[victim.base] <= 6 and sum(lost.values()) == lost[victim.base], lost
            assert len(failed) <= lost[victim.base], (failed, lost)
            # and the session goes on, on the replicas left
            for i in range(6):
                assert echo_text(await client.call_tool("alpha__echo", {"text": f"after {i}"})) == f"after {i}"


async def test_a_config_change_reaches_every_replica(tmp_path: Path) -> None:
    path = write_config(tmp_path, config(prefix="alpha"))
    with anyio.fail_after(WAIT):
        async with replicas(path) as r, httpx2.AsyncClient() as http:
            before = {(await http.get(gw.base + "/health")).json()["config"]["digest"] for gw in r.gateways}
            assert len(before) == 1
            replacement = tmp_path / "proxy.yaml.new"
            replacement.write_text(config(prefix="beta"), encoding="utf-8")
            os.replace(replacement, path)  # the atomic swap editors and Kubernetes do

            async def all_reloaded() -> bool:
                digests = {(await http.get(gw.base + "/health")).json()["config"]["digest"] for gw in r.gateways}
                return len(digests) == 1 and digests != before

            await eventually(all_reloaded)
            session = await open_session(http, r.url)
            for i in range(3):  # one tools/list per replica, through the balancer
                listed = await http.post(r.url, headers=session, json=rpc("tools/list", 10 + i))
                names = {tool["name"] for tool in listed.json()["result"]["tools"]}
                assert "beta__echo" in names and "alpha__echo" not in names


async def test_a_limit_of_n_calls_admits_n_in_total_across_the_replicas(tmp_path: Path) -> None:
    limit = 4
    async with RedisServer.running(password=REDIS_PASSWORD) as redis:
        path = write_config(tmp_path, config(rate_limits={
            "storage": f"redis://:${{REDIS_PASSWORD}}@127.0.0.1:{redis.port}/0",
            "rules": [{"scope": "global", "methods": ["tools/call"], "requests": limit, "per": "1m"}]}))
        with anyio.fail_after(WAIT):
            async with replicas(path) as r, Client(streamable_http_client(r.url), mode="legacy") as client:
                outcomes = []
                for i in range(3 * limit):
                    try:
                        outcomes.append(echo_text(await client.call_tool("alpha__echo", {"text": str(i)})))
                    except MCPError as exc:
                        assert exc.error.code == -32029, exc
                        outcomes.append("limited")
                assert outcomes == [str(i) for i in range(limit)] + ["limited"] * (2 * limit)
                assert all(r.balancer.served[backend] >= limit for backend in r.backends)


def altered(session_id: str, where: int) -> str:
    """``session_id`` with one character changed at ``where`` (still a valid header value)."""
    char = session_id[where]
    return session_id[:where] + ("A" if char != "A" else "B") + session_id[where + 1:]


async def test_a_forged_or_altered_session_id_is_refused_by_every_replica(tmp_path: Path) -> None:
    auth = {"api_keys": [{"name": "ops", "key": OPS_KEY}, {"name": "ci-bot", "key": CI_KEY}]}
    path = write_config(tmp_path, config(auth=auth))
    with anyio.fail_after(WAIT):
        async with replicas(path) as r, httpx2.AsyncClient() as http:
            session = await open_session(http, r.url, OPS_KEY)
            genuine = session["Mcp-Session-Id"]
            claims = session_ids.verify(KEY, genuine)
            assert claims is not None and claims.owner == "ops" and claims.endpoint == ""
            payload_at, mac_at = len("s1.") + 5, len(genuine) - 3
            forged = {
                "payload altered": altered(genuine, payload_at),
                "signature altered": altered(genuine, mac_at),
                "signed with another key": session_ids.issue("another-key-" + "x" * 32, "", claims.initialize, "ops"),
                "owner changed, old signature": _reowned(genuine, "ci-bot"),
                "random id": "f" * 32,
            }
            team = await open_session(http, r.gateways[0].base + "/ns/team/mcp", OPS_KEY)
            for gw in r.gateways:
                for what, session_id in forged.items():
                    answer = await http.post(gw.url, headers={**session, "Mcp-Session-Id": session_id},
                                             json=call("alpha__echo", text="x"))
                    assert (answer.status_code, answer.json()) == (404, NOT_FOUND), (gw.base, what)
                # a genuine id, on another endpoint or with other credentials
                answer = await http.post(gw.url, headers={**session, "Mcp-Session-Id": team["Mcp-Session-Id"]},
                                         json=call("alpha__echo", text="x"))
                assert answer.status_code == 404, gw.base
                answer = await http.post(gw.url, headers={**session, **bearer(CI_KEY)}, json=call("alpha__echo", text="x"))
                assert answer.status_code == 404, gw.base
                # while the genuine one works everywhere
                assert answer_text(await http.post(gw.url, headers=session, json=call("alpha__echo", text="ok"))) == "ok"
            assert "does not verify" in "".join(gw.stderr() for gw in r.gateways)
            assert KEY not in "".join(gw.stderr() for gw in r.gateways)
            await _declared_capabilities_travel_in_the_id(http, r)


async def _declared_capabilities_travel_in_the_id(http: httpx2.AsyncClient, r: Replicas) -> None:
    """Capabilities and client info travel in the id: the replica that rebuilds the session knows
    the client can answer sampling, as the replica that opened it did (icons and the like stay out)."""
    headers = {**JSON_AND_SSE, **bearer(OPS_KEY)}
    opened = await http.post(r.gateways[0].url, headers=headers, json=rpc(
        "initialize", 1, protocolVersion=LEGACY, capabilities={"sampling": {}, "roots": {"listChanged": True}},
        clientInfo={"name": "declaring-client", "version": "7", "icons": [{"src": "data:,x" * 100}]}))
    session_id = opened.headers["mcp-session-id"]
    claims = session_ids.verify(KEY, session_id)
    assert claims is not None
    assert claims.initialize["capabilities"] == {"sampling": {}, "roots": {"listChanged": True}}
    assert claims.initialize["clientInfo"] == {"name": "declaring-client", "version": "7"}
    session = {**headers, "Mcp-Session-Id": session_id, "Mcp-Protocol-Version": LEGACY}
    assert answer_text(await http.post(r.gateways[2].url, headers=session, json=call("alpha__echo", text="there"))) == "there"
    assert "(declaring-client)" in r.gateways[2].stderr()


def _reowned(session_id: str, owner: str) -> str:
    """The id with its payload rewritten to another owner, keeping the original signature."""
    _, payload, mac = session_id.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["o"] = owner
    rewritten = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"s1.{rewritten}.{mac}"


async def test_without_a_signing_key_sessions_stay_on_their_replica(tmp_path: Path) -> None:
    """The default: random ids, which another replica answers 404 (clients then start over)."""
    unsigned = json.loads(config())
    del unsigned["gateway"]["http"]["session_signing_key"]
    path = write_config(tmp_path, json.dumps(unsigned))
    with anyio.fail_after(WAIT):
        async with replicas(path, count=2) as r, httpx2.AsyncClient() as http:
            session = await open_session(http, r.gateways[0].url)
            assert not session["Mcp-Session-Id"].startswith("s1.")
            answer = await http.post(r.gateways[1].url, headers=session, json=call("alpha__echo", text="x"))
            assert (answer.status_code, answer.json()) == (404, NOT_FOUND)
