"""What a plugged.in source adds beyond servers: custom instructions served as a prompt of their
server, and activity reports to the App after calls (when ``report_activity`` is on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from fake_pluggedin import API_KEY, record, running_fake_app
from gateway_harness import MCPGW, eventually, gateway_stdio, write_config
from upstreams import fixture_args

pytestmark = pytest.mark.anyio
WAIT = 60
INSTRUCTIONS = [{"role": "user", "content": {"type": "text", "text": "Always answer in haiku."}}]


def remote_record() -> dict[str, object]:
    return record("Remote", slug="remote", command=sys.executable, args=fixture_args("remote", "stdio"),
                  customInstructions=INSTRUCTIONS, customInstructionsDescription="How to use Remote")


async def test_custom_instructions_are_a_prompt_and_calls_are_reported(tmp_path: Path) -> None:
    async with running_fake_app([remote_record()]) as app:
        source = {"type": "pluggedin", "api_key": API_KEY, "base_url": app.base_url, "report_activity": True}
        path = write_config(tmp_path, json.dumps({"version": 1, "sources": [source]}))
        with anyio.fail_after(WAIT):
            async with gateway_stdio(path) as client:
                prompts = {p.name: p for p in (await client.list_prompts()).prompts}
                assert prompts["remote__system_context"].description == "How to use Remote"
                got = await client.get_prompt("remote__system_context")
                assert [m.content.text for m in got.messages] == ["Always answer in haiku."]  # type: ignore[union-attr]
                assert (await client.call_tool("remote__echo", {"text": "hi"})).content[0].text == "hi"  # type: ignore[union-attr]
                reports = await eventually(lambda: [a for a in app.activity if a["action"] == "tool_call"])
    assert reports[0]["itemName"] == "remote__echo" and reports[0]["success"] is True
    assert reports[0]["serverName"] == "Remote" and reports[0]["serverUuid"] == remote_record()["uuid"]
    assert any(a["action"] == "prompt_get" for a in app.activity)


async def test_nothing_is_reported_unless_asked(tmp_path: Path) -> None:
    async with running_fake_app([remote_record()]) as app:
        source = {"type": "pluggedin", "api_key": API_KEY, "base_url": app.base_url}
        path = write_config(tmp_path, json.dumps({"version": 1, "sources": [source]}))
        with anyio.fail_after(WAIT):
            async with gateway_stdio(path) as client:
                assert (await client.call_tool("remote__echo", {"text": "quiet"})).content[0].text == "quiet"  # type: ignore[union-attr]
    assert app.activity == []


@pytest.mark.parametrize(("key", "code", "line"), [(API_KEY, 0, "source pluggedin: ok: 1 server"),
                                                   ("pg_in_" + "f" * 64, 1, "source pluggedin: unauthorized: Invalid API key")])
async def test_validate_connect_fails_loudly_on_a_refused_key(tmp_path: Path, key: str, code: int, line: str) -> None:
    async with running_fake_app([remote_record()]) as app:
        source = {"type": "pluggedin", "api_key": "${PG_KEY}", "base_url": app.base_url}
        path = write_config(tmp_path, json.dumps({"version": 1, "sources": [source]}))
        env = {"PATH": os.environ.get("PATH", ""), "PG_KEY": key}
        with anyio.fail_after(WAIT):
            done = await anyio.to_thread.run_sync(lambda: subprocess.run(
                [MCPGW, "validate", "--connect", str(path)], capture_output=True, text=True, env=env, timeout=WAIT))
    assert done.returncode == code, done.stdout + done.stderr
    assert f"{path}: {line}" in done.stdout
    assert key not in done.stdout + done.stderr
