"""The front door of the MCP endpoints, as a client sees it: who gets in with which key, on which
endpoint, with which method, and what a body that is too large, not JSON or not JSON-RPC gets back.

The middleware is driven over ``httpx2``'s ASGI transport with a tiny inner app that records the
body it read and the principal it was handed; the status codes and JSON bodies are asserted
exactly, since clients and registries act on them. The key ring and the method table are pure and
tested on their own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest

from gateway.config.model import ApiKey, AuthConfig, Secret
from gateway.security import auth
from gateway.security.auth import KeyRing, Principal, message_needs_credentials, needs_credentials
from gateway.security.front_door import PRINCIPAL, FrontDoor, endpoints_at, principal_of, shape_problem

OPS_KEY = "ops-key-0123456789abcdef"  # written as ${OPS_KEY}: may use everything
CI_KEY = "ci-key-fedcba9876543210"  # written as its SHA-256: may use namespace x only
LIMIT = 1024
CHALLENGE = 'Bearer realm="mcpgw"'
NEEDS_KEY = "Unauthorized: this method needs an API key (Authorization: Bearer ...)"

KEYS = (ApiKey(name="ops", key=Secret(OPS_KEY, "${OPS_KEY}")),
        ApiKey(name="ci-bot", key_sha256=hashlib.sha256(CI_KEY.encode()).hexdigest().upper(), namespaces=("x",)))


def rpc(method: str, id: int | None = 1, **params: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if id is not None:
        message["id"] = id
    return message


def error(code: int, message: str, id: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Seen:
    path: str
    body: bytes
    principal: Principal | None
    has_principal: bool


@dataclass
class Inner:
    """The app behind the door: reads the whole body as the SDK would, and records what it got."""

    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        if scope["method"] == "POST":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        self.seen.append(Seen(scope["path"], body, principal_of(scope), PRINCIPAL in scope.get("state", {})))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})


@dataclass
class Door:
    inner: Inner
    client: httpx2.AsyncClient


async def open_door(auth_config: AuthConfig | None, limit: int = LIMIT) -> AsyncIterator[Door]:
    inner = Inner()
    app = FrontDoor(inner, keyring=KeyRing.from_config(auth_config), lazy=bool(auth_config and auth_config.lazy),
                    max_body_bytes=limit, endpoint_of=endpoints_at("/mcp"))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://gw") as client:
        yield Door(inner, client)


@pytest.fixture
async def strict() -> AsyncIterator[Door]:
    async for door in open_door(AuthConfig(api_keys=KEYS)):
        yield door


@pytest.fixture
async def lazy() -> AsyncIterator[Door]:
    async for door in open_door(AuthConfig(lazy=True, api_keys=KEYS)):
        yield door


@pytest.fixture
async def open_gateway() -> AsyncIterator[Door]:
    async for door in open_door(None):
        yield door


pytestmark = pytest.mark.anyio


# --- who gets in -------------------------------------------------------------------------------


async def test_no_key_is_refused_before_the_body_is_read(strict: Door) -> None:
    response = await strict.client.post("/mcp", content=b"{not json")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == CHALLENGE
    assert response.json() == error(-32600, NEEDS_KEY)
    assert strict.inner.seen == []


async def test_a_wrong_key_is_refused_and_not_echoed(strict: Door) -> None:
    response = await strict.client.post("/mcp", json=rpc("tools/list"), headers=bearer("not-the-key-at-all"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == CHALLENGE + ', error="invalid_token"'
    assert response.json() == error(-32600, "Unauthorized: the API key is not valid")
    assert "not-the-key-at-all" not in response.text
    assert strict.inner.seen == []


@pytest.mark.parametrize("header", [f"Bearer {OPS_KEY}", f"bearer {OPS_KEY}", f"BEARER   {OPS_KEY} "])
async def test_the_right_key_passes_with_its_principal_and_the_exact_body(strict: Door, header: str) -> None:
    body = json.dumps(rpc("tools/call", name="echo", arguments={"text": "hi"})).encode()
    response = await strict.client.post("/mcp", content=body, headers={"Authorization": header})
    assert response.status_code == 200
    assert strict.inner.seen == [Seen("/mcp", body, Principal("ops"), True)]


async def test_a_key_given_by_its_sha256_passes_on_its_namespace(strict: Door) -> None:
    response = await strict.client.post("/ns/x/mcp", json=rpc("tools/call", name="t"), headers=bearer(CI_KEY))
    assert response.status_code == 200
    assert [s.principal for s in strict.inner.seen] == [Principal("ci-bot", ("x",))]


@pytest.mark.parametrize(("path", "where"), [("/mcp", "the root endpoint"), ("/ns/y/mcp", "namespace 'y'")])
async def test_a_key_limited_to_namespaces_is_forbidden_elsewhere(strict: Door, path: str, where: str) -> None:
    response = await strict.client.post(path, json=rpc("tools/list"), headers=bearer(CI_KEY))
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == CHALLENGE + ', error="insufficient_scope"'
    assert response.json() == error(-32600, f"Forbidden: this API key may not use {where}")
    assert "ci-bot" not in response.text and CI_KEY not in response.text
    assert strict.inner.seen == []


async def test_the_log_names_a_refused_key_never_its_value(strict: Door, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="mcpgw.security")
    await strict.client.post("/mcp", json=rpc("tools/list"), headers=bearer(CI_KEY))
    await strict.client.post("/mcp", json=rpc("tools/list"), headers=bearer(OPS_KEY + "-wrong"))
    assert [r.getMessage() for r in caplog.records] == [
        "API key ci-bot refused on the root endpoint: not among its namespaces",
        "refused a request with invalid credentials"]


async def test_two_authorization_headers_are_refused(strict: Door) -> None:
    headers = [("Authorization", f"Bearer {OPS_KEY}"), ("Authorization", "Bearer other")]
    response = await strict.client.post("/mcp", json=rpc("ping"), headers=headers)
    assert response.status_code == 401
    assert strict.inner.seen == []


async def test_an_auth_section_without_keys_lets_nobody_in() -> None:
    async for door in open_door(AuthConfig(lazy=False)):
        response = await door.client.post("/mcp", json=rpc("initialize"), headers=bearer(OPS_KEY))
        assert response.status_code == 401
        assert door.inner.seen == []


async def test_without_auth_everything_passes_anonymously(open_gateway: Door) -> None:
    response = await open_gateway.client.post("/ns/x/mcp", json=rpc("tools/call"), headers=bearer("anything"))
    assert response.status_code == 200
    assert [(s.principal, s.has_principal) for s in open_gateway.inner.seen] == [(None, True)]
    assert (await open_gateway.client.get("/mcp")).status_code == 200


# --- lazy auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize("message", [rpc("initialize"), rpc("tools/list"), rpc("resources/templates/list"),
                                     rpc("server/discover"), rpc("notifications/initialized", id=None),
                                     {"jsonrpc": "2.0", "id": 7, "result": {}}])
@pytest.mark.parametrize("path", ["/mcp", "/ns/x/mcp"])
async def test_lazy_lets_inspection_in_without_a_key(lazy: Door, message: dict[str, Any], path: str) -> None:
    response = await lazy.client.post(path, json=message)
    assert response.status_code == 200
    assert [(s.path, s.principal, s.has_principal) for s in lazy.inner.seen] == [(path, None, True)]


@pytest.mark.parametrize("path", ["/mcp", "/ns/x/mcp"])
async def test_lazy_refuses_a_tool_call_without_a_key(lazy: Door, path: str) -> None:
    response = await lazy.client.post(path, json=rpc("tools/call", id="c-1", name="t"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == CHALLENGE
    assert response.json() == error(-32600, NEEDS_KEY, id="c-1")
    assert lazy.inner.seen == []


@pytest.mark.parametrize("path", ["/mcp", "/ns/x/mcp"])
async def test_lazy_refuses_a_whole_batch_with_one_message_needing_a_key(lazy: Door, path: str) -> None:
    response = await lazy.client.post(path, json=[rpc("tools/list", id=1), rpc("tools/call", id=2, name="t")])
    assert response.status_code == 401
    assert response.json() == error(-32600, NEEDS_KEY)
    assert lazy.inner.seen == []


async def test_lazy_still_refuses_a_wrong_key_on_initialize(lazy: Door) -> None:
    response = await lazy.client.post("/mcp", json=rpc("initialize"), headers=bearer("wrong-key-0000000000"))
    assert response.status_code == 401
    assert lazy.inner.seen == []


async def test_lazy_lets_a_key_call_tools(lazy: Door) -> None:
    response = await lazy.client.post("/ns/x/mcp", json=rpc("tools/call", name="t"), headers=bearer(CI_KEY))
    assert response.status_code == 200


async def test_get_needs_a_key_even_when_lazy(lazy: Door) -> None:
    response = await lazy.client.get("/mcp")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == CHALLENGE
    assert response.json() == error(-32600, NEEDS_KEY)
    assert (await lazy.client.get("/mcp", headers=bearer(OPS_KEY))).status_code == 200


async def test_delete_needs_a_key_only_when_not_lazy(lazy: Door, strict: Door) -> None:
    assert (await lazy.client.delete("/mcp")).status_code == 200
    assert (await strict.client.delete("/mcp")).status_code == 401
    assert (await strict.client.delete("/mcp", headers=bearer(OPS_KEY))).status_code == 200


async def test_options_and_other_paths_pass_untouched(strict: Door) -> None:
    assert (await strict.client.options("/mcp")).status_code == 200
    assert (await strict.client.get("/health")).status_code == 200
    assert (await strict.client.post("/ns/x/y/mcp", content=b"{")).status_code == 200
    assert [(s.path, s.has_principal) for s in strict.inner.seen] == [
        ("/mcp", False), ("/health", False), ("/ns/x/y/mcp", False)]


# --- body size ---------------------------------------------------------------------------------


def padded(size: int) -> bytes:
    body = json.dumps(rpc("ping")).encode()
    return body + b" " * (size - len(body))


async def test_a_body_exactly_at_the_limit_passes(open_gateway: Door) -> None:
    response = await open_gateway.client.post("/mcp", content=padded(LIMIT))
    assert response.status_code == 200
    assert open_gateway.inner.seen[0].body == padded(LIMIT)


async def test_a_body_one_byte_over_the_limit_is_413(open_gateway: Door) -> None:
    response = await open_gateway.client.post("/mcp", content=padded(LIMIT + 1))
    assert response.status_code == 413
    assert response.json() == error(-32600, f"Request body too large: the limit is {LIMIT} bytes")
    assert open_gateway.inner.seen == []


async def test_a_streamed_body_growing_over_the_limit_is_413(open_gateway: Door) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(LIMIT):
            yield b"  "

    response = await open_gateway.client.post("/mcp", content=chunks())
    assert response.status_code == 413
    assert open_gateway.inner.seen == []


async def test_a_body_longer_than_its_content_length_is_413(open_gateway: Door) -> None:
    response = await open_gateway.client.post("/mcp", content=padded(100), headers={"Content-Length": "5"})
    assert response.status_code == 413
    assert response.json() == error(-32600, "Request body longer than its Content-Length")
    assert open_gateway.inner.seen == []


async def test_a_malformed_content_length_is_400(open_gateway: Door) -> None:
    response = await open_gateway.client.post("/mcp", content=b"{}", headers={"Content-Length": "+2"})
    assert response.status_code == 400


async def test_reading_stops_at_the_limit_and_the_rest_is_the_clients() -> None:
    """Directly over ASGI: the door reads no chunk past the limit, and after the replayed body the
    inner app gets the client's own next message (the disconnect it watches)."""
    inner_got: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        inner_got.extend([await receive(), await receive()])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def client(*chunks: bytes) -> tuple[Any, list[int]]:
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        messages.append({"type": "http.disconnect"})
        reads = [0]

        async def receive() -> dict[str, Any]:
            reads[0] += 1
            return messages[reads[0] - 1]

        return receive, reads

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    door = FrontDoor(inner, keyring=KeyRing(), lazy=False, max_body_bytes=10, endpoint_of=endpoints_at("/mcp"))
    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": []}
    receive, reads = client(b"[" * 6, b"[" * 6, b"]" * 12)
    await door(dict(scope), receive, send)
    assert sent[0]["status"] == 413 and reads == [2] and inner_got == []

    receive, reads = client(b'{"jsonrpc":', b'"2.0","method":"ping"}')
    await FrontDoor(inner, keyring=KeyRing(), lazy=False, max_body_bytes=100, endpoint_of=endpoints_at("/mcp"))(
        dict(scope), receive, send)
    assert inner_got == [{"type": "http.request", "body": b'{"jsonrpc":"2.0","method":"ping"}', "more_body": False},
                         {"type": "http.disconnect"}]


# --- JSON and JSON-RPC -------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"jsonrpc": "2.0", "method": "ping", "id": NaN}', b"\xff\xfe{}"])
async def test_malformed_json_is_a_parse_error(open_gateway: Door, body: bytes) -> None:
    response = await open_gateway.client.post("/mcp", content=body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["id"] is None and answer["error"]["code"] == -32700
    assert answer["error"]["message"].startswith("Parse error: ")
    assert "Traceback" not in response.text and len(answer["error"]["message"]) < 100


@pytest.mark.parametrize(("body", "message"), [
    (b"[]", "Invalid Request: an empty batch"),
    (b'{"foo": 1}', 'Invalid Request: "jsonrpc" must be "2.0"'),
    (b'"ping"', "Invalid Request: a message must be a JSON object"),
    (b'[{"jsonrpc": "2.0", "method": "ping"}, 1]', "Invalid Request: message 2 of the batch: a message must be a JSON object"),
    (b'{"jsonrpc": "2.0", "method": 5}', 'Invalid Request: "method" must be a string'),
    (b'{"jsonrpc": "2.0", "method": "ping", "id": null}', 'Invalid Request: "id" must be a string or a number'),
    (b'{"jsonrpc": "2.0", "method": "ping", "id": true}', 'Invalid Request: "id" must be a string or a number'),
    (b'{"jsonrpc": "2.0", "method": "ping", "params": 3}', 'Invalid Request: "params" must be an object or an array'),
    (b'{"jsonrpc": "2.0", "id": 1}', 'Invalid Request: a message needs a "method", or one of "result" and "error"'),
    (b'{"jsonrpc": "2.0", "id": 1, "result": {}, "error": {}}',
     'Invalid Request: a message needs a "method", or one of "result" and "error"'),
    (b'{"jsonrpc": "2.0", "result": {}}', 'Invalid Request: a response needs the "id" of the request it answers'),
])
async def test_invalid_json_rpc_is_an_invalid_request(open_gateway: Door, body: bytes, message: str) -> None:
    response = await open_gateway.client.post("/mcp", content=body)
    assert response.status_code == 400
    assert response.json() == error(-32600, message)
    assert open_gateway.inner.seen == []


@pytest.mark.parametrize("depth", [65, 500, 10_000, 2_000_000])
async def test_deep_nesting_is_an_invalid_request_not_a_crash(depth: int) -> None:
    async for door in open_door(None, limit=4 * 2**20):
        response = await door.client.post("/mcp", content=b"[" * depth + b"]" * depth)
        assert response.status_code == 400
        assert response.json() == error(-32600, "Invalid Request: nested deeper than 64 levels")
        assert door.inner.seen == []


async def test_nesting_inside_a_message_is_counted(open_gateway: Door) -> None:
    nested = "[" * 62 + "]" * 62
    ok = f'{{"jsonrpc": "2.0", "method": "tools/call", "id": 1, "params": {{"a": {nested}}}}}'
    assert (await open_gateway.client.post("/mcp", content=ok)).status_code == 200
    deep = ok.replace(nested, "[" + nested + "]")
    assert (await open_gateway.client.post("/mcp", content=deep)).status_code == 400


async def test_deep_nesting_needs_no_key_to_be_refused_when_lazy() -> None:
    async for door in open_door(AuthConfig(lazy=True, api_keys=KEYS), limit=2**20):
        response = await door.client.post("/mcp", content=b"[" * 10_000 + b"]" * 10_000)
        assert response.status_code == 400


# --- the key ring, pure ------------------------------------------------------------------------


def test_every_key_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = KeyRing.from_config(AuthConfig(api_keys=KEYS + (ApiKey(name="third", key=Secret("third-key-000000000")),)))
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for header, expected in [(f"Bearer {OPS_KEY}", "ops"), (f"Bearer {CI_KEY}", "ci-bot"),
                             ("Bearer third-key-000000000", "third"), ("Bearer nobody-has-this-key", None)]:
        calls.clear()
        principal = ring.identify(header)
        assert (principal.name if principal else None) == expected
        assert len(calls) == 3
        assert all(isinstance(a, bytes) and len(a) == len(b) == 32 for a, b in calls)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", f"Basic {OPS_KEY}", f"Token {OPS_KEY}",
                                    f"Bearer {OPS_KEY} extra", OPS_KEY, f"Bearer {OPS_KEY}x"])
def test_what_is_not_a_valid_bearer_token(header: str | None) -> None:
    assert KeyRing.from_config(AuthConfig(api_keys=KEYS)).identify(header) is None


def test_no_auth_means_a_disabled_empty_ring() -> None:
    assert KeyRing.from_config(None) == KeyRing(entries=(), enabled=False)
    assert KeyRing.from_config(AuthConfig()).enabled


def test_a_key_rings_repr_shows_names_only() -> None:
    shown = repr(KeyRing.from_config(AuthConfig(api_keys=KEYS)))
    assert shown == "KeyRing(enabled=True, keys=['ops', 'ci-bot'])"


def test_a_principals_endpoints() -> None:
    everything, limited = Principal("ops"), Principal("ci", ("x", "y"))
    assert everything.may_use("") and everything.may_use("x")
    assert not limited.may_use("") and limited.may_use("x") and limited.may_use("y") and not limited.may_use("z")
    assert not Principal("none", ()).may_use("")


OPEN_WHEN_LAZY = ["initialize", "notifications/initialized", "ping", "server/discover", "tools/list", "prompts/list",
                  "resources/list", "resources/templates/list", "notifications/cancelled", "notifications/progress",
                  "notifications/roots/list_changed"]
ALWAYS_NEED_A_KEY = ["tools/call", "prompts/get", "resources/read", "completion/complete", "resources/subscribe",
                     "resources/unsubscribe", "subscriptions/listen", "logging/setLevel", "sampling/createMessage",
                     "tools/list/extra", "Initialize", "no/such/method", ""]


@pytest.mark.parametrize("method", OPEN_WHEN_LAZY)
def test_methods_open_when_lazy(method: str) -> None:
    assert not needs_credentials(method, lazy=True)
    assert needs_credentials(method, lazy=False)


@pytest.mark.parametrize("method", ALWAYS_NEED_A_KEY)
def test_methods_that_always_need_a_key(method: str) -> None:
    assert needs_credentials(method, lazy=True)
    assert needs_credentials(method, lazy=False)


def test_responses_from_the_client_need_a_key_only_when_not_lazy() -> None:
    answer = {"jsonrpc": "2.0", "id": 3, "result": {"action": "accept"}}
    assert not message_needs_credentials(answer, lazy=True)
    assert message_needs_credentials(answer, lazy=False)
    assert message_needs_credentials(rpc("tools/call"), lazy=True)


def test_endpoints_at_the_routes_of_the_app() -> None:
    endpoint_of = endpoints_at("/mcp")
    assert endpoint_of("/mcp") == ""
    assert endpoint_of("/ns/dev/mcp") == "dev"
    assert [endpoint_of(p) for p in ("/health", "/mcp/", "/ns//mcp", "/ns/a/b/mcp", "/ns/dev/mcpx", "/xmcp")] == [None] * 6


def test_valid_messages_have_no_shape_problem() -> None:
    for message in [rpc("ping"), rpc("notifications/initialized", id=None), {"jsonrpc": "2.0", "id": "a", "result": {}},
                    {"jsonrpc": "2.0", "id": None, "error": {"code": 1, "message": "m"}}, rpc("x", id=1.0)]:
        assert shape_problem(message) is None


async def test_the_inner_apps_receive_lets_go_of_the_connection_once_the_request_is_over() -> None:
    """The SDK keeps an idle session's last message, and with it the request's ``receive``: held
    on, uvicorn's exchange (protocol, parser, transport) stayed alive with every idle session."""
    import weakref

    from gateway.security.front_door import _Replay

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    connection = weakref.ref(receive)
    replay = _Replay(b'{"jsonrpc": "2.0"}', receive)
    assert await replay() == {"type": "http.request", "body": b'{"jsonrpc": "2.0"}', "more_body": False}
    assert await replay() == {"type": "http.disconnect"}  # then the client's own messages
    replay.release()
    del receive
    assert connection() is None
    assert await replay() == {"type": "http.disconnect"}
