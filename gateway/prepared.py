"""List results in wire form, made once per routing table and protocol version.

The SDK shapes every handler result for the wire on every request (``ServerRunner._serialize``):
it dumps the model, validates the dump against the protocol version's result model and dumps that
again. For a list of thousands of tools that is nearly all of the gateway's time, per request, for
an answer that only changes when the routing table does. So the table keeps its list results
(:class:`PreparedLists`), and the wire dict of each is made the first time a client of a protocol
version asks, by the same public function the SDK uses (``serialize_server_result``), and kept for
as long as that table is in service: a new table (a reload, an upstream's list changing) starts
empty, so a prepared answer is never stale.

The answer bypasses only that shaping. The list handlers still run inside the SDK's request path
(its params validation, the initialization gate, the gateway's rate limits, metrics and session
registry) and end by raising :class:`Answer`; :class:`AnswerMiddleware`, the innermost
``Server.middleware``, turns it into the result. The runner trusts a result a middleware returns
and only copies its top level, so the prepared dict is shared by every answer and never mutated.
What the runner would add, this adds too: ``resultType`` and the ``serverInfo`` stamp on the
2026-07-28 wire. (Cache hints would be the third; the gateway sets none.)
"""

from __future__ import annotations

from typing import Any, Mapping

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp_types import SERVER_INFO_META_KEY
from mcp_types.methods import serialize_server_result
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

LIST_METHODS = ("tools/list", "prompts/list", "resources/list", "resources/templates/list")


class PreparedLists:
    """The list results of one routing table, and their wire dicts by (method, protocol version)."""

    __slots__ = ("_results", "_wire")

    def __init__(self, results: Mapping[str, BaseModel]) -> None:
        self._results = dict(results)
        self._wire: dict[tuple[str, str], dict[str, Any]] = {}

    def wire(self, method: str, version: str) -> dict[str, Any]:
        """The result of ``method`` as the SDK would put it on the wire for ``version`` (before the
        ``serverInfo`` stamp). Shared: callers must not change it."""
        key = (method, version)
        found = self._wire.get(key)
        if found is None:
            dumped = self._results[method].model_dump(by_alias=True, mode="json", exclude_none=True)
            found = serialize_server_result(method, version, dumped)
            if version in MODERN_PROTOCOL_VERSIONS and found.get("resultType") is None:
                found["resultType"] = "complete"
            self._wire[key] = found
        return found


class Answer(Exception):
    """Raised by a handler whose result is already in wire form; see :class:`AnswerMiddleware`."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__()
        self.result = result


class AnswerMiddleware:
    """Innermost ``Server.middleware``: a handler's :class:`Answer` is the result, as is.

    ``stamp`` is the server's ``serverInfo`` (fixed when the server is made), added on the
    2026-07-28 wire as the runner does for results it shapes itself."""

    def __init__(self, stamp: Mapping[str, Any]) -> None:
        self._stamp = dict(stamp)

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        try:
            return await call_next(ctx)
        except Answer as answer:
            result = answer.result
            if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
                return result
            meta = result.get("_meta")
            if meta is None:
                return {**result, "_meta": {SERVER_INFO_META_KEY: self._stamp}}
            if isinstance(meta, dict) and meta.get(SERVER_INFO_META_KEY) is None:
                return {**result, "_meta": {**meta, SERVER_INFO_META_KEY: self._stamp}}
            return result
