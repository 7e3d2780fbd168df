"""The front door of the MCP endpoints: every HTTP request to one passes here before the SDK sees it.

``FrontDoor`` is a pure ASGI middleware, so it sees every route and every method, and a batch is
checked message by message: a Starlette dependency or a handler-level check could be skipped by a
path or a message shape it was not written for. In order, a request to an MCP endpoint is refused

1. 401 if it presents credentials that are not a valid key (whatever the method: a client with a
   wrong key should learn it at ``initialize``, not at its first tool call);
2. 403 if its key may not use this endpoint (a key limited to namespaces, on another one or the root);
3. 401 if it has no key and needs one: every request when auth is not lazy, before its body is read,
   so an anonymous client cannot make the gateway parse anything; with lazy auth, a GET (the
   standalone stream carries notifications: like ``subscriptions/listen``) and any POST with one
   message that needs a key (a batch is refused whole);
4. 413 if its body is over ``max_body_bytes`` or longer than its own ``Content-Length``, read no further;
5. 400 if its body is not JSON (-32700) or not JSON-RPC (-32600), nested too deeply included.

Everything else goes on with the body replayed exactly and the principal (or None) in
``scope["state"]["mcpgw.principal"]``. Error bodies are JSON-RPC errors with a short message: never a
stack trace, never the presented key, never a key's name (that goes to the log, for 403s only).
With no ``auth`` configured, steps 1-3 are skipped; the size and shape checks always apply.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.security.auth import ROOT_ENDPOINT, KeyRing, Principal, bearer_token, message_needs_credentials
from gateway.security.oauth import InsufficientScope, TokenValidator, base_url_of, metadata_url

PRINCIPAL = "mcpgw.principal"
MESSAGE = "mcpgw.message"  # the POSTed JSON-RPC message, parsed once here, for what comes after
SESSION_ID = "mcpgw.session_id"  # the request's Mcp-Session-Id, read once (``http._Endpoint``)
MAX_DEPTH = 64
"""JSON-RPC messages are shallow; deeper nesting is an attack on the parsers after this one."""

INVALID_REQUEST = -32600
PARSE_ERROR = -32700
CHALLENGE = 'Bearer realm="mcpgw"'

log = logging.getLogger("mcpgw.security")

EndpointOf = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class Refusal:
    """An HTTP error carrying a JSON-RPC error body."""

    status: int
    code: int
    message: str
    id: str | int | float | None = None
    challenge: str | None = None

    async def send(self, send: Send) -> None:
        body = json.dumps({"jsonrpc": "2.0", "id": self.id, "error": {"code": self.code, "message": self.message}})
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
        if self.challenge is not None:
            headers.append((b"www-authenticate", self.challenge.encode("ascii")))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body.encode("utf-8")})


def principal_of(scope: Scope) -> Principal | None:
    """The principal ``FrontDoor`` let this request in as; None when anonymous or auth is off."""
    return scope.get("state", {}).get(PRINCIPAL)


def session_id_of(scope: Scope) -> str | None:
    """The request's ``Mcp-Session-Id``: as the endpoint read it, or from the headers when the
    request did not come through one."""
    state = scope.get("state")
    if state is not None and SESSION_ID in state:
        return state[SESSION_ID]
    return Headers(scope=scope).get("mcp-session-id")


def opening_message(scope: Scope) -> dict[str, Any] | None:
    """The JSON-RPC message POSTed in this request, as ``FrontDoor`` parsed it (None for GET/DELETE)."""
    return scope.get("state", {}).get(MESSAGE)


def endpoints_at(path: str) -> EndpointOf:
    """``endpoint_of`` for the routes of ``gateway.http``: ``path`` is the root endpoint and
    ``/ns/<name><path>`` the namespace ``name`` (one path segment, as Starlette's ``{namespace}``)."""
    pattern = re.compile("/ns/([^/]+)" + re.escape(path))

    def endpoint_of(route_path: str) -> str | None:
        if route_path == path:
            return ROOT_ENDPOINT
        match = pattern.fullmatch(route_path)
        return match.group(1) if match else None

    return endpoint_of


class FrontDoor:
    """Authentication and body hardening for the MCP endpoints (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, keyring: KeyRing, lazy: bool, max_body_bytes: int,
                 endpoint_of: EndpointOf, oauth: TokenValidator | None = None) -> None:
        self.app = app
        self.keyring = keyring
        self.oauth = oauth
        self.lazy = lazy
        self.max_body_bytes = max_body_bytes
        self.endpoint_of = endpoint_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        endpoint = self.endpoint_of(_route_path(scope))
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        principal = await self._identify(scope)
        if isinstance(principal, Refusal):
            await principal.send(send)
            return
        if refusal := self._check_endpoint(principal, endpoint):
            await refusal.send(send)
            return
        if scope["method"] == "POST":
            await self._post(scope, receive, send, principal)
            return
        if self._anonymous(principal) and (scope["method"] != "DELETE" or not self.lazy):
            await self._unauthorized(scope).send(send)
            return
        scope.setdefault("state", {})[PRINCIPAL] = principal
        await self.app(scope, receive, send)

    async def _identify(self, scope: Scope) -> Principal | Refusal | None:
        """The principal; None when auth is off or no credentials came; a refusal for credentials
        that came and are not valid (two ``Authorization`` headers included: which one would count?).
        An API key is tried first, then (when configured) an OAuth access token."""
        if not self.keyring.enabled:
            return None
        presented = _header_values(scope, b"authorization")
        if not presented:
            return None
        principal = self.keyring.identify(presented[0]) if len(presented) == 1 else None
        if principal is None and self.oauth is not None and len(presented) == 1:
            token = bearer_token(presented[0])
            found = await self.oauth.principal(token) if token else None
            if isinstance(found, InsufficientScope):
                wanted = " ".join(self.oauth.config.required_scopes)
                return Refusal(403, INVALID_REQUEST,
                               f"Forbidden: the access token lacks the scope(s) {', '.join(found.missing)}",
                               challenge=self._challenge(scope) + f', error="insufficient_scope", scope="{wanted}"')
            principal = found
        if principal is None:
            log.debug("refused a request with invalid credentials")
            what = "credentials are" if self.oauth is not None else "API key is"
            return Refusal(401, INVALID_REQUEST, f"Unauthorized: the {what} not valid",
                           challenge=self._challenge(scope) + ', error="invalid_token"')
        return principal

    def _challenge(self, scope: Scope) -> str:
        """``WWW-Authenticate``; with OAuth it names the Protected Resource Metadata (RFC 9728 §5.1)."""
        if self.oauth is None:
            return CHALLENGE
        host = next(iter(_header_values(scope, b"host")), None)
        base = base_url_of(scope.get("scheme", "http"), host, self.oauth.config.resource or "http://localhost")
        path = urlsplit(self.oauth.config.resource).path if self.oauth.config.resource else _route_path(scope)
        return CHALLENGE + f', resource_metadata="{metadata_url(base, path)}"'

    def _unauthorized(self, scope: Scope, id: str | int | float | None = None) -> Refusal:
        return _unauthorized(id, self._challenge(scope))

    def _check_endpoint(self, principal: Principal | None, endpoint: str) -> Refusal | None:
        if principal is None or principal.may_use(endpoint):
            return None
        where = "the root endpoint" if endpoint == ROOT_ENDPOINT else f"namespace '{endpoint}'"
        log.info("API key %s refused on %s: not among its namespaces", principal.name, where)
        return Refusal(403, INVALID_REQUEST, f"Forbidden: this API key may not use {where}",
                       challenge=CHALLENGE + ', error="insufficient_scope"')

    def _anonymous(self, principal: Principal | None) -> bool:
        return self.keyring.enabled and principal is None

    async def _post(self, scope: Scope, receive: Receive, send: Send, principal: Principal | None) -> None:
        if self._anonymous(principal) and not self.lazy:
            await self._unauthorized(scope).send(send)
            return
        body = await _read_body(scope, receive, self.max_body_bytes)
        if body is None:
            return  # the client went away before sending its whole body: nobody to answer
        if isinstance(body, Refusal):
            log.debug("refused a request body: %s", body.message)
            await body.send(send)
            return
        messages = parse_messages(body)
        if isinstance(messages, Refusal):
            log.debug("refused a request body: %s", messages.message)
            await messages.send(send)
            return
        if self._anonymous(principal) and any(message_needs_credentials(m, self.lazy) for m in messages):
            await self._unauthorized(scope, _single_id(messages)).send(send)
            return
        if body.lstrip()[:1] == b"[":
            # Checked after the credentials (an anonymous batch learns nothing more). MCP removed
            # JSON-RPC batches in 2025-06-18 and the SDK cannot read one: refused here, in words.
            await Refusal(400, INVALID_REQUEST, "Invalid Request: JSON-RPC batches are not supported by MCP "
                                                "(since 2025-06-18); send one message per request").send(send)
            return
        state = scope.setdefault("state", {})
        state[PRINCIPAL], state[MESSAGE] = principal, messages[0]
        replayed = _Replay(body, receive)
        try:
            await self.app(scope, replayed, send)
        finally:
            replayed.release()


def _unauthorized(id: str | int | float | None = None, challenge: str = CHALLENGE) -> Refusal:
    return Refusal(401, INVALID_REQUEST, "Unauthorized: this method needs an API key (Authorization: Bearer ...)",
                   id=id, challenge=challenge)


def _single_id(messages: Sequence[Mapping[str, Any]]) -> str | int | float | None:
    """The id to answer with: the request's own when there is one request, else null (a batch is
    refused as a whole, so no single id is the right one)."""
    if len(messages) == 1 and "method" in messages[0]:
        return messages[0].get("id")
    return None


def _route_path(scope: Scope) -> str:
    """The path as Starlette's router matches it: without the ``root_path`` the app is mounted at."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root):]
    return path


def _header_values(scope: Scope, name: bytes) -> list[str]:
    return [value.decode("utf-8", "surrogateescape") for key, value in scope["headers"] if key.lower() == name]


def _declared_length(scope: Scope) -> int | Refusal | None:
    values = {value.strip() for key, value in scope["headers"] if key.lower() == b"content-length"}
    if not values:
        return None
    if len(values) > 1 or not all(v.isascii() and v.isdigit() for v in values):
        return Refusal(400, INVALID_REQUEST, "Invalid Request: malformed Content-Length")
    return int(values.pop())


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | Refusal | None:
    """The whole body, read no further than ``limit`` or its own ``Content-Length``; None if the
    client disconnected first."""
    declared = _declared_length(scope)
    if isinstance(declared, Refusal):
        return declared
    if declared is not None and declared > limit:
        return _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return _too_large(limit)
        if declared is not None and size > declared:
            return Refusal(413, INVALID_REQUEST, "Request body longer than its Content-Length")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> Refusal:
    return Refusal(413, INVALID_REQUEST, f"Request body too large: the limit is {limit} bytes")


class _Replay:
    """``receive`` for the inner app: the body already read, as one message, then the client's own
    messages (a disconnect, which the handlers watch to cancel abandoned calls).

    Released when the request is over: the SDK keeps the last message a session received, and with
    it the Starlette request holding this ``receive``; holding uvicorn's ``receive`` in turn kept
    the whole HTTP exchange (its protocol, parser, transport and buffers) alive for as long as the
    session stayed idle, several KB per session. A released replay answers that the client is gone,
    as uvicorn itself does once a response is complete."""

    __slots__ = ("_body", "_receive")

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._body: bytes | None = body
        self._receive: Receive | None = receive

    async def __call__(self) -> Message:
        body = self._body
        if body is not None:
            self._body = None
            return {"type": "http.request", "body": body, "more_body": False}
        if self._receive is None:
            return {"type": "http.disconnect"}
        return await self._receive()

    def release(self) -> None:
        self._body = self._receive = None


def parse_messages(body: bytes) -> list[dict[str, Any]] | Refusal:
    """The JSON-RPC messages of a POST body (one, or a non-empty batch), or why it is refused."""
    try:
        data = _JSON.decode(body.decode("utf-8"))
    except UnicodeDecodeError:
        return Refusal(400, PARSE_ERROR, "Parse error: the body is not UTF-8")
    except json.JSONDecodeError as e:
        return Refusal(400, PARSE_ERROR, f"Parse error: {e.msg} at line {e.lineno} column {e.colno}")
    except ValueError as e:
        return Refusal(400, PARSE_ERROR, f"Parse error: {e}")
    except RecursionError:
        return _too_deep()
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and _deeper_than(data, MAX_DEPTH):
        return _too_deep()  # (fewer brackets than the limit cannot nest deeper: no walk needed)
    messages = data if isinstance(data, list) else [data]
    if not messages:
        return Refusal(400, INVALID_REQUEST, "Invalid Request: an empty batch")
    for i, message in enumerate(messages):
        if problem := shape_problem(message):
            where = f"message {i + 1} of the batch: " if isinstance(data, list) else ""
            return Refusal(400, INVALID_REQUEST, f"Invalid Request: {where}{problem}")
    return messages


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


_JSON = json.JSONDecoder(parse_constant=_not_json)  # one decoder: json.loads with a hook makes one per call


def _too_deep() -> Refusal:
    return Refusal(400, INVALID_REQUEST, f"Invalid Request: nested deeper than {MAX_DEPTH} levels")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than ``limit``, walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children: Iterable[Any] = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def shape_problem(message: Any) -> str | None:
    """What makes ``message`` not a JSON-RPC 2.0 request, notification or response; None if nothing."""
    if not isinstance(message, dict):
        return "a message must be a JSON object"
    if message.get("jsonrpc") != "2.0":
        return '"jsonrpc" must be "2.0"'
    if "params" in message and not isinstance(message["params"], (dict, list)):
        return '"params" must be an object or an array'
    if "method" in message:
        if not isinstance(message["method"], str):
            return '"method" must be a string'
        if "id" in message and not _is_id(message["id"]):
            return '"id" must be a string or a number'
        return None
    if ("result" in message) == ("error" in message):
        return 'a message needs a "method", or one of "result" and "error"'
    if "id" not in message or not (_is_id(message["id"]) or (message["id"] is None and "error" in message)):
        return 'a response needs the "id" of the request it answers'
    return None


def _is_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool))
