"""Requests whose result the gateway only passes on, sent and answered as JSON objects.

``ClientSession.call_tool`` builds its request as models and dumps them; the result comes back as
a dict, is validated against the upstream's protocol version and dumped, then parsed into a
``CallToolResult``; the server's runner dumps that model, validates the dump against the
client's version and dumps it again. For a result the gateway passes on unread, that is six
pydantic passes and their glue where one does the work: checking the result against what the
client's protocol version promises and cutting it to that (docs/benchmarks.md, item 29: 14% of
the gateway's instructions per ``tools/call``).

``send`` puts the request through the session's own dispatcher, stamped and timed as
``ClientSession.send_request`` does it (the era's ``_meta`` and headers, the session's read
timeout, the progress callback), and returns the result as it came (``WireResult``), or the SDK's
``InputRequiredResult`` when the server asks for input first: the gateway acts on those.
``WireResult.shaped`` is the result for a client of a given version, by the SDK's own function for
that (``serialize_server_result``, what the runner would do); the handler raises it as an
``Answer``, so the runner does not shape it twice.

What the typed path did and this one does not: the SDK client checked a tool's
``structuredContent`` against the ``outputSchema`` it listed. The client gets the same schema from
the gateway's list and checks it itself, as the spec asks of clients; the gateway passes results
on, it does not judge them. A session without the private parts used here (another SDK release)
takes ``ClientSession.send_request``, public and slower, to the same result.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Callable, get_args

import mcp_types as types
from mcp.shared.dispatcher import CallOptions, ProgressFnT
from mcp_types import LOG_LEVEL_META_KEY, SERVER_INFO_META_KEY
from mcp_types import methods as sdk_methods
from mcp_types.version import is_version_at_least
from pydantic import TypeAdapter, ValidationError

_AS_SENT = TypeAdapter(dict[str, Any])
_RESPONSES = TypeAdapter(types.InputResponses)
# The typed request of each method sent here: only for a session without the private parts.
_TYPED = {"tools/call": (types.CallToolRequest, types.CallToolRequestParams),
          "prompts/get": (types.GetPromptRequest, types.GetPromptRequestParams),
          "resources/read": (types.ReadResourceRequest, types.ReadResourceRequestParams)}


@dataclass(slots=True)
class Request:
    """What to ask the upstream: ``params`` as on the wire, without the ``_meta`` and the
    input-required fields the forwarding adds to each attempt."""

    method: str
    params: dict[str, Any]
    progress: ProgressFnT | None = None

    def attempt(self, responses: types.InputResponses | None, state: str | None,
                meta: dict[str, Any] | None) -> dict[str, Any]:
        """The params of one attempt: with the client's answers and the server's state, when retried."""
        params = dict(self.params)
        if responses is not None:
            params["inputResponses"] = _RESPONSES.dump_python(responses, by_alias=True, mode="json",
                                                              exclude_none=True)
        if state is not None:
            params["requestState"] = state
        if meta is not None:
            params["_meta"] = meta
        return params


def present(**fields: Any) -> dict[str, Any]:
    """Wire params from keyword fields, those that are None left out (as the SDK's dump does)."""
    return {key: value for key, value in fields.items() if value is not None}


@dataclass(slots=True)
class WireResult:
    """A result as the upstream sent it (its ``serverInfo`` stamp taken out: clients are answered
    by the gateway, which stamps its own), and the protocol version the upstream speaks."""

    method: str
    result: dict[str, Any]
    version: str

    def shaped(self, version: str) -> dict[str, Any]:
        """The result for a client of ``version``: checked against that version's schema and cut to
        it, as the server's runner shapes a handler's result. A server older than the client is
        held to its own version first (fields a later revision added are not its to send: the
        SDK's client drops them too). Fields the client's version requires and the result lacks
        (an older server could not send them) take the defaults the SDK's models give them
        (``resultType`` complete, no caching), as the typed path read them. Raises pydantic's
        ``ValidationError`` for a result that breaks the schema even so."""
        result = self.result
        if self.version != version and not is_version_at_least(self.version, version):
            result = _dumped(_complete(self.method, self.version), result)
        else:
            try:
                return _dumped(_complete(self.method, version), result)
            except ValidationError:
                pass  # perhaps only fields the models give defaults to are missing
        return _dumped(_complete(self.method, version), _dumped(_EVERY_VERSION[self.method], result))


# The SDK's model of each method's result, with every version's fields and their defaults.
_EVERY_VERSION = {"tools/call": TypeAdapter(types.CallToolResult), "prompts/get": TypeAdapter(types.GetPromptResult),
                  "resources/read": TypeAdapter(types.ReadResourceResult)}


def _dumped(adapter: TypeAdapter[Any], result: dict[str, Any]) -> dict[str, Any]:
    return adapter.dump_python(adapter.validate_python(result, by_name=False), by_alias=True, mode="json",
                               exclude_none=True)


@cache
def _complete(method: str, version: str) -> TypeAdapter[Any]:
    """The schema of ``version`` for a complete result of ``method``: the SDK's surface for it
    without its input-required member (those are told apart on arrival). In the union, a result
    missing a required field could pass as an input-required one and come out as nothing but its
    ``resultType``."""
    surface = sdk_methods.SERVER_RESULTS[(method, version)]
    members = [member for member in get_args(surface) or (surface,) if member.__name__ != "InputRequiredResult"]
    return TypeAdapter(members[0])


def without_headers(stamp: Callable[[dict[str, Any], CallOptions], None]) -> Callable[[dict[str, Any], CallOptions], None]:
    """A connected session's ``stamp`` for a transport without HTTP headers (stdio): the ``_meta`` the
    session's stamp puts in every request, without the headers it works out for each (the
    protocol version, the method, the tool's name encoded, the tool's ``Mcp-Param-*`` values from
    its schema), which a pipe has nowhere to send: 1% of a call's instructions. The session's stamp
    is asked once for what its ``_meta`` holds (fixed when the session connected: protocol
    version, client info and capabilities, the log level a request may override). For a session
    that is connected: the negotiation, whose requests the SDK stamps otherwise, is over."""
    probe: dict[str, Any] = {"method": "tools/call", "params": {}}
    stamp(probe, {})
    meta = dict(probe["params"].get("_meta") or {})
    level = meta.pop(LOG_LEVEL_META_KEY, None)

    def stamp_meta(data: dict[str, Any], opts: CallOptions) -> None:
        if meta or level is not None:
            request_meta = data.setdefault("params", {}).setdefault("_meta", {})
            request_meta.update(meta)
            if level is not None:
                request_meta.setdefault(LOG_LEVEL_META_KEY, level)

    return stamp_meta


async def send(client: Any, request: Request, params: dict[str, Any]) -> WireResult | types.InputRequiredResult:
    """``request`` sent on ``client``'s session with ``params``; its result as it came, or the
    server's input-required result as the SDK's model. Errors are the session's own (``MCPError``
    for an error answer, a timeout, a closed connection)."""
    session = client.session
    version = session.protocol_version or "2025-11-25"  # as the session: before a handshake, or stateless
    try:
        stamp, dispatcher, timeout = session._stamp, session._dispatcher, session._session_read_timeout_seconds
    except AttributeError:
        result = await _typed(session, request, params)
    else:
        data = {"method": request.method, "params": params}
        opts: CallOptions = {}
        stamp(data, opts)
        if timeout is not None:
            opts["timeout"] = timeout
        if request.progress is not None:
            opts["on_progress"] = request.progress
        result = await dispatcher.send_raw_request(request.method, data["params"], opts)
    if sdk_methods.is_input_required(result):
        sdk_methods.validate_server_result(request.method, version, result)
        return types.InputRequiredResult.model_validate(result, by_name=False)
    ttl = result.get("ttlMs")  # a negative cache hint is read as 0 (the 2026-07-28 caching SHOULD), as the SDK does
    if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl < 0:
        result["ttlMs"] = 0
    meta = result.get("_meta")
    if isinstance(meta, dict) and SERVER_INFO_META_KEY in meta:
        del meta[SERVER_INFO_META_KEY]
        if not meta:
            del result["_meta"]
    return WireResult(request.method, result, version)


async def _typed(session: Any, request: Request, params: dict[str, Any]) -> dict[str, Any]:
    """The same request through the session's public ``send_request``: built as its typed
    request, the result checked against the upstream's version by the session and kept a dict."""
    request_type, params_type = _TYPED[request.method]
    typed = request_type(params=params_type.model_validate(params, by_name=False))
    return await session.send_request(typed, _AS_SENT, progress_callback=request.progress)
