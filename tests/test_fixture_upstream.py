"""The fixture upstream (tests/fixtures/upstream.py), driven by the SDK ``Client`` directly.

These tests pin the fixture's behaviour over stdio, Streamable HTTP and legacy SSE, in both protocol
eras (``auto`` negotiates 2026-07-28 with a Python v2 server; ``legacy`` forces the 2025-11-25
handshake), so the gateway's end-to-end tests can rely on it.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp.client.session import ClientRequestContext
from mcp.client.subscriptions import ResourceUpdated, ToolsListChanged
from mcp_types import (
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitRequestParams,
    ElicitResult,
    InputRequiredResult,
    ListRootsRequest,
    ListRootsResult,
    LoggingMessageNotificationParams,
    PromptReference,
    ResourceTemplateReference,
    ResourceUpdatedNotification,
    Root,
    TextContent,
    ToolListChangedNotification,
)
from upstreams import (
    FIXTURE,
    RunningUpstream,
    client_target,
    http_upstream,
    running_upstream,
    stdio_params,
    wait_for_event,
)

TIMEOUT = 15  # seconds for a whole test: spawn, connect, requests, shutdown
TRANSPORTS = ["stdio", "http", "sse"]
BASIC_TOOLS = {
    "whoami",
    "echo",
    "add",
    "slow",
    "fail",
    "crash",
    "progress",
    "log",
    "annotated",
    "sample",
    "ask",
    "roots",
    "touch",
    "add_tool",
    "remove_tool",
    "noop_list_changed",
    "slow_progress",
    "log_levels",
}
TRICKY_TOOLS = {
    "search.issues",
    "user@host",
    "path/to/tool",
    "a_b",
    "a.b",
    "a_seventy_character_tool_name_for_testing_gateway_name_length_limits_x",
}
PROTOCOL = {"auto": "2026-07-28", "legacy": "2025-11-25"}


@asynccontextmanager
async def connect(
    transport: str,
    name: str,
    *,
    tool_set: str = "basic",
    many: int = 0,
    event_log: Path | None = None,
    **client_kwargs: Any,
) -> AsyncIterator[Client]:
    """A connected ``Client`` to a fresh fixture process; the process is gone when this exits."""
    if transport == "stdio":
        async with Client(stdio_params(name, tool_set, many, event_log), **client_kwargs) as client:
            yield client
        return
    upstream: RunningUpstream | None = None
    try:
        async with (
            running_upstream(name, transport, tool_set, many, event_log) as upstream,
            Client(client_target(upstream.url, transport), **client_kwargs) as client,
        ):
            yield client
    finally:
        if upstream is not None:
            assert upstream.process.returncode is not None, "the fixture process outlived its context"


def text_of(result: Any) -> str:
    assert result.content, result
    return result.content[0].text


def test_fixture_path_exists() -> None:
    assert FIXTURE.is_file()
    assert (FIXTURE.parent / "__init__.py").is_file()


@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")  # logging/setLevel on legacy sessions
@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_fixture_surface(transport: str, mode: str, tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    logs: list[LoggingMessageNotificationParams] = []
    log_arrived = anyio.Event()

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append(params)
        log_arrived.set()

    with anyio.fail_after(TIMEOUT):
        async with connect(
            transport,
            "alpha",
            tool_set="tricky",
            event_log=events,
            mode=mode,
            log_level="info",  # the 2026-07-28 per-request opt-in to notifications/message
            logging_callback=on_log,
        ) as client:
            assert client.protocol_version == PROTOCOL[mode]
            assert client.server_info is not None and client.server_info.name == "alpha"
            assert text_of(await client.call_tool("whoami")) == "alpha"

            # --- tools and their metadata
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert BASIC_TOOLS | TRICKY_TOOLS <= set(tools)
            annotated = tools["annotated"]
            assert annotated.title == "Annotated Tool"
            assert annotated.annotations is not None
            assert annotated.annotations.read_only_hint is True
            assert annotated.annotations.idempotent_hint is True
            assert annotated.output_schema is not None
            assert set(annotated.output_schema["properties"]) == {"server", "value", "doubled"}
            assert annotated.meta == {"fixture/kind": "annotated"}
            assert annotated.icons and annotated.icons[0].src.startswith("data:image/png;base64,")
            assert tools["echo"].output_schema is None  # only `annotated` publishes an output schema

            result = await client.call_tool("annotated", {"value": 21})
            assert not result.is_error
            assert result.structured_content == {"server": "alpha", "value": 21, "doubled": 42}
            assert text_of(await client.call_tool("echo", {"text": "héllo"})) == "héllo"
            assert float(text_of(await client.call_tool("add", {"a": 1.5, "b": 2}))) == 3.5

            failed = await client.call_tool("fail", {"message": "it broke"})
            assert failed.is_error is True
            assert text_of(failed) == "it broke"

            for tricky in sorted(TRICKY_TOOLS):
                assert text_of(await client.call_tool(tricky)) == f"tool={tricky} server=alpha"

            # --- progress: one notification per step, in order
            progress: list[tuple[float, float | None, str | None]] = []
            all_progress = anyio.Event()

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append((value, total, message))
                if len(progress) == 4:
                    all_progress.set()

            done = await client.call_tool("progress", {"steps": 4}, progress_callback=on_progress)
            assert text_of(done) == "completed 4 steps"
            await all_progress.wait()
            assert [(p, t) for p, t, _ in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]

            # --- logging: one notifications/message at info
            assert text_of(await client.call_tool("log", {"message": "hello log"})) == "logged"
            await log_arrived.wait()
            assert [(entry.level, entry.data, entry.logger) for entry in logs] == [
                ("info", "hello log", "fixture.alpha")
            ]
            if mode == "legacy":  # logging/setLevel exists only on handshake-era sessions
                assert client.server_capabilities.logging is not None
                await client.set_logging_level("warning")
                await wait_for_event(events, "SETLEVEL warning")
                await client.call_tool("log", {"message": "below the level"})
                await client.set_logging_level("info")
                log_arrived = anyio.Event()
                await client.call_tool("log", {"message": "at the level"})
                await log_arrived.wait()
                assert [entry.data for entry in logs] == ["hello log", "at the level"]

            # --- cancellation reaches the running tool
            async with anyio.create_task_group() as tg:

                async def call_slow() -> None:
                    await client.call_tool("slow", {"seconds": 60})

                tg.start_soon(call_slow)
                await wait_for_event(events, "STARTED slow")
                tg.cancel_scope.cancel()
            await wait_for_event(events, "CANCELLED slow")
            assert text_of(await client.call_tool("slow", {"seconds": 0})) == "done"

            # --- prompts and completion
            prompts = {prompt.name: prompt for prompt in (await client.list_prompts()).prompts}
            assert {"greet", "summarize"} <= set(prompts)
            assert [arg.name for arg in prompts["summarize"].arguments or []] == ["topic", "style"]
            greeting = await client.get_prompt("greet", {"name": "Ada"})
            assert "Ada" in greeting.messages[0].content.text
            summary = await client.get_prompt("summarize", {"topic": "MCP", "style": "brief"})
            assert "MCP" in summary.messages[0].content.text and "brief" in summary.messages[0].content.text

            styles = await client.complete(PromptReference(name="summarize"), {"name": "style", "value": "b"})
            assert styles.completion.values == ["brief", "bullet"]
            styles = await client.complete(PromptReference(name="summarize"), {"name": "style", "value": ""})
            assert styles.completion.values == ["brief", "bullet", "detailed"]
            ids = await client.complete(
                ResourceTemplateReference(uri="fixture://alpha/items/{id}"), {"name": "id", "value": "1"}
            )
            assert ids.completion.values == ["1", "10", "100"]

            # --- resources
            resources = {str(r.uri): r for r in (await client.list_resources()).resources}
            assert {"fixture://alpha/readme", "fixture://alpha/binary"} <= set(resources)
            templates = (await client.list_resource_templates()).resource_templates
            assert [t.uri_template for t in templates] == ["fixture://alpha/items/{id}"]

            readme = (await client.read_resource("fixture://alpha/readme")).contents[0]
            assert readme.mime_type == "text/plain" and "alpha" in readme.text
            blob = (await client.read_resource("fixture://alpha/binary")).contents[0]
            assert base64.b64decode(blob.blob).startswith(b"\x89PNG\r\n\x1a\n")
            item = (await client.read_resource("fixture://alpha/items/42")).contents[0]
            assert str(item.uri) == "fixture://alpha/items/42"
            assert "42" in item.text and "alpha" in item.text


async def _crash_then_call(client: Client) -> None:
    """Call `crash`; the call must fail, and so must the next one (the connection is gone)."""
    assert text_of(await client.call_tool("whoami")) == "crashy"
    try:
        result = await client.call_tool("crash")
    except MCPError:  # stdio/SSE: "Connection closed"; legacy HTTP: "SSE stream ended without a response"
        pass
    # Streamable HTTP (2026-07-28): the transport's reader dies with httpx2.RemoteProtocolError, the
    # pending call is cancelled and Client's exit raises an ExceptionGroup (caught by the caller).
    else:
        pytest.fail(f"crash returned a result: {result}")
    await client.call_tool("whoami")
    pytest.fail("a call after the crash succeeded")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_crash_exits_mid_call(transport: str, mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        if transport == "stdio":
            with pytest.raises(Exception):  # noqa: B017 - MCPError or the transport's ExceptionGroup
                async with Client(stdio_params("crashy"), mode=mode) as client:
                    await _crash_then_call(client)
            return
        async with running_upstream("crashy", transport) as upstream:
            with pytest.raises(Exception):  # noqa: B017
                async with Client(client_target(upstream.url, transport), mode=mode) as client:
                    await _crash_then_call(client)
            assert await upstream.process.wait() == 3
            assert "CANCELLED" not in upstream.stderr()


@pytest.mark.anyio
async def test_many_tools_and_no_tricky_names() -> None:
    with anyio.fail_after(TIMEOUT):
        async with Client(stdio_params("bulk", tool_set="many", many=300)) as client:
            listing = await client.list_tools()
            names = [tool.name for tool in listing.tools]
            assert listing.next_cursor is None  # MCPServer does not paginate
            assert [n for n in names if n.startswith("t0")] == [f"t{i:04d}" for i in range(300)]
            assert BASIC_TOOLS <= set(names)
            assert not TRICKY_TOOLS & set(names)
            assert text_of(await client.call_tool("t0299", {"text": "x"})) == "t0299:x"


@pytest.mark.anyio
async def test_http_upstream_yields_a_plain_url_and_reaps_the_process() -> None:
    with anyio.fail_after(TIMEOUT):
        async with http_upstream("plain", "sse") as url:
            assert type(url) is str and url.startswith("http://127.0.0.1:") and url.endswith("/sse")
            async with Client(client_target(url, "sse")) as client:
                assert text_of(await client.call_tool("whoami")) == "plain"


# ------------------------------------------------------------------ server-to-client requests, notifications


class Collected:
    """What a callback received, with a bounded wait (under the caller's fail_after) for a condition."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = anyio.Event()

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, predicate: Callable[[list[Any]], bool]) -> list[Any]:
        while not predicate(self.items):
            await self._changed.wait()
        return self.items


class FakeClientSide:
    """The client's LLM, user and roots: records every request, answers from a script."""

    def __init__(self) -> None:
        self.sampled: list[CreateMessageRequestParams] = []
        self.elicited: list[ElicitRequestParams] = []
        self.rooted = 0
        self.elicit_actions = ["accept"]  # consumed front to back; the last one repeats
        self.roots = [Root(uri="file:///work/a"), Root(uri="file:///work/b")]

    async def sampling(self, context: ClientRequestContext, params: CreateMessageRequestParams) -> CreateMessageResult:
        self.sampled.append(params)
        prompt = params.messages[0].content.text
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=f"reply to {prompt}"), model="fake-llm"
        )

    async def elicitation(self, context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        self.elicited.append(params)
        action = self.elicit_actions.pop(0) if len(self.elicit_actions) > 1 else self.elicit_actions[0]
        if action == "accept":
            return ElicitResult(action="accept", content={"answer": f"yes to {params.message}"})
        return ElicitResult(action=action)

    async def list_roots(self, context: ClientRequestContext) -> ListRootsResult:
        self.rooted += 1
        return ListRootsResult(roots=self.roots)

    def callbacks(self) -> dict[str, Any]:
        return {
            "sampling_callback": self.sampling,
            "elicitation_callback": self.elicitation,
            "list_roots_callback": self.list_roots,
        }

    def root_uris(self) -> str:
        return ",".join(str(root.uri) for root in self.roots)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_sample_ask_and_roots_reach_the_client(transport: str, mode: str) -> None:
    side = FakeClientSide()
    with anyio.fail_after(TIMEOUT):
        async with connect(transport, "alpha", mode=mode, **side.callbacks()) as client:
            assert client.protocol_version == PROTOCOL[mode]

            # --- sampling: one user message, max_tokens 50
            sampled = await client.call_tool("sample", {"prompt": "hello model"})
            assert text_of(sampled) == "sampled: reply to hello model"
            [params] = side.sampled
            assert params.max_tokens == 50
            assert [(m.role, m.content.type, m.content.text) for m in params.messages] == [
                ("user", "text", "hello model")
            ]

            # --- form elicitation of {"answer": str}: accept, decline, cancel
            side.elicit_actions = ["accept", "decline", "cancel"]
            assert text_of(await client.call_tool("ask", {"question": "ok?"})) == "answer: yes to ok?"
            assert text_of(await client.call_tool("ask", {"question": "ok?"})) == "declined"
            assert text_of(await client.call_tool("ask", {"question": "ok?"})) == "cancelled"
            assert len(side.elicited) == 3
            form = side.elicited[0]
            assert isinstance(form, ElicitRequestFormParams) and form.message == "ok?"
            assert form.requested_schema["properties"]["answer"]["type"] == "string"
            assert form.requested_schema["required"] == ["answer"]

            # --- roots
            assert text_of(await client.call_tool("roots")) == "file:///work/a,file:///work/b"
            side.roots = []
            assert text_of(await client.call_tool("roots")) == "no roots"
            assert side.rooted == 2


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_server_to_client_requests_follow_the_protocol_era(mode: str) -> None:
    """2026-07-28: the first round is an InputRequiredResult carrying the requests (no callback runs);
    2025-11-25: the requests reach the callbacks while the one tools/call is in flight."""
    side = FakeClientSide()
    with anyio.fail_after(TIMEOUT):
        async with Client(stdio_params("alpha"), mode=mode, **side.callbacks()) as client:
            calls = [("sample", {"prompt": "p"}), ("ask", {"question": "q"}), ("roots", {})]
            results = [await client.session.call_tool(n, a, allow_input_required=True) for n, a in calls]
            if mode == "legacy":
                assert [text_of(r) for r in results] == ["sampled: reply to p", "answer: yes to q", side.root_uris()]
                assert (len(side.sampled), len(side.elicited), side.rooted) == (1, 1, 1)
                return
            assert (len(side.sampled), len(side.elicited), side.rooted) == (0, 0, 0)
            kinds = []
            for result in results:
                assert isinstance(result, InputRequiredResult) and result.request_state
                [request] = (result.input_requests or {}).values()
                kinds.append(type(request))
            assert kinds == [CreateMessageRequest, ElicitRequest, ListRootsRequest]
            sample_request = next(iter(results[0].input_requests.values()))
            assert sample_request.params.max_tokens == 50



@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_server_to_client_tools_need_the_client_capability(mode: str) -> None:
    """A client that declares no sampling/elicitation/roots capability gets an error, never a hang."""
    with anyio.fail_after(TIMEOUT):
        async with Client(stdio_params("alpha"), mode=mode) as client:
            for name, args in [("sample", {"prompt": "p"}), ("ask", {"question": "q"}), ("roots", {})]:
                with pytest.raises(MCPError) as caught:
                    await client.call_tool(name, args)
                assert caught.value.error.code == -32021, caught.value.error  # missing required client capability
            assert text_of(await client.call_tool("whoami")) == "alpha"  # the connection is still fine


@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")  # resources/subscribe is handshake-era only
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_change_notifications_reach_handshake_era_sessions(transport: str, tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    received = Collected()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification | ToolListChangedNotification):
            received.add(message)

    def list_changed_count(items: list[Any]) -> int:
        return sum(isinstance(m, ToolListChangedNotification) for m in items)

    with anyio.fail_after(TIMEOUT):
        async with connect(transport, "alpha", event_log=events, mode="legacy", message_handler=on_message) as client:
            capabilities = client.server_capabilities
            assert capabilities.resources is not None and capabilities.resources.subscribe is True

            # --- subscribe / touch / unsubscribe
            assert (await client.subscribe_resource("fixture://alpha/readme")).model_dump(exclude_none=True) == {}
            await wait_for_event(events, "SUBSCRIBE fixture://alpha/readme")
            assert text_of(await client.call_tool("touch", {"uri": "fixture://alpha/readme"})) == "touched"
            await wait_for_event(events, "TOUCHED fixture://alpha/readme")
            [updated] = await received.until(lambda items: len(items) >= 1)
            assert isinstance(updated, ResourceUpdatedNotification)
            assert str(updated.params.uri) == "fixture://alpha/readme"
            await client.unsubscribe_resource("fixture://alpha/readme")
            await wait_for_event(events, "UNSUBSCRIBE fixture://alpha/readme")

            # --- add_tool / noop_list_changed / remove_tool: one tools/list_changed each
            assert "dyn" not in {t.name for t in (await client.list_tools()).tools}
            assert text_of(await client.call_tool("add_tool", {"name": "dyn"})) == "added"
            await received.until(lambda items: list_changed_count(items) >= 1)
            assert "dyn" in {t.name for t in (await client.list_tools()).tools}
            assert text_of(await client.call_tool("dyn")) == "dynamic dyn"

            before = [t.name for t in (await client.list_tools()).tools]
            assert text_of(await client.call_tool("noop_list_changed")) == "notified"
            await received.until(lambda items: list_changed_count(items) >= 2)
            assert [t.name for t in (await client.list_tools()).tools] == before

            assert text_of(await client.call_tool("remove_tool", {"name": "dyn"})) == "removed"
            await received.until(lambda items: list_changed_count(items) >= 3)
            assert "dyn" not in {t.name for t in (await client.list_tools()).tools}
            assert (await client.call_tool("dyn")).is_error is True
            assert (await client.call_tool("remove_tool", {"name": "dyn"})).is_error is True  # unknown: no crash
            assert list_changed_count(received.items) == 3


@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_change_tools_work_on_2026_connections(transport: str, tmp_path: Path) -> None:
    """No standing channel at 2026-07-28: the tools still work, resources/subscribe is gone, and the
    changes reach a subscriptions/listen stream."""
    events = tmp_path / "events.log"
    with anyio.fail_after(TIMEOUT):
        async with connect(transport, "alpha", event_log=events) as client:
            assert client.protocol_version == "2026-07-28"
            with pytest.raises(MCPError) as caught:
                await client.subscribe_resource("fixture://alpha/readme")
            assert caught.value.error.code == -32601

            async with client.listen(tools_list_changed=True, resource_subscriptions=["fixture://alpha/readme"]) as sub:
                assert text_of(await client.call_tool("touch", {"uri": "fixture://alpha/readme"})) == "touched"
                assert await anext(sub) == ResourceUpdated(uri="fixture://alpha/readme")
                assert text_of(await client.call_tool("add_tool", {"name": "dyn"})) == "added"
                assert await anext(sub) == ToolsListChanged()
                assert text_of(await client.call_tool("dyn")) == "dynamic dyn"
                assert text_of(await client.call_tool("noop_list_changed")) == "notified"
                assert await anext(sub) == ToolsListChanged()
                assert text_of(await client.call_tool("remove_tool", {"name": "dyn"})) == "removed"
                assert await anext(sub) == ToolsListChanged()
            await wait_for_event(events, "TOUCHED fixture://alpha/readme")
            assert text_of(await client.call_tool("whoami")) == "alpha"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_slow_progress_reports_and_can_be_cancelled(mode: str, tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    progress = Collected()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.add((value, total))

    with anyio.fail_after(TIMEOUT):
        async with Client(stdio_params("alpha", event_log=events), mode=mode) as client:
            done = await client.call_tool("slow_progress", {"steps": 3, "delay": 0.01}, progress_callback=on_progress)
            assert text_of(done) == "completed 3 steps"
            assert await progress.until(lambda items: len(items) >= 3) == [(1, 3), (2, 3), (3, 3)]
            await wait_for_event(events, "STARTED slow_progress")

            progress = Collected()
            async with anyio.create_task_group() as tg:

                async def call_slow() -> None:
                    await client.call_tool("slow_progress", {"steps": 5, "delay": 60}, progress_callback=on_progress)

                tg.start_soon(call_slow)
                assert await progress.until(lambda items: len(items) >= 1) == [(1, 5)]
                tg.cancel_scope.cancel()
            await wait_for_event(events, "CANCELLED slow_progress")
            assert text_of(await client.call_tool("whoami")) == "alpha"


@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")  # logging/setLevel
async def test_log_levels_respect_set_level_on_handshake_sessions(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    logs = Collected()

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.add((params.level, params.data, params.logger))

    with anyio.fail_after(TIMEOUT):
        async with Client(stdio_params("alpha", event_log=events), mode="legacy", logging_callback=on_log) as client:
            assert text_of(await client.call_tool("log_levels")) == "logged"
            # Sent in order on one stream: once "error" is in, everything before it is too.
            assert await logs.until(lambda items: len(items) >= 4) == [
                (level, level, "fixture.alpha") for level in ("debug", "info", "warning", "error")
            ]
            await client.set_logging_level("warning")
            await wait_for_event(events, "SETLEVEL warning")
            assert text_of(await client.call_tool("log_levels")) == "logged"
            await logs.until(lambda items: len(items) >= 6)
            assert [level for level, _, _ in logs.items[4:]] == ["warning", "error"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("opt_in", "expected"), [("debug", ["debug", "info", "warning", "error"]), ("warning", ["warning", "error"])]
)
async def test_log_levels_follow_the_2026_request_opt_in(opt_in: str, expected: list[str]) -> None:
    logs = Collected()

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.add((params.level, params.data, params.logger))

    with anyio.fail_after(TIMEOUT):
        async with Client(stdio_params("alpha"), log_level=opt_in, logging_callback=on_log) as client:
            assert client.protocol_version == "2026-07-28"
            assert text_of(await client.call_tool("log_levels")) == "logged"
            await logs.until(lambda items: len(items) >= len(expected))
            assert logs.items == [(level, level, "fixture.alpha") for level in expected]
