"""The plugged.in source, end to end: real ``mcpgw serve`` processes polling a fake App on
127.0.0.1 whose records point at real fixture upstream processes.

What is waited on: the gateway's own tools/list (a change is in service once the tools show it),
``/health`` (a source's state), the fake App's poll count and held-request event, and the log.
Every wait is bounded by ``anyio.fail_after``; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from fake_pluggedin import FakePluggedinApp, record, running_fake_app
from gateway_harness import MCPGW, RunningGateway, eventually, gateway_http, process_alive, write_config
from mcp.shared.exceptions import MCPError
from mcp import Client, StdioServerParameters
from upstreams import fixture_args, http_upstream

pytestmark = pytest.mark.anyio
WAIT = 45
SOURCE = "app"
WRONG_KEY = "pg_in_" + "deadbeef" * 8


# --- helpers -------------------------------------------------------------------------------------

def local_server(upstream: str) -> dict[str, Any]:
    """A server of the file: the fixture upstream over stdio, answering ``whoami`` with ``upstream``."""
    return {"command": sys.executable, "args": fixture_args(upstream)}


def stdio_record(slug: str, upstream: str | None = None, **fields: Any) -> dict[str, Any]:
    """An App record (STDIO) that runs the fixture upstream named ``upstream`` (default: the slug)."""
    return record(slug, command=sys.executable, args=fixture_args(upstream or slug), **fields)


def gateway_config(tmp_path: Path, app: FakePluggedinApp, servers: dict[str, Any] | None = None,
                   api_key: str | None = None, literal_key: bool = False, **source: Any) -> Path:
    """A config file with ``servers`` and one plugged.in source polling ``app`` every 200 ms. The
    key is given by reference (``${file:...}``), as a user would, or written into the file."""
    key = api_key or app.api_key
    if not literal_key:
        key_file = tmp_path / "app.key"
        key_file.write_text(key + "\n", encoding="utf-8")
        key = f"${{file:{key_file}}}"
    text = json.dumps({
        "version": 1,
        "gateway": {"drain_timeout": "2s"},
        "servers": servers or {},
        "sources": [{"type": "pluggedin", "name": SOURCE, "base_url": app.base_url,
                     "api_key": key, "refresh": "200ms", **source}],
    })
    return write_config(tmp_path, text)


def text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def tool_names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools(cache_mode="bypass")).tools}


async def call(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool}: {text(result)}"
    return text(result)


async def health(gw: RunningGateway) -> dict[str, Any]:
    async with httpx2.AsyncClient() as http:
        response = await http.get(gw.base + "/health")
        return response.json()


async def source_report(gw: RunningGateway) -> dict[str, Any]:
    report = await health(gw)
    found = [s for s in report.get("sources", []) if s.get("name") == SOURCE]
    assert found, f"/health has no source {SOURCE!r}: {report}"
    return found[0]


async def until_source_state(gw: RunningGateway, state: str) -> dict[str, Any]:
    """The source's /health entry once it is in ``state`` (the caller's fail_after bounds it)."""
    async def check() -> Any:
        report = await source_report(gw)
        return report if report["state"] == state else None
    return await eventually(check)


async def until_tools(client: Client, present: set[str], absent: frozenset[str] = frozenset()) -> set[str]:
    async def check() -> Any:
        names = await tool_names(client)
        return names if present <= names and not (absent & names) else None
    return await eventually(check)


def log_lines(gw: RunningGateway, level: str) -> list[str]:
    """The gateway's text log lines at ``level`` (``2025-..Z error   message``)."""
    return [line for line in gw.stderr().splitlines() if len(line.split()) > 1 and line.split()[1] == level]


# --- 1. merge ------------------------------------------------------------------------------------

async def test_app_servers_are_served_next_to_local_servers(tmp_path: Path) -> None:
    with anyio.fail_after(WAIT):
        async with running_fake_app([stdio_record("remote")]) as app:
            path = gateway_config(tmp_path, app, {"local": local_server("local")})
            async with gateway_http(path) as gw, Client(gw.url, mode="legacy") as client:
                names = await tool_names(client)
                assert {"local__whoami", "remote__whoami", "remote__pid"} <= names
                assert await call(client, "remote__whoami") == "remote"
                assert await call(client, "local__whoami") == "local"
                report = await source_report(gw)
                assert report["state"] == "ok" and report["servers"] == 1 and report["error"] is None
                assert app.server_polls >= 1
                assert all(r.bearer for r in app.requests)


# --- 2. change detection -------------------------------------------------------------------------

async def test_a_poll_reconnects_only_what_changed(tmp_path: Path) -> None:
    keep, notes, changed, gone = (stdio_record("keep"), stdio_record("notes"), stdio_record("changed"),
                                  stdio_record("gone"))
    with anyio.fail_after(WAIT):
        async with running_fake_app([keep, notes, changed, gone]) as app:
            path = gateway_config(tmp_path, app)
            async with gateway_http(path) as gw, Client(gw.url, mode="legacy") as client:
                await until_tools(client, {"keep__pid", "notes__pid", "changed__pid", "gone__pid"})
                before = {slug: await call(client, f"{slug}__pid") for slug in ("keep", "notes", "changed", "gone")}
                assert await call(client, "changed__whoami") == "changed"

                # one assignment: the next poll sees every change at once
                app.records = [
                    keep,
                    notes | {"notes": "now with a note", "created_at": "2026-02-02T00:00:00.000Z"},
                    changed | {"args": fixture_args("changed-v2")},
                    stdio_record("added"),
                ]
                await until_tools(client, {"added__whoami", "keep__pid", "notes__pid", "changed__pid"},
                                  absent=frozenset({"gone__pid", "gone__whoami"}))

                assert await call(client, "keep__pid") == before["keep"]
                assert await call(client, "notes__pid") == before["notes"]
                assert await call(client, "changed__whoami") == "changed-v2"
                assert await call(client, "changed__pid") != before["changed"]
                assert await call(client, "added__whoami") == "added"
                assert not any(name.startswith("gone__") for name in await tool_names(client))
                assert "configuration version 2 in service" in gw.stderr()
                # the removed server and the replaced process are stopped, not left behind
                await eventually(lambda: not any(process_alive(int(before[slug])) for slug in ("gone", "changed")))

                # a change in notes/timestamps alone is not a change: no reload at all
                app.records = [r | {"notes": "edited again", "created_at": "2026-03-03T00:00:00.000Z"}
                               for r in app.records]
                polls = app.server_polls
                await eventually(lambda: app.server_polls >= polls + 2)  # the second one began after the first was handled
                assert "configuration version 3" not in gw.stderr()
                assert await call(client, "notes__pid") == before["notes"]


# --- 3. conflicts --------------------------------------------------------------------------------

@pytest.mark.parametrize(("on_conflict", "served"), [(None, "local-twin"), ("prefer_remote", "remote-twin")])
async def test_a_name_both_local_and_remote_follows_on_conflict(tmp_path: Path, on_conflict: str | None,
                                                                served: str) -> None:
    extra = {"on_conflict": on_conflict} if on_conflict else {}
    with anyio.fail_after(WAIT):
        async with running_fake_app([stdio_record("twin", "remote-twin"), stdio_record("other")]) as app:
            path = gateway_config(tmp_path, app, {"twin": local_server("local-twin")}, **extra)
            async with gateway_http(path) as gw, Client(gw.url, mode="legacy") as client:
                assert await call(client, "twin__whoami") == served
                assert await call(client, "other__whoami") == "other"
                conflict = [line for line in gw.stderr().splitlines() if "twin" in line and "declared locally" in line]
                assert conflict, gw.stderr()
                assert SOURCE in conflict[0]
                assert ("the local one is used" if served == "local-twin" else "the source's one is used") in conflict[0]


# --- 4. 401 --------------------------------------------------------------------------------------

async def test_a_wrong_key_is_loud_and_local_servers_keep_serving(tmp_path: Path) -> None:
    with anyio.fail_after(WAIT):
        async with running_fake_app([stdio_record("remote")]) as app:
            path = gateway_config(tmp_path, app, {"local": local_server("local")}, api_key=WRONG_KEY,
                                  literal_key=True)  # even written into the file, it never shows
            async with gateway_http(path) as gw, Client(gw.url, mode="legacy") as client:
                assert await call(client, "local__whoami") == "local"
                assert not any(name.startswith("remote__") for name in await tool_names(client))
                report = await until_source_state(gw, "unauthorized")
                assert report["error"] == "Invalid API key"  # the App's own message
                errors = [line for line in log_lines(gw, "error") if SOURCE in line]
                assert errors and "Invalid API key" in errors[0], gw.stderr()
                # past the fetch at start: the poller also goes through the refusal
                await eventually(lambda: sum(r.status == 401 and r.bearer for r in app.requests) >= 3)
                assert (await source_report(gw))["state"] == "unauthorized"
                everything = gw.stderr() + json.dumps(await health(gw))
                assert WRONG_KEY not in everything
                assert WRONG_KEY[len("pg_in_"):] not in everything


# --- 5. 500 --------------------------------------------------------------------------------------

async def test_an_app_error_keeps_the_last_good_servers_and_marks_the_source_stale(tmp_path: Path) -> None:
    with anyio.fail_after(WAIT):
        async with running_fake_app([stdio_record("remote")]) as app:
            path = gateway_config(tmp_path, app)
            async with gateway_http(path) as gw, Client(gw.url, mode="legacy") as client:
                pid = await call(client, "remote__pid")
                assert (await source_report(gw))["state"] == "ok"

                app.fail = True
                report = await until_source_state(gw, "stale")
                assert "500" in report["error"] and "Failed to fetch active MCP servers" in report["error"]
                assert "remote__whoami" in await tool_names(client)
                assert await call(client, "remote__whoami") == "remote"
                assert await call(client, "remote__pid") == pid
                assert any(SOURCE in line and "500" in line for line in log_lines(gw, "warning")), gw.stderr()

                app.fail = False
                report = await until_source_state(gw, "ok")
                assert report["error"] is None and report["servers"] == 1
                assert await call(client, "remote__pid") == pid


# --- 6. timeout ----------------------------------------------------------------------------------

async def test_a_slow_app_times_out_and_the_last_good_servers_keep_serving(tmp_path: Path) -> None:
    with anyio.fail_after(WAIT):
        async with running_fake_app([stdio_record("remote")]) as app:
            path = gateway_config(tmp_path, app, timeout="300ms")
            async with gateway_http(path) as gw, Client(gw.url, mode="legacy") as client:
                pid = await call(client, "remote__pid")
                app.slow()  # every answer now waits until released, far past 300 ms
                await app.held.wait()
                report = await until_source_state(gw, "stale")
                assert report["error"], report
                assert await call(client, "remote__whoami") == "remote"
                assert await call(client, "remote__pid") == pid
                app.release()
                await until_source_state(gw, "ok")
                assert await call(client, "remote__pid") == pid


# --- 7. malformed records ------------------------------------------------------------------------

async def test_a_malformed_record_is_skipped_and_named_and_the_others_are_served(tmp_path: Path) -> None:
    bad = stdio_record("broken") | {"args": "--name broken"}  # args must be a list of strings
    with anyio.fail_after(WAIT):
        async with running_fake_app([stdio_record("good"), bad, stdio_record("fine")]) as app:
            path = gateway_config(tmp_path, app)
            async with gateway_http(path) as gw, Client(gw.url, mode="legacy") as client:
                names = await tool_names(client)
                assert {"good__whoami", "fine__whoami"} <= names
                assert not any(name.startswith("broken__") for name in names)
                assert await call(client, "good__whoami") == "good"
                assert await call(client, "fine__whoami") == "fine"
                problems = [line for line in log_lines(gw, "warning") if "broken" in line]
                assert problems and "args" in problems[0] and "skipped" in problems[0], gw.stderr()
                report = await source_report(gw)
                assert report["state"] == "ok" and report["servers"] == 2
                assert any("broken" in problem for problem in report["problems"])


# --- 8. headers ----------------------------------------------------------------------------------

async def test_headers_from_both_option_locations_reach_a_streamable_http_upstream(tmp_path: Path) -> None:
    with anyio.fail_after(WAIT):
        async with http_upstream("web", transport="http") as url:
            web = record("web", type="STREAMABLE_HTTP", command=None, args=None, url=url, streamableHTTPOptions={
                "headers": {"X-One": "a"},
                "requestInit": {"headers": {"X-Two": "b", "X-One": "c"}},
            })
            async with running_fake_app([web]) as app:
                path = gateway_config(tmp_path, app)
                async with gateway_http(path) as gw, Client(gw.url, mode="legacy") as client:
                    assert await call(client, "web__whoami") == "web"
                    assert await call(client, "web__header", name="X-Two") == "b"
                    assert await call(client, "web__header", name="X-One") == "c"  # requestInit wins


# --- 9. the drop-in ------------------------------------------------------------------------------

def base_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", os.defpath), "HOME": os.environ.get("HOME", "/tmp")}


@pytest.mark.parametrize("given_by", ["env", "flags"])
async def test_serve_without_a_config_is_the_pluggedin_drop_in(tmp_path: Path, given_by: str) -> None:
    with anyio.fail_after(WAIT):
        async with running_fake_app([stdio_record("remote")]) as app:
            if given_by == "env":
                args, env = ["serve"], base_env() | {"PLUGGEDIN_API_KEY": app.api_key,
                                                     "PLUGGEDIN_API_BASE_URL": app.base_url}
            else:
                args, env = ["serve", "--pluggedin-api-key", app.api_key,
                             "--pluggedin-api-base-url", app.base_url], base_env()
            params = StdioServerParameters(command=MCPGW, args=args, env=env, cwd=str(tmp_path))
            async with Client(params, mode="legacy") as client:
                assert {"remote__whoami", "remote__pid"} <= await tool_names(client)
                assert await call(client, "remote__whoami") == "remote"
            assert app.server_polls >= 1


async def test_the_drop_in_without_a_key_starts_and_says_a_key_is_needed(tmp_path: Path) -> None:
    params = StdioServerParameters(command=MCPGW, args=["serve"], env=base_env(), cwd=str(tmp_path))
    with anyio.fail_after(WAIT):
        async with Client(params, mode="legacy") as client:
            assert await tool_names(client) == set()
            instructions = client.instructions or ""
            assert "PLUGGEDIN_API_KEY" in instructions and "key" in instructions.lower(), instructions
            with pytest.raises(MCPError, match="PLUGGEDIN_API_KEY"):  # a call explains it too
                await client.call_tool("github__search", {})
