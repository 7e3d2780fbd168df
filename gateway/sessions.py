"""Telling downstream clients about changes (``notifications/*/list_changed``), in both eras.

Handshake-era (2025-11-25) connections get the notifications on their standing channel. The SDK
keeps no public registry of them, so the gateway keeps its own: every request registers its
connection (weakly) under its endpoint. The handler context only carries a per-request
``ServerSession``, whose connection the SDK keeps in ``_connection`` with no public accessor; that
one private read is confined here. 2026-07-28 clients have no standing channel: they open
``subscriptions/listen`` streams, served by the SDK's ``ListenHandler`` from one event bus per
endpoint, on which the same changes are published.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import anyio
from mcp.server.subscriptions import (InMemorySubscriptionBus, ListenHandler, PromptsListChanged,
                                      ResourcesListChanged, ServerEvent, ToolsListChanged)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

log = logging.getLogger("mcpgw")

SEND_TIMEOUT = 5.0
_SENDERS = {"tools": "send_tool_list_changed", "prompts": "send_prompt_list_changed",
            "resources": "send_resource_list_changed"}
_EVENTS: dict[str, ServerEvent] = {"tools": ToolsListChanged(), "prompts": PromptsListChanged(),
                                   "resources": ResourcesListChanged()}


class SessionRegistry:
    def __init__(self) -> None:
        self._by_endpoint: dict[str, weakref.WeakSet[Any]] = {}
        self._buses: dict[str, InMemorySubscriptionBus] = {}

    def count(self) -> int:
        return sum(len(connections) for connections in self._by_endpoint.values())

    def listen_handler(self, endpoint: str) -> ListenHandler:
        """The ``subscriptions/listen`` handler of ``endpoint`` (2026-07-28 clients)."""
        return ListenHandler(self._buses.setdefault(endpoint, InMemorySubscriptionBus()))

    def seen(self, endpoint: str, ctx: Any) -> None:
        """Remember the connection of a request (handshake-era connections only)."""
        connection = getattr(ctx.session, "_connection", None)
        if connection is None or ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return
        self._by_endpoint.setdefault(endpoint, weakref.WeakSet()).add(connection)

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
