"""Everything crosses the gateway, both ways: what the upstream asks the client (sampling,
elicitation, roots), progress, logs, cancellation, resource updates and list changes.

The real ``mcpgw serve`` with fixture upstreams as its children, real SDK clients on both protocol
eras (``legacy``: the 2025-11-25 handshake; ``auto``: the 2026-07-28 wire), and upstreams spoken to
on either era (``protocol`` in the server's config). Waits on the upstream's own event log.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from gateway.forwarding import RESUME_GRACE
from gateway_harness import eventually, gateway_http, gateway_stdio, write_config
from mcp import Client
from mcp.shared.exceptions import MCPError
from raw_rpc import call, open_session
from upstreams import fixture_args, wait_for_event

pytestmark = pytest.mark.anyio
WAIT = 60
ERAS = ["auto", "2025-11-25"]  # how the gateway speaks to the upstream


def server(name: str, events: Path, protocol: str = "auto", **extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": fixture_args(name, "stdio", event_log=events),
            "protocol": protocol, **extra}


def config_file(tmp_path: Path, protocol: str = "auto", **extra: Any) -> tuple[Path, Path]:
    events = tmp_path / "events.log"
    body = {"version": 1, "servers": {"alpha": server("alpha", events, protocol, **extra)}}
    return write_config(tmp_path, json.dumps(body)), events


def text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


class ClientSide:
    """The callbacks of one client: what the upstream asked it, and what it was told."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.prompts: list[str] = []
        self.progress: list[float] = []
        self.logs: list[str] = []
        self.notifications: list[Any] = []

    async def sampling(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        prompt = params.messages[0].content.text  # type: ignore[union-attr]
        self.prompts.append(prompt)
        return types.CreateMessageResult(role="assistant", model="test",
                                         content=types.TextContent(type="text", text=f"{self.label} on {prompt}"))

    async def elicitation(self, context: Any, params: Any) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"answer": f"{self.label} says 42"})

    async def roots(self, context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=f"file:///{self.label}")])

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params.level)

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append(progress)

    async def messages(self, message: Any) -> None:
        self.notifications.append(message)

    def options(self) -> dict[str, Any]:
        return {"sampling_callback": self.sampling, "elicitation_callback": self.elicitation,
                "list_roots_callback": self.roots, "logging_callback": self.logging, "message_handler": self.messages}

    def received(self, kind: type) -> list[Any]:
        return [n for n in self.notifications if isinstance(n, kind)]


@pytest.mark.parametrize("client_mode", ["legacy", "auto"])
@pytest.mark.parametrize("upstream_era", ERAS)
async def test_sampling_elicitation_and_roots_reach_the_calling_client(
        tmp_path: Path, client_mode: str, upstream_era: str) -> None:
    path, _ = config_file(tmp_path, upstream_era)
    side = ClientSide("desk")
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path, mode=client_mode, **side.options()) as client:
            assert text(await client.call_tool("alpha__sample", {"prompt": "haiku"})) == "sampled: desk on haiku"
            assert text(await client.call_tool("alpha__ask", {"question": "meaning?"})) == "answer: desk says 42"
            assert text(await client.call_tool("alpha__roots", {})) == "file:///desk"
    assert side.prompts == ["haiku"]


@pytest.mark.parametrize(("client_mode", "upstream_era", "session"), [
    ("legacy", "auto", "shared"), ("auto", "auto", "shared"),  # questions come back in the answer to the call
    ("legacy", "2025-11-25", "per_client"), ("auto", "2025-11-25", "per_client"),  # a session per client
])
async def test_two_clients_at_once_each_get_only_their_own_requests_and_progress(
        tmp_path: Path, client_mode: str, upstream_era: str, session: str) -> None:
    path, _ = config_file(tmp_path, upstream_era, session=session)
    sides = [ClientSide("one"), ClientSide("two")]
    results: dict[str, list[str]] = {}
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw:

            async def work(side: ClientSide) -> None:
                async with Client(gw.url, mode=client_mode, **side.options()) as client:
                    outputs = []
                    for i in range(3):
                        outputs.append(text(await client.call_tool("alpha__sample", {"prompt": f"{side.label}-{i}"})))
                    outputs.append(text(await client.call_tool("alpha__slow_progress", {"steps": 4, "delay": 0.01},
                                                               progress_callback=side.on_progress)))
                    results[side.label] = outputs

            async with anyio.create_task_group() as tg:
                for side in sides:
                    tg.start_soon(work, side)
    for side in sides:
        expected = [f"{side.label}-{i}" for i in range(3)]
        assert side.prompts == expected, "each client is asked only its own questions"
        assert results[side.label][:3] == [f"sampled: {side.label} on {p}" for p in expected]
        assert side.progress == [1, 2, 3, 4], "each client gets the progress of its own call, in order"


async def test_a_shared_handshake_session_never_guesses_whose_question_it_is(tmp_path: Path) -> None:
    """Two clients' calls in flight on one handshake-era session: the upstream's question could be
    either's, so it is refused with an error that says how to fix it, and nobody is asked."""
    path, events = config_file(tmp_path, "2025-11-25")
    sides = [ClientSide("one"), ClientSide("two")]
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy", **sides[0].options()) as a, \
                Client(gw.url, mode="legacy", **sides[1].options()) as b:
            async with anyio.create_task_group() as tg:
                tg.start_soon(a.call_tool, "alpha__slow", {"seconds": 30})
                await wait_for_event(events, "STARTED slow")
                with pytest.raises(MCPError, match="set 'session: per_client'"):
                    await b.call_tool("alpha__sample", {"prompt": "whose?"})
                tg.cancel_scope.cancel()
    assert sides[0].prompts == sides[1].prompts == []


async def test_per_client_sessions_declare_each_clients_own_capabilities(tmp_path: Path) -> None:
    path, _ = config_file(tmp_path, "2025-11-25", session="per_client")
    side = ClientSide("full")
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy", **side.options()) as full, \
                Client(gw.url, mode="legacy") as bare:
            assert text(await full.call_tool("alpha__sample", {"prompt": "hi"})) == "sampled: full on hi"
            with pytest.raises(MCPError, match="did not declare the sampling capability"):
                await bare.call_tool("alpha__sample", {"prompt": "hi"})  # its own session never declared it
            assert text(await full.call_tool("alpha__pid", {})) != text(await bare.call_tool("alpha__pid", {}))


@pytest.mark.parametrize("upstream_era", ERAS)
async def test_progress_crosses_with_the_clients_own_token(tmp_path: Path, upstream_era: str) -> None:
    path, _ = config_file(tmp_path, upstream_era)
    side = ClientSide("p")
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path, mode="legacy") as client:
            result = await client.call_tool("alpha__progress", {"steps": 3}, progress_callback=side.on_progress)
    assert text(result) == "completed 3 steps"
    assert side.progress == [1, 2, 3]


@pytest.mark.parametrize("upstream_era", ERAS)
async def test_a_cancelled_call_stops_the_upstreams_work(tmp_path: Path, upstream_era: str) -> None:
    path, events = config_file(tmp_path, upstream_era)
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy") as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "alpha__slow", {"seconds": 30})
                await wait_for_event(events, "STARTED slow")
                tg.cancel_scope.cancel()  # the SDK client sends notifications/cancelled
            await wait_for_event(events, "CANCELLED slow")
            assert text(await client.call_tool("alpha__echo", {"text": "still here"})) == "still here"


async def test_a_client_that_disconnects_cancels_its_calls(tmp_path: Path) -> None:
    path, events = config_file(tmp_path)
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw:
            async with anyio.create_task_group() as tg:

                async def call_then_vanish() -> None:
                    async with Client(gw.url, mode="legacy") as client:
                        await client.call_tool("alpha__slow", {"seconds": 30})

                tg.start_soon(call_then_vanish)
                await wait_for_event(events, "STARTED slow")
                tg.cancel_scope.cancel()  # the client goes away mid-call, without ending its session
            # its stream could have merely dropped: the call waits for it to come back (RESUME_GRACE)
            await wait_for_event(events, "CANCELLED slow", timeout=RESUME_GRACE + 20)
            async with Client(gw.url) as other:
                assert text(await other.call_tool("alpha__echo", {"text": "others are served"})) == "others are served"


async def test_with_json_answers_a_client_that_disconnects_cancels_its_call_at_once(tmp_path: Path) -> None:
    """Answers as JSON (``json_response``, read at start): no stream to resume, so the call stops
    when its connection closes, even after a reload that says otherwise (it applies at restart)."""
    events = tmp_path / "events.log"

    def body(json_response: bool, prefix: str) -> str:
        return json.dumps({"version": 1, "gateway": {"http": {"json_response": json_response}},
                           "servers": {"alpha": {**server("alpha", events), "prefix": prefix}}})

    path = write_config(tmp_path, body(True, "alpha"))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient(timeout=30) as http:
            path.write_text(body(False, "beta"), encoding="utf-8")
            gw.process.send_signal(signal.SIGHUP)  # reload now, whether or not the watcher is armed yet
            await eventually(lambda: "configuration version 2 in service" in gw.stderr())
            session = await open_session(http, gw.url)
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: http.post(gw.url, headers=session, json=call("beta__slow", 5, seconds=30)))
                await wait_for_event(events, "STARTED slow")
                tg.cancel_scope.cancel()  # the connection closes mid-call
            await wait_for_event(events, "CANCELLED slow", timeout=RESUME_GRACE - 2)  # no grace: nothing resumes


@pytest.mark.parametrize("upstream_era", ERAS)
async def test_logs_reach_each_client_at_the_level_it_set(tmp_path: Path, upstream_era: str) -> None:
    path, _ = config_file(tmp_path, upstream_era)
    quiet, chatty = ClientSide("quiet"), ClientSide("chatty")
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy", **quiet.options()) as a, \
                Client(gw.url, mode="legacy", **chatty.options()) as b:
            await a.set_logging_level("warning")
            await b.set_logging_level("debug")
            assert text(await a.call_tool("alpha__log_levels", {})) == "logged"
            assert text(await b.call_tool("alpha__log_levels", {})) == "logged"
    assert quiet.logs == ["warning", "error"]
    assert chatty.logs == ["debug", "info", "warning", "error"]


async def test_a_2026_client_gets_the_logs_it_opts_into(tmp_path: Path) -> None:
    path, _ = config_file(tmp_path)
    side = ClientSide("modern")
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path, mode="auto", log_level="info", **side.options()) as client:
            assert text(await client.call_tool("alpha__log_levels", {})) == "logged"
    assert side.logs == ["info", "warning", "error"]


async def test_resource_updates_reach_the_subscribed_clients_only(tmp_path: Path) -> None:
    path, events = config_file(tmp_path, "2025-11-25")
    uri = "fixture://alpha/readme"
    subscribed, unsubscribed = ClientSide("sub"), ClientSide("unsub")
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy", **subscribed.options()) as a, \
                Client(gw.url, mode="legacy", **unsubscribed.options()) as b:
            await a.subscribe_resource(uri)
            await b.subscribe_resource(uri)
            await b.unsubscribe_resource(uri)
            await a.call_tool("alpha__touch", {"uri": uri})
            await eventually(lambda: subscribed.received(types.ResourceUpdatedNotification))
            await b.send_ping()  # a round trip on b after the update went out to a
            assert not unsubscribed.received(types.ResourceUpdatedNotification)
            await a.unsubscribe_resource(uri)
            await wait_for_event(events, f"UNSUBSCRIBE {uri}")
    lines = events.read_text().splitlines()
    assert lines.count(f"SUBSCRIBE {uri}") == 1, "two subscribers, one upstream subscription"
    assert lines.count(f"UNSUBSCRIBE {uri}") == 1, "unsubscribed upstream after the last subscriber left"
    (update,) = subscribed.received(types.ResourceUpdatedNotification)
    assert str(update.params.uri) == uri


async def test_a_list_change_arrives_once_per_real_change(tmp_path: Path) -> None:
    path, _ = config_file(tmp_path, "2025-11-25")
    side = ClientSide("watcher")
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path, mode="legacy", **side.options()) as client:

            async def tools() -> set[str]:
                return {t.name for t in (await client.list_tools()).tools}

            await client.call_tool("alpha__add_tool", {"name": "extra"})
            await eventually(lambda: len(side.received(types.ToolListChangedNotification)) == 1)
            assert "alpha__extra" in await tools()
            assert text(await client.call_tool("alpha__extra", {})) == "dynamic extra"
            await client.call_tool("alpha__noop_list_changed", {})  # the list did not really change
            await client.call_tool("alpha__remove_tool", {"name": "extra"})
            await eventually(lambda: len(side.received(types.ToolListChangedNotification)) >= 2)
            assert "alpha__extra" not in await tools()
    assert len(side.received(types.ToolListChangedNotification)) == 2


async def test_ping_crosses_in_both_eras(tmp_path: Path) -> None:
    path, _ = config_file(tmp_path)
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path, mode="legacy") as client:
            await client.send_ping()


async def test_resource_updates_from_a_2026_upstream_reach_the_subscribed_clients_only(tmp_path: Path) -> None:
    """A 2026-07-28 upstream has no resources/subscribe: the gateway listens for the subscribed URIs."""
    path, _ = config_file(tmp_path, "auto")
    uri = "fixture://alpha/readme"
    subscribed, other = ClientSide("sub"), ClientSide("other")
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy", **subscribed.options()) as a, \
                Client(gw.url, mode="legacy", **other.options()) as b:
            await a.subscribe_resource(uri)
            await b.call_tool("alpha__touch", {"uri": uri})
            await eventually(lambda: subscribed.received(types.ResourceUpdatedNotification))
            await b.send_ping()
            assert not other.received(types.ResourceUpdatedNotification)


async def test_a_list_change_of_a_2026_upstream_reaches_clients_of_both_eras(tmp_path: Path) -> None:
    path, _ = config_file(tmp_path, "auto")
    handshake = ClientSide("handshake")
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy", **handshake.options()) as old, \
                Client(gw.url) as modern:
            assert "alpha__extra" not in {t.name for t in (await modern.list_tools()).tools}
            async with modern.listen(tools_list_changed=True) as changes:
                await old.call_tool("alpha__add_tool", {"name": "extra"})
                async for _ in changes:
                    break
            assert "alpha__extra" in {t.name for t in (await modern.list_tools()).tools}
            await eventually(lambda: handshake.received(types.ToolListChangedNotification))


async def test_a_clients_roots_change_reaches_the_upstreams(tmp_path: Path) -> None:
    """Handshake-era upstreams only: a 2026 upstream asks for roots in each request that needs them."""
    path, events = config_file(tmp_path, "2025-11-25")
    side = ClientSide("rooted")
    with anyio.fail_after(WAIT):
        async with gateway_stdio(path, mode="legacy", **side.options()) as client:
            await client.send_roots_list_changed()
            await wait_for_event(events, "ROOTS_CHANGED")
