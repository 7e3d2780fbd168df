"""Forwarding one client request to an upstream, and everything that comes back on the way.

``forward`` sends a request to the route's upstream, with retries for what is safe to repeat.
``interactive`` is for the requests an upstream may answer with questions for the client
(tools/call, prompts/get, resources/read): it bridges the two protocol eras both ways (see the
table in docs/protocol.md), cancels the upstream request when the client goes away, and hands
back the result in the client's wire form (``upstreams/wire.py``).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, TypeVar

import anyio
import mcp_types as types
from mcp.client._input_required import run_input_required_driver
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, LOG_LEVEL_META_KEY, SERVER_INFO_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from gateway.caller import Caller
from gateway.errors import UpstreamInvalid, UpstreamUnavailable
from gateway.parked import PREFIX as PARKED
from gateway.parked import ParkedCall, ParkedCalls
from gateway.routing import Route
from gateway.runtime import Gateway, Snapshot
from gateway.security.front_door import session_id_of
from gateway.sessions import SessionRegistry
from gateway.sse import RequestDisconnect
from gateway.upstreams import wire
from gateway.upstreams.connection import CALLER_CAPABILITIES

T = TypeVar("T")
RESUME_GRACE = 10.0  # seconds a client whose stream dropped has to come back before its calls are cancelled


async def forward(snap: Snapshot, route: Route, timeout: float, repeatable: bool,
                   operation: Callable[[Any], Awaitable[T]], caller: Caller | None = None) -> T:
    """Send to the route's upstream. A request that is safe to repeat and failed in transit (not one
    that timed out: it may have done its work) is sent again, up to ``retry.attempts`` tries."""
    upstream = snap.upstreams.get(route.server)
    if upstream is None:
        raise UpstreamUnavailable(route.server, f"server '{route.server}' is not running")
    retry = upstream.config.retry
    attempts = retry.attempts if repeatable else 1
    for attempt in range(1, attempts + 1):
        try:
            result = await upstream.request(operation, timeout, caller)
            if caller is not None:
                await caller.relayed()  # the answer never overtakes what the upstream sent before it
            return _unstamped(result)
        except UpstreamUnavailable:
            if attempt == attempts or upstream.breaker.opened:
                raise
        await anyio.sleep(min(retry.max_backoff, retry.backoff * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")


async def interactive(gateway: Gateway, snap: Snapshot, route: Route, caller: Caller, params: Any,
                       timeout: float, repeatable: bool, request: wire.Request) -> Any:
    """A request the upstream may answer with "input required" (tools/call, prompts/get,
    resources/read). A 2026-07-28 client gets that result as it is and answers it itself, its
    ``requestState`` passed back byte for byte; for a handshake-era client the gateway asks the
    client each question, on the channel of its request, and retries with the answers. A
    handshake-era upstream's questions to a 2026-07-28 client go through a parked call.

    The upstream's result comes back as the client's wire form (a dict, for the handler to raise
    as an ``Answer``); what the gateway made itself (an input-required result) as a model. A
    result that breaks the client's protocol version is an ``UpstreamInvalid``."""
    responses, state = params.input_responses, params.request_state

    def operation(responses: Any, state: Any) -> Callable[[Any], Awaitable[Any]]:
        return lambda client: wire.send(client, request, request.attempt(responses, state,
                                                                          _upstream_meta(client, caller)))

    result = await _unless_client_leaves(caller, gateway.sessions, lambda: _interactive_steps(
        gateway.parked, snap, route, caller, responses, state, timeout, repeatable, operation))
    if not isinstance(result, wire.WireResult):
        return result
    try:
        return result.shaped(caller.ctx.protocol_version)
    except ValidationError as exc:
        problem = exc.errors()[0]  # where and what, never the value: results may carry anything
        loc = problem["loc"]
        if loc and isinstance(loc[0], str) and loc[0][:1].isupper():
            loc = loc[1:]  # the member of the result union it was checked as, not a field
        where = ".".join(str(part) for part in loc) or "result"
        raise UpstreamInvalid(route.server, f"server '{route.server}' answered {request.method} with a result "
                                            f"that breaks the protocol ({where}: {problem['msg']})") from exc


async def _interactive_steps(parked_calls: ParkedCalls, snap: Snapshot, route: Route, caller: Caller, responses: Any,
                             state: Any, timeout: float, repeatable: bool, operation: Callable[[Any, Any], Any]) -> Any:
    if caller.modern:
        if state is not None and state.startswith(PARKED):
            parked = parked_calls.resume(state)
            parked.caller.ctx = caller.ctx  # progress and logs go to the request that is waiting now
            parked.answer(responses)
            return await _collect(parked)
        upstream = snap.upstreams.get(route.server)
        if upstream is not None and upstream.ready and not upstream.modern:

            async def call(parked: ParkedCall) -> Any:
                caller.parked, parked.caller = parked, caller
                return await forward(snap, route, timeout, repeatable, operation(responses, state), caller)

            return await _collect(parked_calls.start(call))

    result: Any = await forward(snap, route, timeout, repeatable, operation(responses, state), caller)
    if isinstance(result, types.InputRequiredResult) and not caller.modern:
        result = await run_input_required_driver(
            result, dispatch=lambda key, request: caller.answer(request),
            retry=lambda responses, state: forward(snap, route, timeout, False, operation(responses, state), caller))
    return result


async def _unless_client_leaves(caller: Caller, sessions: SessionRegistry,
                                work: Callable[[], Awaitable[T]]) -> T:
    """``work()``, cancelled when its client leaves; the upstream request is then cancelled too (the
    SDK sends ``notifications/cancelled`` upstream). The SDK leaves a handshake-era handler running
    after its client has gone, so the gateway watches the request's connection: once the request
    has been read, the only message it can still deliver is the disconnect.

    Who watches: a 2026-07-28 call answered as a stream is watched by the SDK, which cancels the
    handler itself; a handshake-era one by its POST's answer (``sse.GatewayTransport``), which tells
    this call through ``RequestDisconnect``; a call answered with JSON (``json_response``) by a
    task of its own here.

    A call of a stateful handshake-era session answered on a resumable SSE stream is different: a
    dropped stream is not the client leaving (the spec says so), the client reconnects with
    ``Last-Event-ID`` and the answer waits in the event store. It is cancelled when the session
    ends (DELETE), or when the stream dropped and the session shows no sign of life within
    ``RESUME_GRACE``: a client that vanished does not keep its calls running. What is cancelled
    then is the request's own scope where its POST's task handles it (``RequestDisconnect.call``,
    gateway/lane.py: the request settles as a cancelled one), else a scope entered here.
    """
    request = getattr(caller.ctx, "request", None)
    if request is None:  # stdio: a client leaving ends the gateway, which cancels what is in flight
        return await work()
    disconnect = RequestDisconnect.of(request.scope)
    streamed = disconnect.streamed  # as the listener answers, set at start (a reload cannot change it)
    if streamed and caller.modern:
        return await work()
    session_id = session_id_of(request.scope)
    resumes = bool(session_id) and streamed and not caller.modern
    with sessions.call_of_session(session_id, disconnect.call) if resumes else anyio.CancelScope() as call:

        async def on_leave() -> None:
            if not resumes or not await sessions.returns_within(session_id, RESUME_GRACE):
                call.cancel()

        if streamed:
            unregister = disconnect.on_leave(on_leave)
            try:
                return await work()
            finally:
                unregister()
        return await _watching(request.receive, on_leave, work)
    raise MCPError(INTERNAL_ERROR, "the client left before the answer")  # an answer to nobody


async def _watching(receive: Any, on_leave: Callable[[], Awaitable[None]], work: Callable[[], Awaitable[T]]) -> T:
    """``work()`` with a task of its own watching ``receive`` for the disconnect."""
    outcome: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            await on_leave()

        tg.start_soon(watch)
        try:
            outcome["result"] = await work()
        except Exception as exc:  # noqa: BLE001 - re-raised below, outside the task group (unwrapped)
            outcome["error"] = exc
        tg.cancel_scope.cancel()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


async def _collect(parked: ParkedCall) -> Any:
    """The parked call's next step; a client that gives up on its request gives up the call."""
    try:
        return await parked.next()
    except anyio.get_cancelled_exc_class():
        parked.cancel()
        raise


def _upstream_meta(client: Any, caller: Caller) -> dict[str, Any] | None:
    """Per-request ``_meta`` for the upstream. On the 2026-07-28 wire the request declares the
    calling client's capabilities (see ``connection._Outgoing``) and opts into logs at the level
    the client wants."""
    if client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return None
    meta = {CALLER_CAPABILITIES: caller.capabilities()}
    if caller.log_level is not None:
        meta[LOG_LEVEL_META_KEY] = caller.log_level
    return meta


def _unstamped(result: T) -> T:
    """The result without the upstream's ``serverInfo`` stamp in ``_meta``: clients are answered by
    the gateway, which stamps its own where the protocol version asks for one."""
    meta = getattr(result, "meta", None)
    if not meta or SERVER_INFO_META_KEY not in meta:
        return result
    rest = {key: value for key, value in meta.items() if key != SERVER_INFO_META_KEY}
    return result.model_copy(update={"meta": rest or None})  # type: ignore[attr-defined]
