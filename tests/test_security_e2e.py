"""Security at the HTTP front, end to end: the real ``mcpgw serve`` on 127.0.0.1, a real fixture
upstream behind it, and clients that talk HTTP (raw ``httpx2`` requests where the exact status,
headers and JSON body matter; the SDK's ``Client`` where a real client must simply work).

What each test asserts is what a client or a browser acts on: the status, the JSON-RPC error
(code, message, id, data), ``WWW-Authenticate``, ``Retry-After`` and the CORS headers. Whether a
refused call reached the upstream is observed, not assumed: the fixture upstream writes
``TOUCHED <uri>`` to its ``--event-log`` file when its ``touch`` tool runs, so a test that refuses
``alpha__touch`` checks that no such line appeared.

Rate limits are not timed: aiolimiter's buckets leak continuously, so each rule here leaks one unit
over many seconds (20s or a minute) while a test's burst takes a fraction of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx2
import pytest
from gateway_harness import eventually, gateway_http, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from raw_rpc import (JSON_AND_SSE, LEGACY, answer_text, bearer, call, error, initialize, open_session, refused, rpc,
                     without_key)
from upstreams import fixture_args

pytestmark = pytest.mark.anyio
WAIT = 60  # seconds for a whole test: the gateway and its upstream start, talk and stop

OPS_KEY = "mcpgw-ops-7f3a9c1e5b2d4f60a8e1"  # may use every endpoint
CI_KEY = "mcpgw-ci-0b8d2e4f6a1c3e5f7a9b"  # may use namespace `team` only
ORIGIN = "https://app.example.com"
EVIL_ORIGIN = "https://evil.example.com"
CHALLENGE = 'Bearer realm="mcpgw"'
NEEDS_KEY = "Unauthorized: this method needs an API key (Authorization: Bearer ...)"
NOT_VALID = "Unauthorized: the API key is not valid"
LAZY_OPEN = {"initialize", "notifications/initialized", "ping", "server/discover",
             "tools/list", "prompts/list", "resources/list", "resources/templates/list"}
AUDIT_FIELDS = {"time", "key", "session", "method", "name", "upstream_name", "server", "duration_ms",
                "outcome", "error", "arguments_sha256"}


# --- configuration ---------------------------------------------------------------------------------

def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def config(*, events: Path | None = None, http: dict[str, Any] | None = None, **top: Any) -> str:
    """One fixture upstream `alpha` (tools `alpha__*`), reachable at /mcp and in namespaces `team`
    and `other`; answers as JSON (not SSE) so raw responses can be asserted whole."""
    return json.dumps({
        "version": 1,
        "servers": {"alpha": {"command": sys.executable, "args": fixture_args("alpha", "stdio", event_log=events)}},
        "namespaces": {"team": {"servers": ["alpha"]}, "other": {"servers": ["alpha"]}},
        "gateway": {"http": {"json_response": True, **(http or {})}},
        **top,
    })


def api_keys(*, lazy: bool = False, ops: str = OPS_KEY) -> dict[str, Any]:
    """Keys written as their SHA-256, so the file holds no secret (no literal-secret warning)."""
    return {"lazy": lazy, "api_keys": [{"name": "ops", "key_sha256": sha256(ops)},
                                       {"name": "ci-bot", "key_sha256": sha256(CI_KEY), "namespaces": ["team"]}]}


def touched(events: Path) -> list[str]:
    """The `TOUCHED <uri>` lines the upstream wrote: each is one `alpha__touch` call that ran."""
    if not events.exists():
        return []
    return [line for line in events.read_text(encoding="utf-8").splitlines() if line.startswith("TOUCHED ")]


@asynccontextmanager
async def keyed_client(url: str, key: str, mode: str = "auto") -> AsyncIterator[Client]:
    """The SDK client sending `Authorization: Bearer <key>` on every request it makes."""
    async with httpx2.AsyncClient(headers=bearer(key), timeout=httpx2.Timeout(30.0)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:  # type: ignore[arg-type]
            yield client


def text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


# --- who gets in -----------------------------------------------------------------------------------

async def test_no_key_or_a_wrong_key_is_refused_on_every_endpoint_and_method(tmp_path: Path) -> None:
    path = write_config(tmp_path, config(auth=api_keys()))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            team = gw.base + "/ns/team/mcp"
            for url in (gw.url, team, gw.base + "/ns/nope/mcp"):  # an unknown namespace is not revealed: 401
                refused(await http.post(url, headers=JSON_AND_SSE, json=initialize()), 401, error(-32600, NEEDS_KEY),
                        CHALLENGE)
                refused(await http.post(url, headers=JSON_AND_SSE, content=b"{not json"), 401,
                        error(-32600, NEEDS_KEY), CHALLENGE)  # refused before the body is read
                refused(await http.get(url, headers={"Accept": "text/event-stream"}), 401, error(-32600, NEEDS_KEY),
                        CHALLENGE)
                refused(await http.delete(url, headers={"Mcp-Session-Id": "0" * 32}), 401, error(-32600, NEEDS_KEY),
                        CHALLENGE)
                for wrong in (bearer("mcpgw-not-a-key"), bearer(OPS_KEY + "x"), {"Authorization": f"Basic {OPS_KEY}"},
                              {"Authorization": "Bearer"}):
                    response = await http.post(url, headers={**JSON_AND_SSE, **wrong}, json=initialize())
                    refused(response, 401, error(-32600, NOT_VALID), CHALLENGE + ', error="invalid_token"')
                    assert wrong["Authorization"] not in response.text
            # two Authorization headers, one of them valid: which would count? Neither.
            both = await http.post(gw.url, headers=[*JSON_AND_SSE.items(), ("Authorization", f"Bearer {OPS_KEY}"),
                                                    ("Authorization", "Bearer mcpgw-not-a-key")], json=initialize())
            refused(both, 401, error(-32600, NOT_VALID), CHALLENGE + ', error="invalid_token"')
            # the right key, in either case of the scheme, opens a session that works
            for scheme in ("Bearer", "bearer"):
                headers = {**JSON_AND_SSE, "Authorization": f"{scheme} {OPS_KEY}"}
                assert (await http.post(gw.url, headers=headers, json=initialize())).status_code == 200
            session = await open_session(http, gw.url, OPS_KEY)
            assert answer_text(await http.post(gw.url, headers=session, json=call("alpha__echo", text="hi"))) == "hi"
            # ... and a session does not stand in for the key
            refused(await http.post(gw.url, headers=without_key(session), json=call("alpha__echo", 3, text="hi")),
                    401, error(-32600, NEEDS_KEY), CHALLENGE)
            missing = await http.post(gw.base + "/ns/nope/mcp", headers={**JSON_AND_SSE, **bearer(OPS_KEY)},
                                      json=initialize())
            assert (missing.status_code, missing.json()) == (404, {"error": "no namespace named 'nope'"})
            assert OPS_KEY not in gw.stderr()


async def test_a_key_limited_to_a_namespace_is_forbidden_everywhere_else(tmp_path: Path) -> None:
    path = write_config(tmp_path, config(auth=api_keys()))
    scope = CHALLENGE + ', error="insufficient_scope"'
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            ci = {**JSON_AND_SSE, **bearer(CI_KEY)}
            refused(await http.post(gw.url, headers=ci, json=initialize()), 403,
                    error(-32600, "Forbidden: this API key may not use the root endpoint"), scope)
            refused(await http.post(gw.base + "/ns/other/mcp", headers=ci, json=initialize()), 403,
                    error(-32600, "Forbidden: this API key may not use namespace 'other'"), scope)
            refused(await http.get(gw.url, headers={"Accept": "text/event-stream", **bearer(CI_KEY)}), 403,
                    error(-32600, "Forbidden: this API key may not use the root endpoint"), scope)
            team = gw.base + "/ns/team/mcp"
            session = await open_session(http, team, CI_KEY)
            assert answer_text(await http.post(team, headers=session, json=call("alpha__echo", text="team"))) == "team"
            # the session opened on `team` does not carry the key to the root endpoint
            refused(await http.post(gw.url, headers=session, json=call("alpha__echo", 3, text="root")), 403,
                    error(-32600, "Forbidden: this API key may not use the root endpoint"), scope)
            log = gw.stderr()
            assert "API key ci-bot refused on the root endpoint: not among its namespaces" in log
            assert "API key ci-bot refused on namespace 'other': not among its namespaces" in log
            assert CI_KEY not in log


async def test_a_session_opened_with_one_key_is_not_usable_with_another(tmp_path: Path) -> None:
    """A session id is not a credential: with another key it is a session that does not exist. A
    session opened without a key (lazy: discovery first) belongs to the first key that uses it."""
    path = write_config(tmp_path, config(auth=api_keys(lazy=True)))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            ops_session = await open_session(http, gw.url, OPS_KEY)
            stolen = {**ops_session, **bearer(CI_KEY)}
            url = gw.base + "/ns/team/mcp"
            team_session = await open_session(http, url, CI_KEY)
            refused(await http.post(url, headers={**team_session, **bearer(OPS_KEY)}, json=call("alpha__echo", text="x")),
                    404, error(-32600, "Session not found"))
            refused(await http.post(gw.url, headers=stolen, json=call("alpha__echo", text="x")),
                    403, error(-32600, "Forbidden: this API key may not use the root endpoint"),
                    challenge=CHALLENGE + ', error="insufficient_scope"')
            assert answer_text(await http.post(gw.url, headers=ops_session, json=call("alpha__echo", text="mine"))) == "mine"
            anonymous = await open_session(http, url)
            assert answer_text(await http.post(url, headers={**anonymous, **bearer(CI_KEY)},
                                               json=call("alpha__echo", text="claimed"))) == "claimed"
            refused(await http.post(url, headers={**anonymous, **bearer(OPS_KEY)}, json=call("alpha__echo", text="x")),
                    404, error(-32600, "Session not found"))


async def test_lazy_auth_lets_inspection_in_and_keeps_every_call_out_without_a_key(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    path = write_config(tmp_path, config(events=events, auth=api_keys(lazy=True)))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            session = await open_session(http, gw.url)  # initialize + notifications/initialized, no key
            listed = await http.post(gw.url, headers=session, json=rpc("tools/list", 2))
            assert listed.status_code == 200
            assert {"alpha__echo", "alpha__add", "alpha__touch"} <= {t["name"] for t in listed.json()["result"]["tools"]}
            assert (await http.post(gw.url, headers=session, json=rpc("ping", 3))).json() == {
                "jsonrpc": "2.0", "id": 3, "result": {}}
            for message in (rpc("prompts/list", 4), rpc("resources/list", 5), rpc("resources/templates/list", 6)):
                assert (await http.post(gw.url, headers=session, json=message)).status_code == 200
            for message in (
                call("alpha__touch", 7, uri="test://anonymous"),
                rpc("prompts/get", 8, name="alpha__greet", arguments={"name": "x"}),
                rpc("resources/read", "nine", uri="test://readme"),
                rpc("resources/subscribe", 10, uri="test://readme"),
                rpc("logging/setLevel", 11, level="debug"),
                rpc("completion/complete", 12, ref={"type": "ref/prompt", "name": "alpha__greet"},
                    argument={"name": "name", "value": "x"}),
                rpc("Tools/List", 13), rpc("no/such/method", 14), rpc("tools/call"),  # unknown methods need one too
            ):
                refused(await http.post(gw.url, headers=session, json=message), 401,
                        error(-32600, NEEDS_KEY, message.get("id")), CHALLENGE)
            # the same call on a namespace endpoint, with and without a session
            team = gw.base + "/ns/team/mcp"
            refused(await http.post(team, headers=JSON_AND_SSE, json=call("alpha__touch", 15, uri="test://team")), 401,
                    error(-32600, NEEDS_KEY, 15), CHALLENGE)
            team_session = await open_session(http, team)
            refused(await http.post(team, headers=team_session, json=call("alpha__touch", 16, uri="test://team")), 401,
                    error(-32600, NEEDS_KEY, 16), CHALLENGE)
            # one JSON object with `method` twice: the last one counts, for the front door as for the SDK
            doubled = ('{"jsonrpc":"2.0","id":17,"method":"tools/list","method":"tools/call",'
                       '"params":{"name":"alpha__touch","arguments":{"uri":"test://doubled"}}}')
            refused(await http.post(gw.url, headers=session, content=doubled.encode()), 401,
                    error(-32600, NEEDS_KEY, 17), CHALLENGE)
            # the standalone stream carries notifications: it needs a key even when lazy
            refused(await http.get(gw.url, headers={**without_key(session), "Accept": "text/event-stream"}), 401,
                    error(-32600, NEEDS_KEY), CHALLENGE)
            # client notifications ask for no work: they pass
            cancelled = rpc("notifications/cancelled", requestId=99, reason="test")
            assert (await http.post(gw.url, headers=session, json=cancelled)).status_code == 202
            assert touched(events) == []
            # the same session with a key: the call runs
            keyed = {**session, **bearer(OPS_KEY)}
            assert answer_text(await http.post(gw.url, headers=keyed, json=call("alpha__touch", 18, uri="test://ok"))) \
                == "touched"
            assert touched(events) == ["TOUCHED test://ok"]
            # a wrong key is refused even where no key is needed
            refused(await http.post(gw.url, headers={**JSON_AND_SSE, **bearer("mcpgw-not-a-key")}, json=initialize()),
                    401, error(-32600, NOT_VALID), CHALLENGE + ', error="invalid_token"')


async def test_a_batch_mixing_a_list_and_a_call_is_refused_whole(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    path = write_config(tmp_path, config(events=events, auth=api_keys(lazy=True)))
    batch = [rpc("tools/list", 1), call("alpha__touch", 2, uri="test://batched")]
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            session = await open_session(http, gw.url)
            for headers in (JSON_AND_SSE, session):  # the call needs a key: the whole batch is refused
                refused(await http.post(gw.url, headers=headers, json=batch), 401, error(-32600, NEEDS_KEY), CHALLENGE)
                refused(await http.post(gw.base + "/ns/team/mcp", headers=headers, json=batch[::-1]), 401,
                        error(-32600, NEEDS_KEY), CHALLENGE)
            # With a key the batch gets past the key check; MCP (2025-06-18 on) has no batches, so it is
            # an invalid request: a 400 with a JSON-RPC -32600 error and no id, that runs nothing and
            # does not echo the request (or the parser's internals) back.
            secret_argument = "do-not-echo-me"
            keyed_batch = [rpc("tools/list", 1), call("alpha__touch", 2, uri=f"test://{secret_argument}")]
            answer = await http.post(gw.url, headers={**session, **bearer(OPS_KEY)}, json=keyed_batch)
            assert answer.status_code == 400, answer.text
            assert touched(events) == []
            body = answer.json()
            assert (body["jsonrpc"], body["id"], body["error"]["code"]) == ("2.0", None, -32600), body
            assert secret_argument not in answer.text and "pydantic" not in answer.text, answer.text


# --- what a body may be ----------------------------------------------------------------------------

def padded_initialize(size: int) -> bytes:
    """An initialize request of exactly ``size`` bytes (the client's name is the padding)."""
    base = json.dumps(initialize(client_name=""), separators=(",", ":")).encode()
    body = json.dumps(initialize(client_name="x" * (size - len(base))), separators=(",", ":")).encode()
    assert len(body) == size
    return body


async def test_a_body_over_max_body_bytes_is_413_and_one_at_the_limit_passes(tmp_path: Path) -> None:
    path = write_config(tmp_path, config(auth=api_keys(lazy=True), http={"max_body_bytes": "2KiB"}))
    too_large = error(-32600, "Request body too large: the limit is 2048 bytes")
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            for headers in (JSON_AND_SSE, {**JSON_AND_SSE, **bearer(OPS_KEY)}):
                at_limit = await http.post(gw.url, headers=headers, content=padded_initialize(2048))
                assert at_limit.status_code == 200, at_limit.text
                assert at_limit.json()["result"]["serverInfo"]["name"] == "mcpgw"
                refused(await http.post(gw.url, headers=headers, content=padded_initialize(2049)), 413, too_large)
                refused(await http.post(gw.base + "/ns/team/mcp", headers=headers, content=padded_initialize(2049)),
                        413, too_large)
                refused(await http.post(gw.url, headers=headers, content=b" " * (4 * 2**20)), 413, too_large)

                async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: read, and stopped, as it comes
                    body = padded_initialize(2049)
                    for i in range(0, len(body), 512):
                        yield body[i:i + 512]

                refused(await http.post(gw.url, headers=headers, content=streamed()), 413, too_large)
            session = await open_session(http, gw.url, OPS_KEY)  # the gateway is none the worse for it
            assert answer_text(await http.post(gw.url, headers=session, json=call("alpha__echo", text="hi"))) == "hi"


def nested(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"a": value}
    return value


async def test_nested_json_and_malformed_bodies_are_refused_as_json_rpc_errors(tmp_path: Path) -> None:
    path = write_config(tmp_path, config(auth=api_keys(), http={"max_body_bytes": "2KiB"}))
    too_deep = error(-32600, "Invalid Request: nested deeper than 64 levels")
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            session = await open_session(http, gw.url, OPS_KEY)
            # message (1) > params (2) > arguments (3) > extra: 61 more levels is 64 in all, 62 is 65
            at_limit = {**call("alpha__echo", 2, text="deep"), "params": {
                "name": "alpha__echo", "arguments": {"text": "deep", "extra": nested(61)}}}
            assert answer_text(await http.post(gw.url, headers=session, json=at_limit)) == "deep"
            over = {**at_limit, "params": {"name": "alpha__echo", "arguments": {"text": "deep", "extra": nested(62)}}}
            refused(await http.post(gw.url, headers=session, json=over), 400, too_deep)
            for body in (b"[" * 1000 + b"]" * 1000, b"[" * 2000, b'{"a":' * 300 + b"1" + b"}" * 300):
                refused(await http.post(gw.url, headers=session, content=body), 400, too_deep)
            refused(await http.post(gw.url, headers=session, content=b"{not json"), 400,
                    error(-32700, "Parse error: Expecting property name enclosed in double quotes at line 1 column 2"))
            refused(await http.post(gw.url, headers=session, content=b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}'),
                    400, error(-32700, "Parse error: NaN is not JSON"))
            refused(await http.post(gw.url, headers=session, content=b"\xff\xfe"), 400,
                    error(-32700, "Parse error: the body is not UTF-8"))
            refused(await http.post(gw.url, headers=session, json=[]), 400, error(-32600, "Invalid Request: an empty batch"))
            refused(await http.post(gw.url, headers=session, json={"jsonrpc": "1.0", "id": 1, "method": "ping"}), 400,
                    error(-32600, 'Invalid Request: "jsonrpc" must be "2.0"'))
            refused(await http.post(gw.url, headers=session, json=[rpc("ping", 1), 7]), 400,
                    error(-32600, "Invalid Request: message 2 of the batch: a message must be a JSON object"))
            # still serving
            assert answer_text(await http.post(gw.url, headers=session, json=call("alpha__echo", 3, text="ok"))) == "ok"


async def test_arguments_that_break_the_tools_schema_never_reach_it(tmp_path: Path) -> None:
    path = write_config(tmp_path, config(auth=api_keys()))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            session = await open_session(http, gw.url, OPS_KEY)
            wrong_type = await http.post(gw.url, headers=session, json=call("alpha__add", 2, a="one", b=2))
            assert (wrong_type.status_code, wrong_type.json()) == (200, error(
                -32602, "invalid arguments for tool 'alpha__add': argument /a: 'one' is not of type 'number'", 2))
            missing = await http.post(gw.url, headers=session, json=call("alpha__add", 3, a=1))
            assert missing.json() == error(-32602, "invalid arguments for tool 'alpha__add': arguments: "
                                                   "'b' is a required property", 3)
            assert answer_text(await http.post(gw.url, headers=session, json=call("alpha__add", 4, a=1, b=2))) == "3.0"
            async with keyed_client(gw.url, OPS_KEY) as client:
                with pytest.raises(MCPError) as bad:
                    await client.call_tool("alpha__add", {"a": 1, "b": [2]})
                assert (bad.value.code, bad.value.message) == (
                    -32602, "invalid arguments for tool 'alpha__add': argument /b: [2] is not of type 'number'")


# --- browsers --------------------------------------------------------------------------------------

async def test_cors_answers_an_allowed_origin_and_tells_a_disallowed_one_nothing(tmp_path: Path) -> None:
    path = write_config(tmp_path, config(auth=api_keys(), cors={"allow_origins": [ORIGIN]},
                                         http={"allowed_origins": [ORIGIN]}))
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type, mcp-session-id"}
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            for url in (gw.url, gw.base + "/ns/team/mcp"):
                answered = await http.options(url, headers={"Origin": ORIGIN, **preflight})  # no key: still answered
                assert answered.status_code == 200, answered.text
                assert answered.headers["access-control-allow-origin"] == ORIGIN
                assert answered.headers["access-control-allow-methods"] == "GET, POST, DELETE, OPTIONS"
                allowed = {h.strip().lower() for h in answered.headers["access-control-allow-headers"].split(",")}
                assert {"authorization", "content-type", "mcp-session-id", "mcp-protocol-version",
                        "last-event-id"} <= allowed
                assert answered.headers["access-control-max-age"] == "600"
            opened = await http.post(gw.url, headers={**JSON_AND_SSE, **bearer(OPS_KEY), "Origin": ORIGIN},
                                     json=initialize())
            assert opened.status_code == 200, opened.text
            assert opened.headers["access-control-allow-origin"] == ORIGIN
            exposed = {h.strip().lower() for h in opened.headers["access-control-expose-headers"].split(",")}
            assert {"mcp-session-id", "mcp-protocol-version"} <= exposed
            assert "origin" in opened.headers["vary"].lower()
            # a browser can read why it was refused
            anonymous = await http.post(gw.url, headers={**JSON_AND_SSE, "Origin": ORIGIN}, json=initialize())
            refused(anonymous, 401, error(-32600, NEEDS_KEY), CHALLENGE)
            assert anonymous.headers["access-control-allow-origin"] == ORIGIN
            # another origin: no preflight approval, and no header that lets a browser read anything
            denied = await http.options(gw.url, headers={"Origin": EVIL_ORIGIN, **preflight})
            assert (denied.status_code, denied.text) == (400, "Disallowed CORS origin")
            foreign = await http.post(gw.url, headers={**JSON_AND_SSE, **bearer(OPS_KEY), "Origin": EVIL_ORIGIN},
                                      json=initialize())
            assert (foreign.status_code, foreign.text) == (403, "Invalid Origin header")
            for response in (denied, foreign):
                assert "access-control-allow-origin" not in response.headers
                assert "access-control-allow-credentials" not in response.headers
            # no Origin (not a browser): served, without CORS headers
            plain = await http.post(gw.url, headers={**JSON_AND_SSE, **bearer(OPS_KEY)}, json=initialize())
            assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


async def test_a_disallowed_origin_gets_no_cors_headers_at_all(tmp_path: Path) -> None:
    """docs/security.md: "a disallowed origin gets no CORS headers" (not only no
    Access-Control-Allow-Origin: no exposed headers, methods, headers or max-age either)."""
    path = write_config(tmp_path, config(auth=api_keys(), cors={"allow_origins": [ORIGIN]},
                                         http={"allowed_origins": [ORIGIN]}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            preflight = await http.options(gw.url, headers={"Origin": EVIL_ORIGIN,
                                                            "Access-Control-Request-Method": "POST"})
            post = await http.post(gw.url, headers={**JSON_AND_SSE, **bearer(OPS_KEY), "Origin": EVIL_ORIGIN},
                                   json=initialize())
            anonymous = await http.post(gw.url, headers={**JSON_AND_SSE, "Origin": EVIL_ORIGIN}, json=initialize())
            assert (preflight.status_code, post.status_code, anonymous.status_code) == (400, 403, 401)
            found = {f"{r.request.method} -> {r.status_code}": {k: v for k, v in r.headers.items()
                                                                 if k.lower().startswith("access-control-")}
                     for r in (preflight, post, anonymous)}
            assert found == {"OPTIONS -> 400": {}, "POST -> 403": {}, "POST -> 401": {}}


# --- rate limits -----------------------------------------------------------------------------------

async def test_the_61st_tool_call_in_a_60_call_window_is_a_json_rpc_error_with_retry_after(tmp_path: Path) -> None:
    # 60 calls per hour, not per minute: the bucket leaks one call a minute, never within the burst
    rule = {"scope": "key", "methods": ["tools/call"], "requests": 60, "per": "1h"}
    audit = tmp_path / "audit.jsonl"
    path = write_config(tmp_path, config(auth=api_keys(), rate_limits={"rules": [rule]},
                                         observability={"audit": {"path": str(audit)}}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            session = await open_session(http, gw.url, OPS_KEY)
            for i in range(60):
                assert answer_text(await http.post(gw.url, headers=session, json=call("alpha__echo", i, text=str(i)))) \
                    == str(i)
            limited = await http.post(gw.url, headers=session, json=call("alpha__echo", 60, text="one too many"))
            assert (limited.status_code, limited.json()) == (200, error(
                -32029, "rate limit exceeded: 60 tools/call per 3600s per client; retry after 60.0s", 60,
                {"retryAfter": 60.0, "scope": "key", "requests": 60, "per": 3600.0}))
            # what the rule does not count still works, and another key has a bucket of its own
            assert (await http.post(gw.url, headers=session, json=rpc("tools/list", 61))).status_code == 200
            team = gw.base + "/ns/team/mcp"
            other = await open_session(http, team, CI_KEY)
            assert answer_text(await http.post(team, headers=other, json=call("alpha__echo", 1, text="mine"))) == "mine"
            async with keyed_client(gw.url, OPS_KEY) as client:  # a new session: the key's bucket, still empty
                with pytest.raises(MCPError) as exc:
                    await client.call_tool("alpha__echo", {"text": "sdk"})
                assert exc.value.code == -32029 and exc.value.data["retryAfter"] == 60.0
            outcomes = [json.loads(line)["outcome"] for line in audit.read_text().splitlines()]
            assert outcomes == ["ok"] * 60 + ["rate_limited", "ok", "rate_limited"]
            metrics = (await http.get(gw.base + "/metrics")).text
            assert 'mcpgw_rate_limited_total{scope="key"} 2.0' in metrics


async def test_a_request_wide_rule_answers_the_request_after_its_last_with_429(tmp_path: Path) -> None:
    rule = {"scope": "key", "requests": 3, "per": "1m"}  # leaks one request every 20s
    path = write_config(tmp_path, config(auth=api_keys(), rate_limits={"rules": [rule]}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            session = await open_session(http, gw.url, OPS_KEY)  # POSTs 1 and 2
            assert (await http.post(gw.url, headers=session, json=rpc("tools/list", 2))).status_code == 200  # 3
            limited = await http.post(gw.url, headers=session, json=rpc("tools/list", 3))
            assert limited.status_code == 429
            assert limited.headers["retry-after"] == "20"
            assert limited.json() == error(-32029, "rate limit exceeded: 3 requests per 60s per client; retry after 20.0s",
                                           None, {"retryAfter": 20.0, "scope": "key", "requests": 3, "per": 60.0})
            # the same for a batch, a call, another path: it is the request that is counted
            again = await http.post(gw.url, headers=session, json=call("alpha__echo", 4, text="x"))
            assert again.status_code == 429 and again.headers["retry-after"] == "20"
            # another key's bucket is its own
            team = gw.base + "/ns/team/mcp"
            other = await open_session(http, team, CI_KEY)
            assert answer_text(await http.post(team, headers=other, json=call("alpha__echo", 5, text="y"))) == "y"
            # a request without a valid key is refused by the front door before it is counted
            refused(await http.post(gw.url, headers=without_key(session), json=rpc("tools/list", 6)), 401,
                    error(-32600, NEEDS_KEY), CHALLENGE)


# --- real clients, the audit trail, key rotation ---------------------------------------------------

@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_sdk_client_with_a_valid_key_works_end_to_end(tmp_path: Path, mode: str) -> None:
    path = write_config(tmp_path, config(auth=api_keys(), http={"json_response": False}))  # SSE answers
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw:
            async with keyed_client(gw.url, OPS_KEY, mode) as client:
                assert client.protocol_version == ("2026-07-28" if mode == "auto" else LEGACY)
                names = {t.name for t in (await client.list_tools()).tools}
                assert {"alpha__echo", "alpha__add"} <= names
                assert text(await client.call_tool("alpha__echo", {"text": "through the door"})) == "through the door"
                assert text(await client.call_tool("alpha__add", {"a": 2, "b": 3})) == "5.0"
            async with keyed_client(gw.base + "/ns/team/mcp", CI_KEY, mode) as client:
                assert text(await client.call_tool("alpha__whoami", {})) == "alpha"


async def test_the_audit_log_has_one_line_per_call_with_the_key_name_and_never_the_key(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    path = write_config(tmp_path, config(auth=api_keys(), observability={"audit": {"path": str(audit)}}))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            session = await open_session(http, gw.url, OPS_KEY)
            assert (await http.post(gw.url, headers=session, json=rpc("tools/list", 2))).status_code == 200  # no line
            assert answer_text(await http.post(gw.url, headers=session, json=call("alpha__echo", 3, text="hi"))) == "hi"
            assert (await http.post(gw.url, headers=session, json=call("alpha__add", 4, a="one", b=2))).json()["error"]
            assert (await http.post(gw.url, headers=session, json=call("alpha__nope", 5))).json()["error"]
            team = gw.base + "/ns/team/mcp"
            other = await open_session(http, team, CI_KEY)
            assert answer_text(await http.post(team, headers=other, json=call("alpha__whoami", 6))) == "alpha"
            refused(await http.post(gw.url, headers=without_key(session), json=call("alpha__echo", 7, text="no")), 401,
                    error(-32600, NEEDS_KEY), CHALLENGE)  # refused at the door, body unread: no call, no line
        lines = audit.read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines]
    assert all(set(entry) == AUDIT_FIELDS for entry in entries), entries
    for entry in entries:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry.pop("time"))
        assert isinstance(entry.pop("duration_ms"), (int, float))
    ops_session, ci_session = session["Mcp-Session-Id"], other["Mcp-Session-Id"]
    assert entries == [
        {"key": "ops", "session": ops_session, "method": "tools/call", "name": "alpha__echo", "upstream_name": "echo",
         "server": "alpha", "outcome": "ok", "error": None, "arguments_sha256": sha256('{"text":"hi"}')},
        {"key": "ops", "session": ops_session, "method": "tools/call", "name": "alpha__add", "upstream_name": "add",
         "server": "alpha", "outcome": "invalid_arguments", "error": "MCPError",
         "arguments_sha256": sha256('{"a":"one","b":2}')},
        {"key": "ops", "session": ops_session, "method": "tools/call", "name": None, "upstream_name": None,
         "server": None, "outcome": "unknown", "error": "MCPError", "arguments_sha256": None},
        {"key": "ci-bot", "session": ci_session, "method": "tools/call", "name": "alpha__whoami",
         "upstream_name": "whoami", "server": "alpha", "outcome": "ok", "error": None,
         "arguments_sha256": sha256("{}")},
    ]
    raw = audit.read_text(encoding="utf-8")
    assert OPS_KEY not in raw and CI_KEY not in raw and sha256(OPS_KEY) not in raw


def replace_file(path: Path, text: str) -> None:
    """Save the way editors do: write a temporary file, rename it over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


async def test_a_key_rotated_in_the_file_stops_the_old_key_and_admits_the_new(tmp_path: Path) -> None:
    new_key = "mcpgw-ops-rotated-5c7e9a1b3d5f"
    path = write_config(tmp_path, config(auth=api_keys()))
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient() as http:
            session = await open_session(http, gw.url, OPS_KEY)
            assert answer_text(await http.post(gw.url, headers=session, json=call("alpha__echo", 2, text="a"))) == "a"
            refused(await http.post(gw.url, headers={**JSON_AND_SSE, **bearer(new_key)}, json=initialize()), 401,
                    error(-32600, NOT_VALID), CHALLENGE + ', error="invalid_token"')
            replace_file(path, config(auth=api_keys(ops=new_key)))
            await eventually(lambda: "configuration version 2 in service" in gw.stderr())
            invalid = CHALLENGE + ', error="invalid_token"'
            refused(await http.post(gw.url, headers={**JSON_AND_SSE, **bearer(OPS_KEY)}, json=initialize()), 401,
                    error(-32600, NOT_VALID), invalid)
            # the session the old key opened does not keep it alive
            refused(await http.post(gw.url, headers=session, json=call("alpha__echo", 3, text="b")), 401,
                    error(-32600, NOT_VALID), invalid)
            rotated = {**session, **bearer(new_key)}
            assert answer_text(await http.post(gw.url, headers=rotated, json=call("alpha__echo", 4, text="c"))) == "c"
            async with keyed_client(gw.url, new_key) as client:
                assert text(await client.call_tool("alpha__echo", {"text": "new"})) == "new"
            # the key limited to `team` was not touched by the edit
            team = gw.base + "/ns/team/mcp"
            assert (await http.post(team, headers={**JSON_AND_SSE, **bearer(CI_KEY)}, json=initialize())).status_code \
                == 200
            assert new_key not in gw.stderr() and OPS_KEY not in gw.stderr()


# --- arbitrary bodies ------------------------------------------------------------------------------

METHODS = sorted(LAZY_OPEN) + [
    "tools/call", "prompts/get", "resources/read", "resources/subscribe", "resources/unsubscribe", "logging/setLevel",
    "completion/complete", "subscriptions/listen", "notifications/cancelled", "notifications/roots/list_changed",
    "Tools/List", "tools/list ", "", "rpc.discover", "no/such/method",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=()), max_size=12),  # lone surrogates included
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
ids = st.integers() | st.text(max_size=6)
touch_params = st.fixed_dictionaries({"name": st.just("alpha__touch"), "arguments": st.fixed_dictionaries(
    {"uri": st.text(max_size=10).map(lambda s: "test://" + s)})})
# JSON-RPC by construction (most of them pass the shape check: auth and the MCP layer get to see them) ...
well_formed = st.fixed_dictionaries({"jsonrpc": st.just("2.0"), "method": st.sampled_from(METHODS)}, optional={
    "id": ids, "params": touch_params | st.dictionaries(st.text(max_size=8), json_values, max_size=3)})
# ... and JSON-RPC-looking, with any field of any type, present or not
fuzzy = st.fixed_dictionaries({}, optional={
    "jsonrpc": st.sampled_from(["2.0", "1.0", 2.0]) | json_values, "method": st.sampled_from(METHODS) | json_values,
    "id": ids | st.floats(allow_nan=False, allow_infinity=False) | json_values, "params": touch_params | json_values,
    "result": json_values, "error": st.fixed_dictionaries({"code": st.integers(), "message": st.text()}) | json_values})
messages = well_formed | fuzzy


def _encoded(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return strategy.map(json.dumps).map(str.encode)


bodies = st.one_of(
    _encoded(well_formed), _encoded(well_formed), _encoded(st.lists(well_formed, min_size=1, max_size=3)),
    _encoded(messages), _encoded(st.lists(messages | json_values, max_size=4)), _encoded(json_values),
    st.binary(max_size=40),
)


def _not_json(constant: str) -> None:
    raise ValueError(constant)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _is_id(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _is_json_rpc(message: Any) -> bool:
    """JSON-RPC 2.0 as MCP uses it: a request/notification (string method, string or number id,
    object or array params) or a response (one of result and error, and the id it answers)."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return False
    if "params" in message and not isinstance(message["params"], (dict, list)):
        return False
    if "method" in message:
        return isinstance(message["method"], str) and ("id" not in message or _is_id(message["id"]))
    if ("result" in message) == ("error" in message) or "id" not in message:
        return False
    return _is_id(message["id"]) or (message["id"] is None and "error" in message)


def _needs_key(message: dict[str, Any]) -> bool:
    """With lazy auth: anything but inspection and client notifications."""
    method = message.get("method")
    return isinstance(method, str) and method not in LAZY_OPEN and not method.startswith("notifications/")


def expected_refusal(body: bytes) -> tuple[int, dict[str, Any] | None, int | None] | None:
    """What the front door must answer an anonymous POST of ``body`` with, by JSON-RPC and the
    lazy-auth rules alone: (status, exact body or None, error code), or None when it must let the
    body through to the MCP layer."""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError):
        return 400, None, -32700
    batch = value if isinstance(value, list) else [value]
    if _depth(value) > 64 or not batch or not all(_is_json_rpc(m) for m in batch):
        return 400, None, -32600
    if any(_needs_key(m) for m in batch):
        # the id of the one request refused (a batch of one included); null for a batch of several
        single = len(batch) == 1 and "method" in batch[0]
        return 401, error(-32600, NEEDS_KEY, batch[0].get("id") if single else None), -32600
    return None


def test_arbitrary_bodies_never_break_the_front_door_nor_slip_a_call_past_it(tmp_path: Path) -> None:
    """Whatever an anonymous client POSTs to a lazy-auth gateway: never a 5xx; a body that is not
    JSON-RPC is a 400 JSON-RPC error; one with a message that needs a key is a 401 and runs nothing
    upstream (`alpha__touch` calls are generated, and its event log stays empty); everything else is
    passed on. Afterwards a keyed client is served as usual."""
    events = tmp_path / "events.log"
    path = write_config(tmp_path, config(events=events, auth=api_keys(lazy=True)))
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(gateway_http(path)) as gw, \
            httpx2.Client(timeout=httpx2.Timeout(10.0)) as http:
        opened = http.post(gw.url, headers=JSON_AND_SSE, json=initialize())
        assert opened.status_code == 200, opened.text
        session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": LEGACY}
        assert http.post(gw.url, headers={**JSON_AND_SSE, **session}, json=rpc("notifications/initialized")) \
            .status_code == 202
        statuses: dict[int, int] = {}

        @settings(max_examples=150, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(body=bodies, in_session=st.booleans(), endpoint=st.sampled_from(["/mcp", "/mcp", "/ns/team/mcp"]),
               wrong_key=st.sampled_from([False] * 7 + [True]))
        def anonymous_post(body: bytes, in_session: bool, endpoint: str, wrong_key: bool) -> None:
            headers = {**JSON_AND_SSE}
            if in_session and endpoint == "/mcp":
                headers.update(session)
            if wrong_key:
                headers.update(bearer("mcpgw-not-a-key"))
            response = http.post(gw.base + endpoint, headers=headers, content=body)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (response.status_code, response.text)
            if wrong_key:
                refused(response, 401, error(-32600, NOT_VALID), CHALLENGE + ', error="invalid_token"')
                return
            expected = expected_refusal(body)
            if expected is None:
                assert response.status_code not in (401, 403, 413), (response.status_code, response.text)
                return
            status, exact, code = expected
            assert response.status_code == status, (response.status_code, response.text)
            answer = response.json()
            if exact is not None:
                assert answer == exact
            else:
                assert (answer["jsonrpc"], answer["id"], answer["error"]["code"]) == ("2.0", None, code), answer

        anonymous_post()
        assert touched(events) == [], "a call made without a key reached the upstream"
        assert statuses.get(401, 0) > 0 and statuses.get(400, 0) > 0, statuses  # both refusals were exercised

        async def keyed_client_still_served() -> None:
            with anyio.fail_after(WAIT):
                async with keyed_client(gw.url, OPS_KEY) as client:
                    assert text(await client.call_tool("alpha__echo", {"text": "still here"})) == "still here"
                    assert text(await client.call_tool("alpha__touch", {"uri": "test://keyed"})) == "touched"

        portal.call(keyed_client_still_served)
        assert touched(events) == ["TOUCHED test://keyed"]
