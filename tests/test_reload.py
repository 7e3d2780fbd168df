"""Hot reload, end to end: the real gateway watching a real file that the test rewrites.

Waiting is event-driven where the gateway announces something (``list_changed`` to a connected
handshake-era client) and otherwise a bounded poll of what users poll too (``/health``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from gateway_harness import eventually, gateway_http, process_alive, write_config
from mcp import Client
from mcp.shared.exceptions import MCPError
from upstreams import fixture_args

pytestmark = pytest.mark.anyio
WAIT = 60


def server(name: str, **extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": fixture_args(name), **extra}


def config(servers: dict[str, Any], **top: Any) -> str:
    return json.dumps({"version": 1, "servers": servers, "gateway": {"drain_timeout": "5s"}, **top})


def replace_file(path: Path, text: str) -> None:
    """Save the way editors and tools do: write a temporary file, rename it over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


class Notifications:
    """The notifications a client receives, as a stream a test can wait on."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[str](100)

    async def handler(self, message: Any) -> None:
        method = getattr(message, "method", None)
        if method:
            await self._send.send(method)

    async def next(self) -> str:
        return await self._receive.receive()

    def pending(self) -> list[str]:
        found = []
        while True:
            try:
                found.append(self._receive.receive_nowait())
            except anyio.WouldBlock:
                return found


async def health(gw: Any) -> dict[str, Any]:
    async with httpx2.AsyncClient() as http:
        return (await http.get(gw.base + "/health")).json()


async def until_health(gw: Any, check: Any) -> dict[str, Any]:
    """The /health report once ``check(report)`` holds."""
    async def report() -> Any:
        current = await health(gw)
        return current if check(current) else None
    return await eventually(report)


async def test_a_saved_edit_adds_a_server_keeps_the_unchanged_one_and_tells_clients(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": server("alpha")}))
    seen = Notifications()
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy", message_handler=seen.handler) as client:
            pid = text(await client.call_tool("alpha__pid", {}))
            replace_file(path, config({"alpha": server("alpha"), "beta": server("beta")}))
            assert await seen.next() == "notifications/tools/list_changed"
            assert text(await client.call_tool("beta__whoami", {})) == "beta"
            assert text(await client.call_tool("alpha__pid", {})) == pid  # same process, same session
            report = await health(gw)
            assert report["config"]["version"] == 2 and report["servers"]["total"] == 2


async def test_changing_prefix_and_filters_renames_tools_without_reconnecting(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": server("alpha")}))
    seen = Notifications()
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy", message_handler=seen.handler) as client:
            pid = text(await client.call_tool("alpha__pid", {}))
            replace_file(path, config({"alpha": server("alpha", prefix="a", timeout="5s",
                                                       tools={"deny": ["crash"]})}))
            assert await seen.next() == "notifications/tools/list_changed"
            names = {t.name for t in (await client.list_tools()).tools}
            assert "a__pid" in names and "a__crash" not in names and not any(n.startswith("alpha__") for n in names)
            assert text(await client.call_tool("a__pid", {})) == pid
            with pytest.raises(MCPError, match="unknown tool 'alpha__pid'"):
                await client.call_tool("alpha__pid", {})


async def test_a_changed_command_reconnects_and_a_removed_server_is_stopped(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": server("alpha"), "beta": server("beta")}))
    seen = Notifications()
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy", message_handler=seen.handler) as client:
            alpha_pid = int(text(await client.call_tool("alpha__pid", {})))
            beta_pid = int(text(await client.call_tool("beta__pid", {})))
            changed = server("alpha")
            changed["args"] = [*changed["args"], "--tool-set", "tricky"]
            replace_file(path, config({"alpha": changed}))
            assert await seen.next() == "notifications/tools/list_changed"
            assert int(text(await client.call_tool("alpha__pid", {}))) != alpha_pid
            with pytest.raises(MCPError, match="unknown tool 'beta__pid'"):
                await client.call_tool("beta__pid", {})
            # both retired: stopped once their calls in flight are done
            await eventually(lambda: not process_alive(alpha_pid) and not process_alive(beta_pid))


async def test_an_invalid_save_is_rejected_and_the_running_config_keeps_serving(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": server("alpha")}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy") as client:
            replace_file(path, config({"alpha": server("alpha", timeout=30)}))
            report = await until_health(gw, lambda r: r["config"]["last_rejected"])
            assert report["config"]["version"] == 1
            assert "invalid configuration (1 error)" in report["config"]["last_rejected"]["error"]
            assert text(await client.call_tool("alpha__whoami", {})) == "alpha"
            # logged exactly as `mcpgw validate` prints it
            assert f"{path}:1:" in gw.stderr() and "/servers/alpha/timeout: expected a string" in gw.stderr()


async def test_a_server_that_cannot_start_rejects_the_reload(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": server("alpha")}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy") as client:
            replace_file(path, config({"alpha": server("alpha"),
                                       "ghost": {"command": "mcpgw-no-such-command", "connect_timeout": "2s"}}))
            report = await until_health(gw, lambda r: r["config"]["last_rejected"])
            assert "server 'ghost'" in report["config"]["last_rejected"]["error"]
            assert report["config"]["version"] == 1 and report["servers"]["total"] == 1
            assert text(await client.call_tool("alpha__whoami", {})) == "alpha"


async def test_an_edit_that_changes_nothing_is_skipped_and_announces_nothing(tmp_path: Path) -> None:
    text_v1 = "# first\n" + config({"alpha": server("alpha")})
    path = write_config(tmp_path, text_v1)
    seen = Notifications()
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy", message_handler=seen.handler) as client:
            await client.list_tools()  # registers this session for announcements
            replace_file(path, "# only a comment changed\n" + config({"alpha": server("alpha")}))
            await eventually(lambda: "configuration unchanged" in gw.stderr())
            assert (await health(gw))["config"]["version"] == 1
            assert seen.pending() == []


async def test_sighup_reloads_when_watching_is_off(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": server("alpha")}))
    seen = Notifications()
    with anyio.fail_after(WAIT):
        async with gateway_http(path, "--no-watch") as gw, \
                Client(gw.url, mode="legacy", message_handler=seen.handler) as client:
            await client.list_tools()
            replace_file(path, config({"alpha": server("alpha"), "beta": server("beta")}))
            gw.process.send_signal(signal.SIGHUP)
            assert await seen.next() == "notifications/tools/list_changed"
            assert text(await client.call_tool("beta__whoami", {})) == "beta"


async def test_a_kubernetes_configmap_symlink_swap_is_seen(tmp_path: Path) -> None:
    """A ConfigMap volume: proxy.yaml -> ..data/proxy.yaml, ..data -> a timestamped directory that
    an update replaces by re-pointing ..data atomically."""
    for version, servers in (("v1", {"alpha": server("alpha")}), ("v2", {"alpha": server("alpha"), "beta": server("beta")})):
        (tmp_path / f"..{version}").mkdir()
        (tmp_path / f"..{version}" / "proxy.yaml").write_text(config(servers), encoding="utf-8")
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "proxy.yaml").symlink_to("..data/proxy.yaml")
    seen = Notifications()
    with anyio.fail_after(WAIT):
        async with gateway_http(tmp_path / "proxy.yaml") as gw, \
                Client(gw.url, mode="legacy", message_handler=seen.handler) as client:
            await client.list_tools()
            (tmp_path / "..data_tmp").symlink_to("..v2")
            os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
            assert await seen.next() == "notifications/tools/list_changed"
            assert text(await client.call_tool("beta__whoami", {})) == "beta"


async def test_a_call_in_flight_on_a_removed_server_finishes(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": server("alpha"), "beta": server("beta")}))
    seen = Notifications()
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy", message_handler=seen.handler) as client:
            await client.list_tools()
            answers: list[str] = []

            async def slow_call() -> None:
                answers.append(text(await client.call_tool("beta__slow", {"seconds": 1.5})))

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow_call)
                await eventually(lambda: "STARTED slow" in gw.stderr())
                replace_file(path, config({"alpha": server("alpha")}))
                assert await seen.next() == "notifications/tools/list_changed"
            assert answers == ["done"]


async def test_under_load_reloads_lose_no_call_to_a_tool_present_in_both_configs(tmp_path: Path) -> None:
    """Four clients (both eras) call `core__echo` without pause while the file is rewritten through
    additions, a removal, a rename, a filter change and an invalid save in between."""
    versions = [
        {"core": server("core"), "a": server("a")},
        {"core": server("core"), "a": server("a"), "b": server("b")},                       # b added
        {"core": server("core"), "c": server("b")},                                          # a removed, b renamed c
        {"core": server("core", tools={"deny": ["crash"]}), "c": server("b")},               # a filter changed
        None,                                                                                # an invalid save
        {"core": server("core")},                                                            # back to one
    ]
    path = write_config(tmp_path, config(versions[0]))
    failures: list[str] = []
    calls = 0
    pids: set[int] = set()
    with anyio.fail_after(WAIT * 2):
        async with gateway_http(path) as gw:
            done = anyio.Event()

            async def caller(mode: str, n: int) -> None:
                nonlocal calls
                async with Client(gw.url, mode=mode) as client:
                    while not done.is_set():
                        result = await client.call_tool("core__echo", {"text": f"{mode}-{n}"})
                        calls += 1
                        if result.is_error or text(result) != f"{mode}-{n}":
                            failures.append(text(result))

            async with anyio.create_task_group() as tg, Client(gw.url) as checker:
                for n, mode in enumerate(["legacy", "auto", "legacy", "auto"]):
                    tg.start_soon(caller, mode, n)
                expected_version = 1
                for servers in versions[1:]:
                    if servers is None:
                        replace_file(path, config({"core": server("core", timeout="forever")}))
                        await until_health(gw, lambda r: r["config"]["last_rejected"])
                        continue
                    replace_file(path, config(servers))
                    expected_version += 1
                    await until_health(gw, lambda r, v=expected_version: r["config"]["version"] == v)
                    names = {t.name for t in (await checker.list_tools()).tools}
                    for name in servers:
                        assert f"{name}__whoami" in names
                        pids.add(int(text(await checker.call_tool(f"{name}__pid", {}))))
                    for gone in {"a", "b", "c"} - set(servers):
                        with pytest.raises(MCPError, match=f"unknown tool '{gone}__whoami'"):
                            await checker.call_tool(f"{gone}__whoami", {})
                assert (await health(gw))["config"]["version"] == expected_version
                done.set()
        assert failures == [] and calls > 50
    assert not any(process_alive(pid) for pid in pids), "no upstream process outlives the gateway"


async def test_a_2026_client_hears_of_changes_on_its_listen_stream(tmp_path: Path) -> None:
    path = write_config(tmp_path, config({"alpha": server("alpha")}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url) as client:
            assert client.protocol_version == "2026-07-28"
            async with client.listen(tools_list_changed=True) as subscription:
                replace_file(path, config({"alpha": server("alpha"), "beta": server("beta")}))
                event = await subscription.__anext__()
            assert type(event).__name__ == "ToolsListChanged"
            assert text(await client.call_tool("beta__whoami", {})) == "beta"
