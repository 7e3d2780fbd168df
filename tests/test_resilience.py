"""Resilience and observability, end to end: timeouts, retries, the circuit breaker, bounded and
redacted stderr, metrics, health and `mcpgw status`, with real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from gateway_harness import MCPGW, eventually, gateway_http, gateway_stdio, write_config
from mcp import Client
from mcp.shared.exceptions import MCPError
from upstreams import FIXTURE, fixture_args

pytestmark = pytest.mark.anyio
WAIT = 60


def server(name: str, **extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": fixture_args(name),
            "retry": {"backoff": "100ms", "max_backoff": "300ms"}, **extra}


def config(servers: dict[str, Any], **top: Any) -> str:
    return json.dumps({"version": 1, "servers": servers, **top})


def text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def get(gw: Any, path: str) -> httpx2.Response:
    async with httpx2.AsyncClient() as http:
        return await http.get(gw.base + path)


def metric(body: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (labels in any order)."""
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{labels}")


async def test_metrics_and_health_tell_what_happened(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": server("alpha")}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw:
            async with Client(gw.url) as client:
                await client.list_tools()
                for _ in range(2):
                    await client.call_tool("alpha__echo", {"text": "x"})
                assert (await client.call_tool("alpha__fail", {"message": "nope"})).is_error
                with pytest.raises(MCPError):
                    await client.call_tool("nobody__here", {})
            body = (await get(gw, "/metrics")).text
            assert metric(body, "mcp_proxy_requests_total", method="tools/call", server="alpha", outcome="ok") == 2
            assert metric(body, "mcp_proxy_requests_total", method="tools/call", server="alpha", outcome="tool_error") == 1
            assert metric(body, "mcp_proxy_requests_total", method="tools/call", server="", outcome="unknown") == 1
            assert metric(body, "mcp_proxy_latency_seconds_count", method="tools/call", server="alpha") == 3
            assert metric(body, "mcpgw_upstream_up", server="alpha") == 1
            assert metric(body, "mcpgw_circuit_state", server="alpha") == 0
            assert metric(body, "mcpgw_config_info", version="1") == 1
            (alpha,) = (await get(gw, "/health/servers")).json()["servers"]
            assert alpha["status"] == "healthy" and alpha["restarts"] == 0 and alpha["latency"] >= 0
            assert alpha["circuit"]["state"] == "closed"
            assert (await get(gw, "/livez")).status_code == 200
            assert (await get(gw, "/readyz")).status_code == 200


async def test_a_call_over_its_timeout_is_cancelled_at_the_upstream(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": server("alpha", tools={"timeouts": {"slow": "300ms"}})}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url) as client:
            result = await client.call_tool("alpha__slow", {"seconds": 20})
            assert result.is_error and "did not answer within 0.3s" in text(result)
            await eventually(lambda: "CANCELLED slow" in gw.stderr())  # the upstream logs it


async def test_the_breaker_opens_fails_fast_and_closes_after_a_good_probe(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": server(
        "alpha", tools={"timeouts": {"slow": "200ms"}}, circuit_breaker={"failures": 2, "cooldown": "1s"})}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url) as client:
            for _ in range(2):
                assert "did not answer" in text(await client.call_tool("alpha__slow", {"seconds": 20}))
            fast = await client.call_tool("alpha__whoami", {})
            assert fast.is_error and "server 'alpha' is failing: circuit open after 2 consecutive failures" in text(fast)
            assert metric((await get(gw, "/metrics")).text, "mcpgw_circuit_state", server="alpha") == 2
            async def cooled_down() -> bool:  # the cooldown is time: its end shows on the status page
                return (await get(gw, "/health/servers")).json()["servers"][0]["circuit"]["state"] != "open"
            await eventually(cooled_down)
            assert text(await client.call_tool("alpha__whoami", {})) == "alpha"  # the probe
            assert (await get(gw, "/health/servers")).json()["servers"][0]["circuit"]["state"] == "closed"


async def test_with_on_open_hide_tools_vanish_and_return_after_a_ping_probe(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": server(
        "alpha", tools={"timeouts": {"slow": "200ms"}}, health_check={"interval": "30s"},
        circuit_breaker={"failures": 1, "cooldown": "1s", "on_open": "hide"})}))
    changes: list[str] = []
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if getattr(message, "method", "") == "notifications/tools/list_changed":
            changes.append(message.method)
            changed.set()

    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy", message_handler=on_message) as client:
            assert "did not answer" in text(await client.call_tool("alpha__slow", {"seconds": 20}))
            await changed.wait()
            changed = anyio.Event()
            assert not any(t.name.startswith("alpha__") for t in (await client.list_tools()).tools)
            hidden = await client.call_tool("alpha__whoami", {})
            assert hidden.is_error and "circuit open" in text(hidden)
            await changed.wait()  # the ping after the cooldown was the probe: the tools are back
            assert "alpha__whoami" in {t.name for t in (await client.list_tools()).tools}
            assert len(changes) == 2


@pytest.mark.parametrize("retry_tool_calls", [True, False])
async def test_a_call_cut_off_by_a_crash_is_retried_only_when_safe(tmp_path: Path, retry_tool_calls: bool) -> None:
    path = write_config(tmp_path, config({"alpha": server("alpha", retry={
        "attempts": 3, "backoff": "100ms", "max_backoff": "300ms", "tool_calls": retry_tool_calls})}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url) as client:
            pid = int(text(await client.call_tool("alpha__pid", {})))
            outcome: list[Any] = []

            async def call() -> None:
                outcome.append(await client.call_tool("alpha__slow", {"seconds": 1}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await eventually(lambda: "STARTED slow" in gw.stderr())
                os.kill(pid, signal.SIGKILL)
            (result,) = outcome
            if retry_tool_calls:
                assert not result.is_error and text(result) == "done"
            else:
                assert result.is_error and "server 'alpha'" in text(result)


async def test_stderr_floods_stay_bounded_and_secrets_never_show(tmp_path: Path) -> None:
    noisy = {"command": sys.executable, "env": {"API_TOKEN": "tok-SECRET-778899"}, "args": ["-c", (
        "import os, sys\n"
        "sys.stderr.write('x' * 100000 + '\\n')\n"
        "for i in range(3000): sys.stderr.write(f'line {i}\\n')\n"
        "print('using token', os.environ['API_TOKEN'], file=sys.stderr, flush=True)\n"
        f"os.execv(sys.executable, [sys.executable, {str(FIXTURE)!r}, '--name', 'noisy'])\n")]}
    path = write_config(tmp_path, config({"noisy": noisy}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url) as client:
            assert text(await client.call_tool("noisy__whoami", {})) == "noisy"
            (report,) = (await get(gw, "/health/servers")).json()["servers"]
            assert len(report["stderr_tail"]) <= 10 and all(len(line) <= 4096 for line in report["stderr_tail"])
            assert "using token ***" in report["stderr_tail"]
            assert "tok-SECRET-778899" not in gw.stderr() and "using token ***" in gw.stderr()


async def test_stdio_gateway_serves_status_on_a_side_port_and_mcpgw_status_reads_it(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = write_config(tmp_path, config({"alpha": server("alpha")}, observability={"status_port": port}))
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path) as client:
            assert text(await client.call_tool("alpha__whoami", {})) == "alpha"
            shown = await anyio.to_thread.run_sync(lambda: subprocess.run(
                [MCPGW, "status", "--url", f"http://127.0.0.1:{port}"], capture_output=True, text=True, timeout=30))
            assert shown.returncode == 0, shown.stderr
            assert shown.stdout.startswith("healthy: 1 of 1 servers connected; config version 1")
            assert re.search(r"^alpha\s+healthy\s+\S+ms\s+0\s+closed", shown.stdout, re.M)
    gone = subprocess.run([MCPGW, "status", "--url", f"http://127.0.0.1:{port}"], capture_output=True, text=True, timeout=30)
    assert gone.returncode == 2 and "no status at" in gone.stderr


async def test_an_http_session_the_upstream_forgot_is_re_established_transparently(tmp_path: Path) -> None:
    from upstreams import running_upstream

    with anyio.fail_after(WAIT):
        async with running_upstream("remote", transport="http") as upstream:
            path = write_config(tmp_path, config({"remote": {"url": upstream.url, "protocol": "2025-11-25"}}))
            async with gateway_http(path) as gw, Client(gw.url) as client:
                assert text(await client.call_tool("remote__forget_sessions", {})) == "forgetting"
                await eventually(lambda: "FORGOT sessions" in upstream.stderr())
                again = await client.call_tool("remote__whoami", {})  # refused with 404, re-sent
                assert not again.is_error and text(again) == "remote"
                (report,) = (await get(gw, "/health/servers")).json()["servers"]
                assert report["protocol_version"] == "2025-11-25" and report["restarts"] == 1
                assert "no longer knows our session; re-initializing" in gw.stderr()


async def test_a_secret_in_a_failing_servers_stderr_reaches_neither_clients_nor_status(tmp_path: Path) -> None:
    leaky = {"command": sys.executable, "env": {"API_TOKEN": "tok-LEAK-445566"}, "connect_timeout": "5s",
             "args": ["-c", "import os, sys; print('bad token', os.environ['API_TOKEN'], file=sys.stderr); sys.exit(1)"]}
    path = write_config(tmp_path, config({"alpha": server("alpha"), "leaky": leaky}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url) as client:
            result = await client.call_tool("leaky__anything", {})
            assert result.is_error and "bad token ***" in text(result)
            status = (await get(gw, "/health/servers")).text
            assert "bad token ***" in status
            assert "tok-LEAK-445566" not in text(result) + status + gw.stderr()
