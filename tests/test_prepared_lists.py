"""List answers come from the routing table in wire form (``gateway.prepared``): they must be exactly
what the SDK would have made of the table's results, for every protocol version, and belong to one
table (a new table answers with its own lists, never the last one's).

The gateway's server and a plain SDK server returning the same models are driven in-process over
the stdio contract (memory streams of ``SessionMessage``); their answers are compared as the JSON
the stdio front would write.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from textwrap import dedent
from types import MappingProxyType
from typing import Any

import anyio
import mcp_types as types
import pytest
from gateway_harness import gateway_http, write_config
from mcp import Client
from mcp.server.lowlevel import Server
from mcp.shared.message import SessionMessage
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from upstreams import fixture_args

from gateway import __version__
from gateway.config.loader import load_text
from gateway import tracing
from gateway.proxy import build_server
from gateway.routing import Catalog, RoutingTable, build_routing_table
from gateway.runtime import ROOT, Gateway, Snapshot

pytestmark = pytest.mark.anyio
WAIT = 20
VERSIONS = (*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS)
LISTS = ("tools/list", "prompts/list", "resources/list", "resources/templates/list")

CONFIG = """
    version: 1
    gateway: {name: acme}
    servers:
      alpha: {url: "http://127.0.0.1:9/mcp"}
      beta: {url: "http://127.0.0.1:9/mcp", prefix: b, tools: {deny: [hidden]}}
"""
ICON = types.Icon(src="https://example.com/i.png", mime_type="image/png", sizes=["16x16"])


def rich_catalog(tag: str) -> Catalog:
    """Every optional field the list items have, some of them unknown to older protocol versions
    (titles, icons, output schemas, ``_meta``): the per-version shaping must drop exactly those."""
    return Catalog(
        tools=(
            types.Tool(name="search", title=f"Search {tag}", description="Finds.", icons=[ICON],
                       input_schema={"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
                       output_schema={"type": "object", "properties": {"hits": {"type": "integer"}}},
                       annotations=types.ToolAnnotations(read_only_hint=True, title="S"), meta={"x.example/k": 1}),
            types.Tool(name="plain", input_schema={"type": "object"}),
            types.Tool(name="hidden", input_schema={"type": "object"}),
        ),
        prompts=(types.Prompt(name="greet", title="Greet", description="Says hi.", icons=[ICON],
                              arguments=[types.PromptArgument(name="who", description="Whom", required=True)]),),
        resources=(types.Resource(uri=f"file:///{tag}/readme", name="readme", title="Read me", mime_type="text/plain",
                                  size=12, icons=[ICON], annotations=types.Annotations(priority=0.5)),),
        resource_templates=(types.ResourceTemplate(uri_template=f"file:///{tag}/{{path}}", name="files",
                                                   title="Files", mime_type="text/plain"),),
    )


def table_for(catalogs: dict[str, Catalog]) -> tuple[Any, RoutingTable]:
    loaded = load_text(dedent(CONFIG), "t.yaml", {}, Path("."))
    assert loaded.config is not None, loaded.problems
    config = loaded.config
    return config, build_routing_table(list(config.servers.values()), config.gateway.naming, catalogs)


def gateway_serving(config: Any, table: RoutingTable) -> Gateway:
    gateway = Gateway(config)
    gateway.current = Snapshot(1, "test", config, MappingProxyType({}), MappingProxyType({ROOT: table}))
    return gateway


def sdk_server(table: RoutingTable) -> Server[Any]:
    """What answering with the models would give: the SDK shapes them itself, per request."""

    def answer(result: Any) -> Any:
        async def handler(ctx: Any, params: Any) -> Any:
            return result
        return handler

    return Server("acme", version=__version__, on_list_tools=answer(table.list_tools),
                  on_list_prompts=answer(table.list_prompts), on_list_resources=answer(table.list_resources),
                  on_list_resource_templates=answer(table.list_resource_templates))


def requests(version: str) -> list[dict[str, Any]]:
    """Every list request (and one with a cursor: the gateway does not paginate, the whole list
    comes back), in the era of ``version``: after the handshake, or each with its envelope."""
    modern = version in MODERN_PROTOCOL_VERSIONS
    meta = {PROTOCOL_VERSION_META_KEY: version, CLIENT_INFO_META_KEY: {"name": "t", "version": "1"},
            CLIENT_CAPABILITIES_META_KEY: {}} if modern else None
    calls = [(method, {}) for method in LISTS] + [("tools/list", {"cursor": "anything"})]
    listed = [{"jsonrpc": "2.0", "id": 10 + i, "method": method,
               "params": {**params, **({"_meta": meta} if meta else {})}} for i, (method, params) in enumerate(calls)]
    if modern:
        return listed
    return [{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"}, *listed]


async def exchange(server: Server[Any], messages: list[dict[str, Any]]) -> dict[Any, Any]:
    """Send ``messages`` one at a time; the answers by id, as the JSON the stdio front writes (but
    the handshake's: the two servers differ in capabilities)."""
    read_send, read_receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_send, write_receive = anyio.create_memory_object_stream[SessionMessage](0)
    answers: dict[Any, Any] = {}
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.run, read_receive, write_send, server.create_initialization_options())
            async with read_send, write_receive:
                for message in messages:
                    await read_send.send(SessionMessage(types.jsonrpc_message_adapter.validate_python(message)))
                    if "id" in message:
                        answer = (await write_receive.receive()).message
                        answers[message["id"]] = answer.model_dump(mode="json", by_alias=True, exclude_unset=True)
    answers.pop(1, None)
    return answers


@pytest.mark.parametrize("version", VERSIONS)
async def test_list_answers_are_the_sdks_own_shaping_of_the_table(version: str) -> None:
    config, table = table_for({"alpha": rich_catalog("a"), "beta": rich_catalog("b")})
    gateway = gateway_serving(config, table)
    prepared = await exchange(build_server(gateway), requests(version))
    expected = await exchange(sdk_server(table), requests(version))
    assert prepared == expected
    tools = prepared[10]["result"]["tools"]
    assert [t["name"] for t in tools] == ["alpha__search", "alpha__plain", "alpha__hidden", "b__search", "b__plain"]
    assert prepared[14] == {**prepared[10], "id": 14}  # a cursor changes nothing: one page
    if version in MODERN_PROTOCOL_VERSIONS:
        assert prepared[10]["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "acme"
    # the second time round comes from what the table kept, and is still the same
    assert await exchange(build_server(gateway), requests(version)) == expected


async def test_a_list_before_the_handshake_is_refused_as_the_sdk_refuses_it() -> None:
    config, table = table_for({"alpha": rich_catalog("a")})
    early = [{"jsonrpc": "2.0", "id": 5, "method": "tools/list"}]
    assert await exchange(build_server(gateway_serving(config, table)), early) == await exchange(sdk_server(table), early)


async def test_a_new_table_answers_with_its_own_lists() -> None:
    """A reload or an upstream's new list makes a new table: the prepared answers go with it."""
    config, before = table_for({"alpha": rich_catalog("a")})
    _, after = table_for({"alpha": rich_catalog("a"), "beta": rich_catalog("b")})
    gateway = gateway_serving(config, before)
    server = build_server(gateway)
    for version in ("2025-11-25", *MODERN_PROTOCOL_VERSIONS):
        first = await exchange(server, requests(version))
        assert [t["name"] for t in first[10]["result"]["tools"]] == ["alpha__search", "alpha__plain", "alpha__hidden"]
    gateway.current = Snapshot(2, "test", config, MappingProxyType({}), MappingProxyType({ROOT: after}))
    for version in ("2025-11-25", *MODERN_PROTOCOL_VERSIONS):
        assert await exchange(server, requests(version)) == await exchange(sdk_server(after), requests(version))


async def test_after_a_hot_reload_both_eras_list_the_new_tools(tmp_path: Path) -> None:
    """End to end: both eras list (so each has its answer prepared in the old table), the file
    changes the prefix and filters, and both then list the new names, never the old answer."""
    def config(**alpha: Any) -> str:
        return json.dumps({"version": 1, "gateway": {"drain_timeout": "5s"},
                           "servers": {"alpha": {"command": sys.executable, "args": fixture_args("alpha"), **alpha}}})

    path = write_config(tmp_path, config())
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            changed.set()

    with anyio.fail_after(60):
        async with gateway_http(path) as gw, Client(gw.url, mode="legacy", message_handler=on_message) as legacy, \
                Client(gw.url) as modern:
            assert modern.protocol_version in MODERN_PROTOCOL_VERSIONS
            for client in (legacy, modern):
                names = {t.name for t in (await client.list_tools()).tools}
                assert "alpha__pid" in names and "alpha__crash" in names
            replace = path.with_name(path.name + ".tmp")
            replace.write_text(config(prefix="a", tools={"deny": ["crash"]}), encoding="utf-8")
            os.replace(replace, path)
            await changed.wait()
            for client in (legacy, modern):
                names = {t.name for t in (await client.list_tools()).tools}
                assert "a__pid" in names and "a__crash" not in names and not any(n.startswith("alpha__") for n in names)


def test_the_sdks_span_per_message_is_kept_only_when_spans_go_somewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    config, table = table_for({})
    names = [type(m).__name__ for m in build_server(gateway_serving(config, table)).middleware]
    assert names == ["AnswerMiddleware"]  # no tracer provider installed: the span would be a no-op
    import mcp.shared.jsonrpc_dispatcher as sdk_dispatcher  # the client side's span, per request sent

    with sdk_dispatcher.otel_span("MCP send ping", kind=tracing.trace.SpanKind.CLIENT) as span:
        assert span is tracing.trace.INVALID_SPAN
    meta: dict[str, Any] = {}
    sdk_dispatcher.inject_trace_context(meta)
    assert meta == {}
    monkeypatch.setattr(tracing.trace, "get_tracer_provider", lambda: object())  # stands for an SDK provider
    names = [type(m).__name__ for m in build_server(gateway_serving(config, table)).middleware]
    assert names == ["OpenTelemetryMiddleware", "AnswerMiddleware"]  # the answer stays innermost
    span_cm = sdk_dispatcher.otel_span("MCP send ping", kind=tracing.trace.SpanKind.CLIENT)
    assert not isinstance(span_cm, contextlib.nullcontext)  # the SDK's own span again


def test_a_calls_parameter_headers_are_checked_against_the_table_not_a_listing() -> None:
    """The SDK checks a 2026-07-28 HTTP call's ``Mcp-Param-*`` headers against the tool's schema;
    the server answers from its table instead of having a whole ``tools/list`` run per call."""
    config, table = table_for({"alpha": rich_catalog("a")})
    server = build_server(gateway_serving(config, table))
    assert server.get_tool_input_schema is not None
    assert server.get_tool_input_schema("alpha__search") == rich_catalog("a").tools[0].input_schema
    assert server.get_tool_input_schema("alpha__nothing") is None
