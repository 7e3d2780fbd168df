"""The bundled demo server (``python -m gateway.demo``), driven as a real stdio subprocess."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 20  # seconds for a whole test: spawn, connect, requests, shutdown


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def demo_client(mode: str = "auto") -> AsyncIterator[Client]:
    # cwd: the SDK passes the child only a minimal environment (no PYTHONPATH), so `-m gateway.demo`
    # must find the package from the working directory when mcpgw is not installed.
    params = StdioServerParameters(command=sys.executable, args=["-m", "gateway.demo"], cwd=REPO_ROOT)
    async with Client(params, mode=mode) as client:
        yield client


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_lists_the_demo_tools_prompt_and_resources(mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with demo_client(mode) as client:
            server_name = client.server_info.name if client.server_info else None
            version = client.protocol_version
            tools = await client.list_tools()
            prompts = await client.list_prompts()
            resources = await client.list_resources()
            templates = await client.list_resource_templates()

    assert server_name == "mcpgw-demo"
    assert version == ("2026-07-28" if mode == "auto" else "2025-11-25")
    assert sorted(t.name for t in tools.tools) == ["add", "echo", "now"]
    assert [p.name for p in prompts.prompts] == ["greet"]
    assert [(str(r.uri), r.mime_type) for r in resources.resources] == [("demo://readme", "text/plain")]
    assert [t.uri_template for t in templates.resource_templates] == ["demo://notes/{topic}"]


@pytest.mark.anyio
async def test_tools_echo_add_and_now() -> None:
    with anyio.fail_after(TIMEOUT):
        async with demo_client() as client:
            echoed = await client.call_tool("echo", {"text": "hello, gateway"})
            summed = await client.call_tool("add", {"a": 2, "b": 3})
            now = await client.call_tool("now", {})

    assert not echoed.is_error
    assert echoed.content[0].text == "hello, gateway"

    assert not summed.is_error
    assert float(summed.content[0].text) == 5
    assert summed.structured_content == {"result": 5}

    assert not now.is_error
    stamp = datetime.fromisoformat(now.content[0].text)
    assert stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=1)


@pytest.mark.anyio
async def test_bad_arguments_are_a_tool_error_not_fatal() -> None:
    with anyio.fail_after(TIMEOUT):
        async with demo_client() as client:
            bad = await client.call_tool("add", {"a": "two", "b": 3})
            good = await client.call_tool("echo", {"text": "still alive"})

    assert bad.is_error
    assert good.content[0].text == "still alive"


@pytest.mark.anyio
async def test_greet_prompt() -> None:
    with anyio.fail_after(TIMEOUT):
        async with demo_client() as client:
            result = await client.get_prompt("greet", {"name": "Ada"})

    assert len(result.messages) == 1
    message = result.messages[0]
    assert message.role == "user"
    assert message.content.type == "text"
    assert message.content.text == "Say hello to Ada."


@pytest.mark.anyio
async def test_readme_resource_and_notes_template() -> None:
    with anyio.fail_after(TIMEOUT):
        async with demo_client() as client:
            readme = await client.read_resource("demo://readme")
            notes = await client.read_resource("demo://notes/gateways")

    [readme_content] = readme.contents
    assert str(readme_content.uri) == "demo://readme"
    assert readme_content.mime_type == "text/plain"
    assert "mcpgw" in readme_content.text

    [notes_content] = notes.contents
    assert str(notes_content.uri) == "demo://notes/gateways"
    assert "gateways" in notes_content.text
