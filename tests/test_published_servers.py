"""Real published MCP servers behind the gateway, as users run them."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from gateway_harness import gateway_stdio, write_config
from mcp_types import PromptReference
from published import everything_server, time_server

pytestmark = pytest.mark.anyio
WAIT = 90


def text(result: object) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_server_everything_and_mcp_server_time_behind_one_gateway(tmp_path: Path, mode: str) -> None:
    path = write_config(tmp_path, json.dumps({"version": 1, "servers": {
        "everything": everything_server(), "time": time_server()}}))
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path, mode=mode) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"everything__echo", "everything__get-sum", "time__get_current_time", "time__convert_time"} <= names
            assert text(await client.call_tool("everything__echo", {"message": "hi"})) == "Echo: hi"
            assert "3" in text(await client.call_tool("everything__get-sum", {"a": 1, "b": 2}))
            now = json.loads(text(await client.call_tool("time__get_current_time", {"timezone": "UTC"})))
            assert now["timezone"] == "UTC"
            image = await client.call_tool("everything__get-tiny-image", {})
            assert any(c.type == "image" for c in image.content)
            prompt = await client.get_prompt("everything__args-prompt", {"city": "Paris"})
            assert "Paris" in prompt.messages[0].content.text
            templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
            assert "demo://resource/dynamic/text/{resourceId}" in templates
            read = await client.read_resource("demo://resource/dynamic/text/7")
            assert read.contents
            done = await client.complete(PromptReference(type="ref/prompt", name="everything__completable-prompt"),
                                         {"name": "department", "value": "E"})
            assert "Engineering" in done.completion.values
