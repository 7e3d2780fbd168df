"""Telling downstream clients about changes (``notifications/*/list_changed``), in both eras.

Handshake-era (2025-11-25) connections get the notifications on their standing channel. The SDK
keeps no public registry of them, so the gateway keeps its own: every request registers its
connection (weakly) under its endpoint (``caller.connection_of``). 2026-07-28 clients have no standing channel: they open
``subscriptions/listen`` streams, served by the SDK's ``ListenHandler`` from one event bus per
endpoint, on which the same changes are published.

The registry also keeps what the SDK does not: each handshake-era client's ``logging/setLevel``
level, by which log messages of an upstream as a whole (not of one request) are filtered.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from typing import Any

import anyio
import mcp_types as types
from mcp.server.subscriptions import (InMemorySubscriptionBus, ListenHandler, PromptsListChanged,
                                      ResourcesListChanged, ResourceUpdated, ServerEvent, ToolsListChanged)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway.caller import LOG_LEVELS, connection_of

log = logging.getLogger("mcpgw")

SEND_TIMEOUT = 5.0
MAX_SESSION_OWNERS = 100_000  # sessions remembered with their owner (the oldest are forgotten)
_SENDERS = {"tools": "send_tool_list_changed", "prompts": "send_prompt_list_changed",
            "resources": "send_resource_list_changed"}
_EVENTS: dict[str, ServerEvent] = {"tools": ToolsListChanged(), "prompts": PromptsListChanged(),
                                   "resources": ResourcesListChanged()}


class SessionRegistry:
    def __init__(self) -> None:
        self._by_endpoint: dict[str, weakref.WeakSet[Any]] = {}
        # The connections already in ``_by_endpoint``, by (endpoint, id): see ``seen``.
        self._known: dict[tuple[str, int], weakref.ref[Any]] = {}
        self._buses: dict[str, InMemorySubscriptionBus] = {}
        self._levels: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._calls: dict[str, set[anyio.CancelScope]] = {}
        self._returns: dict[str, anyio.Event] = {}
        self._owners: OrderedDict[str, str | None] = OrderedDict()

    def count(self) -> int:
        return sum(len(connections) for connections in self._by_endpoint.values())

    def listen_handler(self, endpoint: str) -> ListenHandler:
        """The ``subscriptions/listen`` handler of ``endpoint`` (2026-07-28 clients)."""
        return ListenHandler(self._buses.setdefault(endpoint, InMemorySubscriptionBus()))

    def seen(self, endpoint: str, ctx: Any) -> None:
        """Remember the connection of a request (handshake-era connections only). A connection
        already remembered is recognised by its identity: adding it to the ``WeakSet`` again made
        and dropped a weak reference per request, 1% of a call's instructions."""
        connection = connection_of(ctx)
        if connection is None or ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return
        key = (endpoint, id(connection))
        known = self._known.get(key)
        if known is not None and known() is connection:
            return
        self._by_endpoint.setdefault(endpoint, weakref.WeakSet()).add(connection)
        self._known[key] = weakref.ref(connection, lambda ref: self._forget(key, ref))

    def _forget(self, key: tuple[str, int], ref: weakref.ref[Any]) -> None:
        """A remembered connection is gone: its entry goes, unless a newer one took its id."""
        if self._known.get(key) is ref:
            del self._known[key]

    def call_of_session(self, session_id: str, scope: anyio.CancelScope | None = None) -> "_SessionCall":
        """A call of a Streamable HTTP session, cancelled when the client ends the session: by
        ``scope`` (the request's own, which ends it), else by a cancel scope entered for it here."""
        return _SessionCall(self._calls, session_id, scope)

    def session_active(self, session_id: str) -> None:
        """A request of the session arrived (a client resuming a dropped stream, say)."""
        returned = self._returns.pop(session_id, None)
        if returned is not None:
            returned.set()

    async def returns_within(self, session_id: str, grace: float) -> bool:
        """Whether the session shows a sign of life within ``grace`` seconds."""
        returned = self._returns.setdefault(session_id, anyio.Event())
        with anyio.move_on_after(grace):
            await returned.wait()
            return True
        return False

    def bind_session(self, session_id: str, owner: str | None) -> None:
        """The session belongs to the credentials (key or token name) that opened it, if any."""
        self._owners[session_id] = owner
        while len(self._owners) > MAX_SESSION_OWNERS:
            self._owners.popitem(last=False)

    def may_use_session(self, session_id: str, who: str | None) -> bool:
        """A session opened with one key is not usable with another. A session opened without
        credentials (lazy auth: discovery first) belongs to the first key that uses it."""
        owner = self._owners.get(session_id)
        if owner is None and who is not None and session_id in self._owners:
            self._owners[session_id] = who
        return owner_admits(owner, who)

    def session_ended(self, session_id: str) -> None:
        """The client ended its session (HTTP DELETE): its calls in flight are cancelled."""
        for scope in self._calls.pop(session_id, ()):
            scope.cancel()
        self._returns.pop(session_id, None)
        self._owners.pop(session_id, None)

    def set_level(self, ctx: Any, level: str) -> None:
        connection = connection_of(ctx)
        if connection is not None:
            self._levels[connection] = level

    def level(self, ctx: Any) -> str | None:
        """The level the client of ``ctx`` set with ``logging/setLevel``, if it did."""
        connection = connection_of(ctx)
        return self._levels.get(connection) if connection is not None else None

    def most_verbose_level(self) -> str:
        """The least severe level any connected client wants (what the upstreams must send); a
        client that set no level wants everything."""
        connections = {c for cs in self._by_endpoint.values() for c in cs}
        return min((self._levels.get(c, "debug") for c in connections), key=LOG_LEVELS.index, default="debug")

    async def server_log(self, endpoints: list[str], params: types.LoggingMessageNotificationParams) -> None:
        """A log message of an upstream as a whole, to each client of ``endpoints`` whose level
        admits it (a client that set no level gets every message, as from a server directly)."""
        if params.level not in LOG_LEVELS:
            return
        severity = LOG_LEVELS.index(params.level)
        targets = {c for e in endpoints for c in self._by_endpoint.get(e, ())
                   if LOG_LEVELS.index(self._levels.get(c, "debug")) <= severity}
        await _each(targets, lambda c: c.log(params.level, params.data, params.logger), "a log message")

    async def resource_updated(self, endpoints: list[str], uri: str, connections: list[Any]) -> None:
        """``notifications/resources/updated`` to the subscribed ``connections`` and to the listen
        streams of ``endpoints`` (which filter by the URIs each stream asked for)."""
        for endpoint in endpoints:
            bus = self._buses.get(endpoint)
            if bus is not None:
                await bus.publish(ResourceUpdated(uri=uri))
        await _each(connections, lambda c: c.send_resource_updated(uri), "a resource update")

    async def announce(self, endpoint: str, kinds: list[str]) -> None:
        """One list_changed per kind to every live connection and listen stream of ``endpoint``."""
        bus = self._buses.get(endpoint)
        for kind in kinds:
            if bus is not None:
                await bus.publish(_EVENTS[kind])
        sessions = self._by_endpoint.get(endpoint)
        log.debug("announcing %s changes on endpoint %r to %d session(s)", "/".join(kinds), endpoint, len(sessions or ()))
        for session in list(sessions or ()):
            for kind in kinds:
                try:
                    with anyio.fail_after(SEND_TIMEOUT):
                        await getattr(session, _SENDERS[kind])()
                except Exception as exc:  # noqa: BLE001 - a gone client must not stop the others being told
                    log.debug("could not tell a session about a change (%s); forgetting it", type(exc).__name__)
                    sessions.discard(session)  # type: ignore[union-attr]
                    break


class _SessionCall:
    """``SessionRegistry.call_of_session``: the call's scope registered under its session while the
    call runs (a class, not a generator: every call of a session passes here)."""

    __slots__ = ("_calls", "_session_id", "_scope", "_owned")

    def __init__(self, calls: dict[str, set[anyio.CancelScope]], session_id: str,
                 scope: anyio.CancelScope | None) -> None:
        self._calls, self._session_id = calls, session_id
        self._owned = scope is None  # a scope made here is entered and left here
        self._scope = anyio.CancelScope() if scope is None else scope

    def __enter__(self) -> anyio.CancelScope:
        scope = self._scope
        if self._owned:
            scope.__enter__()
        self._calls.setdefault(self._session_id, set()).add(scope)
        return scope

    def __exit__(self, *exc_info: Any) -> bool:
        calls = self._calls.get(self._session_id)
        if calls is not None:
            calls.discard(self._scope)
            if not calls:
                del self._calls[self._session_id]
        return bool(self._scope.__exit__(*exc_info)) if self._owned else False


def owner_admits(owner: str | None, who: str | None) -> bool:
    """May ``who`` use a session opened by ``owner``? Yes when either is anonymous (lazy auth:
    discovery needs no key, and a session opened without one goes to the first key that uses it)."""
    return owner is None or who is None or who == owner


async def _each(connections: Any, send: Any, what: str) -> None:
    """``send(connection)`` for each, bounded; a client gone or stuck does not stop the others."""
    for connection in list(connections):
        try:
            with anyio.fail_after(SEND_TIMEOUT):
                await send(connection)
        except Exception as exc:  # noqa: BLE001
            log.debug("could not send %s to a client (%s)", what, type(exc).__name__)
