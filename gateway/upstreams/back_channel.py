"""What an upstream sends that is not an answer: requests for a client, logs and notifications.

An upstream's sampling, elicitation and roots requests carry nothing that names the client
request they serve. On a session of its own (``session: per_client``) there is only one client;
on a shared session the gateway knows which client requests are in flight on it, and a request
goes to their client when they all come from one client. When calls from several clients are in
flight the request is refused with an error that says so: sending it to a guessed client could
show one user's prompt to another. (On the 2026-07-28 wire the question does not arise: the
upstream returns an input-required result in answer to the very request, see ``interactive``.)

Logs follow the same attribution; a log no client request explains is a log of the server as a
whole and goes to every client of an endpoint serving it that asked for that level. Change
notifications (lists, resources) go to the hooks the gateway gave.
"""

from __future__ import annotations

import itertools
import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import mcp_types as types
from mcp_types import INVALID_REQUEST

from gateway.caller import Caller

log = logging.getLogger("mcpgw.upstream")

_LIST_CHANGED = {
    types.ToolListChangedNotification: "tools",
    types.PromptListChangedNotification: "prompts",
    types.ResourceListChangedNotification: "resources",
}


async def _ignore(*args: Any) -> None:
    return None


@dataclass(frozen=True, slots=True)
class DownstreamHooks:
    """How an upstream reaches the gateway's clients for what no single request explains."""

    resource_updated: Callable[[str, str], Awaitable[None]] = _ignore  # (server, uri)
    server_log: Callable[[str, types.LoggingMessageNotificationParams], Awaitable[None]] = _ignore  # (server, params)
    subscribed_uris: Callable[[str], list[str]] = lambda server: []  # to subscribe again after a reconnect


class _Serving:
    """``BackChannel.serving`` for one request."""

    __slots__ = ("_callers", "_key", "_caller")

    def __init__(self, callers: dict[int, Caller], key: int, caller: Caller) -> None:
        self._callers, self._key, self._caller = callers, key, caller

    def __enter__(self) -> None:
        self._callers[self._key] = self._caller

    def __exit__(self, *exc_info: object) -> None:
        del self._callers[self._key]


_NOT_SERVING = nullcontext()


class BackChannel:
    """The client callbacks of one upstream's sessions, and the requests in flight on them."""

    def __init__(self, server: str, hooks: DownstreamHooks, lists_changed: Callable[[str], None]) -> None:
        self.server = server
        self.hooks = hooks
        self._lists_changed = lists_changed
        self._callers: dict[int, Caller] = {}
        self._ids = itertools.count()

    def serving(self, caller: Caller | None) -> AbstractContextManager[None]:
        """Mark ``caller``'s request as in flight on this upstream while the block runs (a class,
        not a generator: every forwarded request passes here)."""
        return _NOT_SERVING if caller is None else _Serving(self._callers, next(self._ids), caller)

    def client_options(self, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        """The SDK ``Client`` callbacks: with them the gateway declares sampling, elicitation and
        roots to the upstream, whose requests are then passed to the client that can answer. With
        ``capabilities`` (a session of one client's own), only what that client declared."""
        options: dict[str, Any] = {"logging_callback": self._logging, "message_handler": self._message}
        for capability, option, callback in (("sampling", "sampling_callback", self._sampling),
                                             ("elicitation", "elicitation_callback", self._elicitation),
                                             ("roots", "list_roots_callback", self._list_roots)):
            if capabilities is None or capability in capabilities:
                options[option] = callback
        return options

    def caller(self) -> Caller | None:
        """The client request an upstream's request or log belongs to, if it is certain."""
        callers = list(self._callers.values())
        if not callers:
            return None
        first = callers[-1]
        if first.connection is not None and all(c.connection is first.connection for c in callers):
            return first
        return first if len(callers) == 1 else None

    async def _ask(self, request: Any) -> Any:
        method = request.method
        caller = self.caller()
        if caller is None:
            why = (f"calls from {len(self._callers)} different client requests are in flight on it; set "
                   f"'session: per_client' for server '{self.server}' to give each client its own session"
                   if self._callers else "no client request is in flight on it")
            log.warning("refused %s: %s", method, why, extra={"server": self.server})
            return types.ErrorData(code=INVALID_REQUEST, message=f"mcpgw cannot tell which client {method} is for: {why}")
        return await caller.answer(request)

    async def _sampling(self, context: Any, params: types.CreateMessageRequestParams) -> Any:
        return await self._ask(types.CreateMessageRequest(params=params))

    async def _elicitation(self, context: Any, params: types.ElicitRequestParams) -> Any:
        return await self._ask(types.ElicitRequest(params=params))

    async def _list_roots(self, context: Any) -> Any:
        return await self._ask(types.ListRootsRequest())

    async def _logging(self, params: types.LoggingMessageNotificationParams) -> None:
        caller = self.caller()
        try:
            if caller is not None:
                await caller.log(params)
            else:
                await self.hooks.server_log(self.server, params)
        except Exception as exc:  # noqa: BLE001 - a client gone mid-call must not break the upstream's session
            log.debug("a log message could not be passed on (%s)", type(exc).__name__, extra={"server": self.server})

    async def _message(self, message: Any) -> None:
        if isinstance(message, Exception):
            log.debug("transport reported %s", type(message).__name__, extra={"server": self.server})
            return
        kind = _LIST_CHANGED.get(type(message))
        if kind is not None:
            self._lists_changed(kind)
        elif isinstance(message, types.ResourceUpdatedNotification):
            await self.hooks.resource_updated(self.server, str(message.params.uri))
        elif isinstance(message, types.ElicitCompleteNotification):
            await self._to_caller(message)  # a URL-mode elicitation finished: its client is told

    async def _to_caller(self, notification: Any) -> None:
        caller = self.caller()
        if caller is None:
            log.debug("%s with no client to give it to", notification.method, extra={"server": self.server})
            return
        try:
            await caller.notify(notification)
        except Exception as exc:  # noqa: BLE001 - a client gone mid-call must not break the upstream's session
            log.debug("%s could not be passed on (%s)", notification.method, type(exc).__name__,
                      extra={"server": self.server})
