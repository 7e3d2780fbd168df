"""The proxy core end to end: the real ``mcpgw serve`` with real upstream processes and the SDK client.

Every test runs the gateway as users do (a process started from a YAML file) and asserts what a
client sees. Upstreams are ``tests/fixtures/upstream.py`` processes (stdio children of the gateway,
or HTTP/SSE servers on 127.0.0.1).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from gateway_harness import MCPGW, eventually, gateway_http, gateway_stdio, process_alive, stop, write_config
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from upstreams import fixture_args, http_upstream

pytestmark = pytest.mark.anyio
WAIT = 60  # seconds for a whole test: several processes start, talk and stop


def stdio_server(name: str, **extra: Any) -> dict[str, Any]:
    tool_set = extra.pop("tool_set", "basic")
    return {"command": sys.executable, "args": fixture_args(name, "stdio", tool_set),
            "retry": {"backoff": "100ms", "max_backoff": "500ms"}, **extra}


def config(servers: dict[str, Any], **top: Any) -> str:
    return json.dumps({"version": 1, "servers": servers, **top})


def text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_two_stdio_upstreams_are_one_server_and_calls_route_by_prefix(tmp_path: Path, mode: str) -> None:
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha"), "beta": stdio_server("beta", prefix="b")}))
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path, mode=mode) as client:
            # a call before any list: routing never depends on a previous tools/list
            assert text(await client.call_tool("b__whoami", {})) == "beta"
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"alpha__whoami", "alpha__echo", "b__whoami", "b__echo"} <= names
            assert text(await client.call_tool("alpha__whoami", {})) == "alpha"
            assert text(await client.call_tool("alpha__echo", {"text": "hi"})) == "hi"
            with pytest.raises(MCPError, match="unknown tool 'gamma__whoami'"):
                await client.call_tool("gamma__whoami", {})


async def test_every_upstream_transport_behind_one_gateway(tmp_path: Path) -> None:
    with anyio.fail_after(WAIT):
        async with http_upstream("web", transport="http") as http_url, http_upstream("old", transport="sse") as sse_url:
            path = write_config(tmp_path, config({
                "local": stdio_server("local"),
                "web": {"url": http_url},
                "old": {"transport": "sse", "url": sse_url},
            }))
            async with gateway_stdio(path) as client:
                for name in ("local", "web", "old"):
                    assert text(await client.call_tool(f"{name}__whoami", {})) == name


async def test_prompts_resources_templates_and_completions_cross_the_gateway(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha")}))
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path) as client:
            prompts = {p.name for p in (await client.list_prompts()).prompts}
            assert {"alpha__greet", "alpha__summarize"} <= prompts
            got = await client.get_prompt("alpha__greet", {"name": "Ada"})
            assert "Ada" in got.messages[0].content.text
            uris = {r.uri for r in (await client.list_resources()).resources}
            assert "fixture://alpha/readme" in uris
            templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
            assert "fixture://alpha/items/{id}" in templates
            read = await client.read_resource("fixture://alpha/items/42")
            assert "42" in read.contents[0].text and "alpha" in read.contents[0].text
            from mcp_types import PromptReference

            done = await client.complete(PromptReference(type="ref/prompt", name="alpha__summarize"),
                                         {"name": "style", "value": "b"})
            assert set(done.completion.values) >= {"brief", "bullet"}


async def test_tool_metadata_crosses_unchanged(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha")}))
    with anyio.fail_after(WAIT):
        async with Client(__import__("upstreams").stdio_params("alpha")) as direct:
            original = next(t for t in (await direct.list_tools()).tools if t.name == "annotated")
        async with gateway_stdio(path) as client:
            proxied = next(t for t in (await client.list_tools()).tools if t.name == "alpha__annotated")
    assert proxied.model_dump(exclude={"name"}) == original.model_dump(exclude={"name"})
    assert proxied.title == "Annotated Tool" and proxied.output_schema and proxied.meta


BASIC_TOOLS = {"whoami", "pid", "header", "forget_sessions", "echo", "add", "slow", "fail", "crash", "progress", "log",
               "annotated", "sample", "ask", "roots", "touch", "add_tool", "remove_tool", "noop_list_changed",
               "slow_progress", "log_levels"}


async def test_names_clients_reject_are_made_valid_and_still_route(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"tricky": stdio_server("tricky", tool_set="tricky")}))
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", n) for n in names), names
            assert len(names) == len(set(names))
            tricky = [n for n in names if n.removeprefix("tricky__") not in BASIC_TOOLS]
            reached = {text(await client.call_tool(n, {})).split()[0].removeprefix("tool=") for n in tricky}
    assert {"search.issues", "user@host", "path/to/tool", "a_b", "a.b"} <= reached
    assert any(len(n) > 64 for n in reached), "the 70-character tool is reachable under a shortened name"


@pytest.mark.parametrize("rule", ["first", "reject"])
async def test_name_collisions_follow_the_declared_rule(tmp_path: Path, rule: str) -> None:
    path = write_config(tmp_path, config(
        {"alpha": stdio_server("alpha", prefix=""), "beta": stdio_server("beta", prefix="")},
        gateway={"naming": {"on_collision": rule}}))
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            if rule == "first":
                assert names.count("whoami") == 1
                assert text(await client.call_tool("whoami", {})) == "alpha"
            else:
                assert "whoami" not in names
                with pytest.raises(MCPError, match="unknown tool"):
                    await client.call_tool("whoami", {})


async def test_an_upstream_that_never_starts_fails_only_its_own_tools(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({
        "alpha": stdio_server("alpha"),
        "ghost": {"command": "mcpgw-no-such-command", "retry": {"backoff": "100ms", "max_backoff": "1s"}},
    }))
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path) as client:
            assert text(await client.call_tool("alpha__whoami", {})) == "alpha"
            result = await client.call_tool("ghost__anything", {})
            assert result.is_error
            assert "server 'ghost' is unavailable" in text(result) and "mcpgw-no-such-command" in text(result)


async def test_an_upstream_that_dies_mid_call_fails_that_call_and_is_restarted(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha"), "beta": stdio_server("beta")}))
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path) as client:
            first_pid = text(await client.call_tool("alpha__pid", {}))
            crashed = await client.call_tool("alpha__crash", {})
            assert crashed.is_error and "server 'alpha'" in text(crashed)
            assert text(await client.call_tool("beta__whoami", {})) == "beta"  # others never notice
            again = await client.call_tool("alpha__pid", {})  # waits for the restart, then succeeds
            assert not again.is_error and text(again) != first_pid


async def test_an_upstream_that_dies_leaving_a_helper_alive_fails_the_call_now_not_at_its_timeout(
        tmp_path: Path) -> None:
    """The helper holds what the server could leave it; the server's pipes must not be among that
    (under uvloop's own spawn they were: with no health check to notice, the call waited out its
    timeout, here 120 s, for an answer that could not come, and this test's minute ran out first)."""
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha", timeout="120s",
                                                                health_check={"enabled": False})}))
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path) as client:
            first_pid = text(await client.call_tool("alpha__pid", {}))
            crashed = await client.call_tool("alpha__crash", {"helper": True})
            assert crashed.is_error and "server 'alpha'" in text(crashed)
            again = await client.call_tool("alpha__pid", {})
            assert not again.is_error and text(again) != first_pid


async def test_http_sessions_are_independent_and_both_eras_share_one_endpoint(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha")}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw:
            async with Client(gw.url, mode="legacy") as one, Client(gw.url, mode="auto") as two:
                assert (one.protocol_version, two.protocol_version) == ("2025-11-25", "2026-07-28")
                results = await _gather(*(c.call_tool("alpha__echo", {"text": f"from-{i}"})
                                          for i, c in enumerate([one, two, one, two])))
                assert [text(r) for r in results] == ["from-0", "from-1", "from-2", "from-3"]
            async with httpx2.AsyncClient() as http:
                gone = await http.delete(gw.url, headers={"Mcp-Session-Id": "no-such-session"})
                assert gone.status_code == 404
                evil = await http.post(gw.url, headers={"Host": "evil.example.com", "Content-Type": "application/json",
                                                        "Accept": "application/json, text/event-stream"},
                                       content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
                assert evil.status_code == 421
                health = (await http.get(gw.base + "/health")).json()
                assert health["status"] == "healthy" and health["servers"]["connected"] == 1


async def test_stateless_http_serves_every_request_on_its_own(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha")}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path, "--stateless") as gw:
            for mode in ("legacy", "auto"):
                async with Client(gw.url, mode=mode) as client:
                    assert text(await client.call_tool("alpha__whoami", {})) == "alpha"


async def test_a_namespace_endpoint_serves_only_its_servers(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha"), "beta": stdio_server("beta")},
                                         namespaces={"team": {"servers": ["beta"]}}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw:
            async with Client(gw.base + "/ns/team/mcp") as client:
                names = {t.name for t in (await client.list_tools()).tools}
                assert "beta__whoami" in names and not any(n.startswith("alpha__") for n in names)
                with pytest.raises(MCPError, match="unknown tool"):
                    await client.call_tool("alpha__whoami", {})
            async with Client(gw.url) as client:
                assert text(await client.call_tool("alpha__whoami", {})) == "alpha"
            async with httpx2.AsyncClient() as http:
                ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
                assert (await http.post(gw.base + "/ns/nope/mcp", json=ping)).status_code == 404


async def test_sigterm_stops_the_gateway_and_leaves_no_upstream_process(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha"), "beta": stdio_server("beta")}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw:
            async with Client(gw.url) as client:
                pids = [int(text(await client.call_tool(f"{n}__pid", {}))) for n in ("alpha", "beta")]
            assert all(process_alive(pid) for pid in pids)
            assert await stop(gw.process) == 0
        assert not any(process_alive(pid) for pid in pids)


async def _gather(*awaitables: Any) -> list[Any]:
    results: list[Any] = [None] * len(awaitables)

    async def run(i: int, aw: Any) -> None:
        results[i] = await aw

    async with anyio.create_task_group() as tg:
        for i, aw in enumerate(awaitables):
            tg.start_soon(run, i, aw)
    return results


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_a_remote_upstream_that_dies_mid_call_fails_only_that_call(tmp_path: Path, transport: str) -> None:
    with anyio.fail_after(WAIT):
        async with http_upstream("remote", transport=transport) as url:
            path = write_config(tmp_path, config({
                "remote": {"url": url, "transport": "sse" if transport == "sse" else "streamable-http",
                           "retry": {"backoff": "100ms", "max_backoff": "500ms"}},
                "alpha": stdio_server("alpha"),
            }))
            async with gateway_stdio(path) as client:
                crashed = await client.call_tool("remote__crash", {})
                assert crashed.is_error and "server 'remote'" in text(crashed)
                assert text(await client.call_tool("alpha__whoami", {})) == "alpha"
                gone = await client.call_tool("remote__whoami", {})
                assert gone.is_error and "server 'remote'" in text(gone)


async def test_a_hanging_call_times_out_with_a_clear_error_and_the_server_stays_usable(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha", tools={"timeouts": {"slow": "500ms"}})}))
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path) as client:
            hung = await client.call_tool("alpha__slow", {"seconds": 30})
            assert hung.is_error and "server 'alpha' did not answer within 0.5s" in text(hung)
            assert text(await client.call_tool("alpha__whoami", {})) == "alpha"


async def test_an_upstream_that_speaks_garbage_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    garbage = {"command": sys.executable, "connect_timeout": "2s",
               "args": ["-c", "import sys, time; print('this is not JSON-RPC', flush=True); "
                              "print('bad things happened', file=sys.stderr, flush=True); time.sleep(60)"]}
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha"), "liar": garbage}))
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path) as client:
            result = await client.call_tool("liar__anything", {})
            assert result.is_error and "server 'liar' is unavailable" in text(result)
            assert "bad things happened" in text(result)  # the last stderr line says why
            assert text(await client.call_tool("alpha__whoami", {})) == "alpha"


async def test_sigterm_lets_an_http_call_in_flight_finish(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha")}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw:
            # terminate_on_close=False: the gateway is gone when the client leaves, nothing to DELETE
            async with Client(streamable_http_client(gw.url, terminate_on_close=False)) as client:
                await client.list_tools()  # the SDK client lists before validating a result; not after SIGTERM
                answers: list[str] = []

                async def call() -> None:
                    answers.append(text(await client.call_tool("alpha__slow", {"seconds": 1.5})))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    await eventually(lambda: "STARTED slow" in gw.stderr())
                    gw.process.terminate()
            assert answers == ["done"]
            assert await gw.process.wait() == 0  # it stops by itself once the client has gone


async def test_sigterm_over_stdio_drains_the_call_in_flight_then_stops(tmp_path: Path) -> None:
    """The test is the stdio client itself here (JSON-RPC lines), because it must signal the gateway."""
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha")}))
    stderr_path = tmp_path / "stderr.log"
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "alpha__slow", "arguments": {"seconds": 1}}},
    ]
    with anyio.fail_after(WAIT), stderr_path.open("wb") as stderr:
        process = await anyio.open_process([MCPGW, "serve", str(path)], stderr=stderr, cwd=str(tmp_path))
        assert process.stdin and process.stdout
        await process.stdin.send("".join(json.dumps(m) + "\n" for m in messages).encode())
        await eventually(lambda: "STARTED slow" in stderr_path.read_text())
        process.terminate()
        replies = [json.loads(line) for line in (await _read_all(process.stdout)).splitlines() if line.strip()]
        assert await process.wait() == 0
    call = next(r for r in replies if r.get("id") == 2)
    assert call["result"]["content"][0]["text"] == "done"


async def _read_all(stream: Any) -> str:
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
    return b"".join(chunks).decode()


async def test_configured_headers_and_bearer_auth_reach_an_http_upstream(tmp_path: Path) -> None:
    with anyio.fail_after(WAIT):
        async with http_upstream("remote", transport="http") as url:
            path = write_config(tmp_path, config({"remote": {
                "url": url, "headers": {"X-Team": "blue"}, "auth": {"type": "bearer", "token": "tok-123"}}}))
            async with gateway_stdio(path) as client:
                assert text(await client.call_tool("remote__header", {"name": "x-team"})) == "blue"
                assert text(await client.call_tool("remote__header", {"name": "authorization"})) == "Bearer tok-123"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_results_carry_the_gateways_identity_not_the_upstreams(tmp_path: Path, mode: str) -> None:
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha")}, gateway={"name": "acme"}))
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path, mode=mode) as client:
            result = await client.call_tool("alpha__whoami", {})
    stamp = (result.meta or {}).get("io.modelcontextprotocol/serverInfo")
    assert stamp is None or stamp["name"] == "acme"


HANDSHAKE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
JSON_AND_SSE = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


async def test_http_delete_ends_a_session_and_its_id_then_gets_404(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha")}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            opened = await http.post(gw.url, headers=JSON_AND_SSE, json=HANDSHAKE)
            session = opened.headers["mcp-session-id"]
            ended = await http.delete(gw.url, headers={"Mcp-Session-Id": session})
            assert ended.status_code in (200, 204)
            after = await http.post(gw.url, headers={**JSON_AND_SSE, "Mcp-Session-Id": session,
                                                     "Mcp-Protocol-Version": "2025-11-25"},
                                    json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
            assert after.status_code == 404


async def test_http_refuses_a_foreign_origin_and_answers_json_when_configured(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha")},
                                         gateway={"http": {"json_response": True}}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            foreign = await http.post(gw.url, headers={**JSON_AND_SSE, "Origin": "http://evil.example.com"},
                                      json=HANDSHAKE)
            assert foreign.status_code == 403
            local = await http.post(gw.url, headers={**JSON_AND_SSE, "Origin": "http://localhost:3000"}, json=HANDSHAKE)
            assert local.status_code == 200
            assert local.headers["content-type"].startswith("application/json")
            assert local.json()["result"]["serverInfo"]["name"] == "mcpgw"


async def test_tool_filters_and_renames_apply_and_hidden_tools_cannot_be_called(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": stdio_server(
        "alpha", tools={"allow": ["echo", "who*", "crash"], "deny": ["crash"], "rename": {"whoami": "identify"}})}))
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == {"alpha__echo", "alpha__identify"}
            assert text(await client.call_tool("alpha__identify", {})) == "alpha"
            for hidden in ("alpha__crash", "alpha__whoami", "alpha__add"):
                with pytest.raises(MCPError, match="unknown tool"):
                    await client.call_tool(hidden, {})


async def test_an_unknown_session_is_404_and_older_protocol_versions_are_spoken(tmp_path: Path) -> None:
    """Two things the plugged.in reference proxy gets wrong (its contract, item 10)."""
    path = write_config(tmp_path, config({"alpha": stdio_server("alpha")}))
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "old", "version": "1"}}}
    with anyio.fail_after(WAIT):
        async with gateway_http(path, "--no-watch") as gw, httpx2.AsyncClient() as http:
            gone = await http.delete(gw.url, headers={**headers, "Mcp-Session-Id": "0" * 32})
            assert gone.status_code == 404
            opened = await http.post(gw.url, headers=headers, json=init)
            assert opened.status_code == 200
            body = opened.text if opened.headers["content-type"].startswith("application/json") else \
                next(line[5:] for line in opened.text.splitlines() if line.startswith("data:") and line[5:].strip())
            assert json.loads(body)["result"]["protocolVersion"] == "2025-03-26"
