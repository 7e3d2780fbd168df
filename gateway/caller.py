"""The client request a forwarded request serves: where what the upstream sends back on the way goes.

An upstream working on a request may ask the client something (sampling, elicitation, roots),
report progress or log. None of that names the client on the wire, so every forwarded request
carries a ``Caller``: the downstream request's context, which knows the client's connection, its
capabilities, its progress token, its log level and the channel that reaches it (on Streamable
HTTP, the response stream of that very request).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST, LOG_LEVEL_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

log = logging.getLogger("mcpgw")
RELAY_WAIT = 5.0  # seconds an answer waits at most for the progress and notifications sent before it
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")

# What the client must have declared before the gateway passes it a request of each kind.
_CAPABILITY = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}


class ClientCannotAnswer(Exception):
    """The client of a request cannot receive a server-to-client request (the message says why)."""


class Caller:
    """One downstream request, as seen by the upstream request that serves it."""

    __slots__ = ("__weakref__", "_capabilities", "_level", "_relaying", "_relayed", "connection", "ctx", "endpoint",
                 "modern", "parked")

    def __init__(self, ctx: Any, endpoint: str, connection_level: str | None = None) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        # Identifies the client: one object per handshake-era session, per request on 2026-07-28.
        self.connection = connection_of(ctx)
        self.modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        self.parked: Any = None  # a ParkedCall: questions become an input-required result (parked.py)
        self._capabilities: dict[str, Any] | None = None
        self._relaying = 0  # progress and notifications of the upstream on their way to the client
        self._relayed: anyio.Event | None = None
        meta = ctx.meta or {}
        self._level = meta.get(LOG_LEVEL_META_KEY) if self.modern else (connection_level or "debug")

    @property
    def session_key(self) -> Any:
        """What owns an upstream session of its own (``session: per_client``): the client's
        connection, or on the stateless 2026-07-28 wire, which has none, this request."""
        return self if self.modern else self.connection

    @property
    def progress_token(self) -> Any:
        return (self.ctx.meta or {}).get("progress_token")

    @property
    def log_level(self) -> str | None:
        """The least severe level this client wants logs at for this request; None: no logs."""
        return self._level if self._level in LOG_LEVELS else None

    def wants_log(self, level: str) -> bool:
        wanted = self.log_level
        return wanted is not None and level in LOG_LEVELS and LOG_LEVELS.index(level) >= LOG_LEVELS.index(wanted)

    def capabilities(self) -> dict[str, Any]:
        """The client's declared capabilities, as on the wire (shared: not to be changed).

        Every request to a 2026-07-28 upstream carries them, so the dump is made once per declared
        object: once per handshake-era session, and for a 2026-07-28 client, which declares them
        with each request, once per request."""
        if self._capabilities is None:
            declared = self.ctx.session.client_capabilities
            self._capabilities = {} if declared is None else _dumped(declared, keep=not self.modern)
        return self._capabilities

    def has_capability(self, method: str) -> bool:
        capabilities = self.ctx.session.client_capabilities
        name = _CAPABILITY.get(method)
        return name is None or (capabilities is not None and getattr(capabilities, name, None) is not None)

    async def report_progress(self, progress: float, total: float | None, message: str | None) -> None:
        """Progress of the upstream request, sent with the client's own progress token."""
        with self._relaying_one():
            await self.ctx.session.report_progress(progress, total, message)

    @contextmanager
    def _relaying_one(self) -> Iterator[None]:
        self._relaying += 1
        try:
            yield
        finally:
            self._relaying -= 1
            if not self._relaying and self._relayed is not None:
                self._relayed.set()

    async def relayed(self) -> None:
        """Wait until what the upstream sent before its answer has been passed on to the client.

        The SDK hands each progress notification and each notification to a task of its own and
        wakes the request with its answer at once: the answer could overtake them, and a client
        drops progress that comes after the final answer (a stream even ends with the answer).
        Those tasks start before the request wakes, so whatever is on its way is counted here.
        Bounded: a client that stopped reading holds its relays, not the answer to its request."""
        if not self._relaying:
            return  # the usual case, with nothing to wait for: no timer either
        with anyio.move_on_after(RELAY_WAIT):
            while self._relaying:
                self._relayed = anyio.Event()
                await self._relayed.wait()

    async def ask(self, request: types.CreateMessageRequest | types.ElicitRequest | types.ListRootsRequest) -> Any:
        """Send ``request`` to the client on the channel of its request and return its typed answer.

        Raises ClientCannotAnswer when the client lacks the capability or has no back-channel;
        an error the client answered with is raised as the SDK's MCPError.
        """
        if not self.has_capability(request.method):
            raise ClientCannotAnswer(f"the client did not declare the '{_CAPABILITY[request.method]}' capability")
        if self.parked is not None:
            return await self.parked.ask(request)
        session = self.ctx.session
        if not session.can_send_request:
            raise ClientCannotAnswer("the client's request has no channel for server-to-client requests")
        return await session.send_request(request, _result_type(request),
                                          metadata=ServerMessageMetadata(related_request_id=self.ctx.request_id))

    async def answer(self, request: Any) -> Any:
        """The client's answer to ``request``, or the ErrorData the upstream is given instead (the
        upstream gets an answer whatever happened on the way)."""
        try:
            return await self.ask(request)
        except ClientCannotAnswer as exc:
            return types.ErrorData(code=INVALID_REQUEST, message=f"{request.method} cannot be passed on: {exc}")
        except MCPError as exc:
            return exc.error
        except Exception as exc:  # noqa: BLE001
            log.warning("%s to the client failed: %s", request.method, type(exc).__name__)
            return types.ErrorData(code=INTERNAL_ERROR, message=f"{request.method} failed on the way to the client")

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        """A log message of the upstream, on the channel of this request, if the client wants it."""
        if self.wants_log(params.level):
            await self.notify(types.LoggingMessageNotification(params=params))

    async def notify(self, notification: Any) -> None:
        """A notification about this request, on its channel."""
        with self._relaying_one():
            await self.ctx.session.send_notification(notification, related_request_id=self.ctx.request_id)


# id(capabilities object) -> (the object, its wire dump), for the capabilities of handshake-era
# sessions (each declares one object for its lifetime). Bounded: the oldest entries go first.
_DUMPED: dict[int, tuple[Any, dict[str, Any]]] = {}
_DUMPED_MAX = 1024


def _dumped(capabilities: Any, keep: bool) -> dict[str, Any]:
    kept = _DUMPED.get(id(capabilities))
    if kept is not None and kept[0] is capabilities:
        return kept[1]
    dump = capabilities.model_dump(by_alias=True, mode="json", exclude_none=True)
    if keep:
        if len(_DUMPED) >= _DUMPED_MAX:
            del _DUMPED[next(iter(_DUMPED))]
        _DUMPED[id(capabilities)] = (capabilities, dump)
    return dump


def _result_type(request: Any) -> type[Any]:
    if isinstance(request, types.CreateMessageRequest):
        tools = request.params.tools or request.params.tool_choice
        return types.CreateMessageResultWithTools if tools else types.CreateMessageResult
    if isinstance(request, types.ElicitRequest):
        return types.ElicitResult
    return types.ListRootsResult


def connection_of(ctx: Any) -> Any:
    """The connection of a request's client. The SDK hands handlers a per-request session whose
    connection has no public accessor: this is the one place that reads it."""
    return getattr(ctx.session, "_connection", None)
