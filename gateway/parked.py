"""Handshake-era upstream, 2026-07-28 client: server-to-client requests become input-required results.

A 2026-07-28 client cannot be sent a request: it must be answered with an input-required result
and retries with the answers. A handshake-era upstream instead sends its request in the middle of
the call and waits. The gateway bridges the two by running such a call in a task of its own (a
``ParkedCall``): the upstream's questions are handed back to the client as an input-required
result whose ``requestState`` names the parked call, and the retry carrying the answers releases
the waiting upstream request and waits for what comes next (the result, or more questions).

The token is random (unguessable, 192 bits) and lives in this process only; a call nobody comes
back for ends with the upstream request's own timeout and is forgotten.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp_types as types
from anyio.abc import TaskGroup, TaskStatus
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

PREFIX = "mcpgw-parked:"  # requestState values the gateway minted (an upstream's own pass through)
UNCLAIMED_GRACE = 60.0  # seconds a finished call waits for the retry that collects its result


class _Question:
    __slots__ = ("answer", "answered", "asked", "request")

    def __init__(self, request: Any) -> None:
        self.request = request
        self.asked = False  # handed to the client in an input-required result
        self.answered = anyio.Event()
        self.answer: Any = None


class ParkedCall:
    def __init__(self, registry: "ParkedCalls") -> None:
        self.token = PREFIX + secrets.token_urlsafe(24)
        self._registry = registry
        self._questions: dict[str, _Question] = {}
        self._keys = itertools.count(1)
        self._event = anyio.Event()  # a new question, or the outcome
        self._outcome: tuple[bool, Any] | None = None  # (ok, result or exception)
        self._claimed = anyio.Event()
        self._scope = anyio.CancelScope()
        self.caller: Any = None  # the Caller whose questions come here; its ctx follows the retries

    async def ask(self, request: Any) -> Any:
        """The upstream's question, answered when the client retries (called on the upstream side)."""
        question = _Question(request)
        self._questions[f"q{next(self._keys)}"] = question
        self._event.set()
        await question.answered.wait()
        if isinstance(question.answer, types.ErrorData):
            raise MCPError.from_error_data(question.answer)
        return question.answer

    def answer(self, responses: dict[str, Any] | None) -> None:
        for key, response in (responses or {}).items():
            question = self._questions.pop(key, None)
            if question is not None:
                question.answer = response
                question.answered.set()

    async def next(self) -> Any:
        """The call's result, or an input-required result with the questions not yet handed out."""
        while True:
            if self._outcome is not None:
                self._claimed.set()
                self._registry.forget(self)
                ok, value = self._outcome
                if ok:
                    return value
                raise value
            fresh = {key: q for key, q in self._questions.items() if not q.asked}
            if fresh:
                for question in fresh.values():
                    question.asked = True
                return types.InputRequiredResult(input_requests={k: q.request for k, q in fresh.items()},
                                                 request_state=self.token)
            self._event = anyio.Event()
            await self._event.wait()

    def cancel(self) -> None:
        self._scope.cancel()
        self._registry.forget(self)

    async def _run(self, call: Callable[[], Awaitable[Any]]) -> None:
        with self._scope:
            try:
                self._outcome = (True, await call())
            except Exception as exc:  # noqa: BLE001 - handed to whoever collects the result
                self._outcome = (False, exc)
            self._event.set()
            with anyio.move_on_after(UNCLAIMED_GRACE):
                await self._claimed.wait()
        self._registry.forget(self)


class ParkedCalls:
    """The parked calls of one gateway, run in its task group."""

    def __init__(self) -> None:
        self._calls: dict[str, ParkedCall] = {}
        self._tg: TaskGroup | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as self._tg:
            task_status.started()
            await anyio.sleep_forever()

    def start(self, call: Callable[[ParkedCall], Awaitable[Any]]) -> ParkedCall:
        """Run ``call`` (given its ParkedCall, to route questions to it) in the background."""
        assert self._tg is not None, "parked calls are not running"
        parked = ParkedCall(self)
        self._calls[parked.token] = parked
        self._tg.start_soon(parked._run, lambda: call(parked))
        return parked

    def resume(self, token: str) -> ParkedCall:
        parked = self._calls.get(token)
        if parked is None:
            raise MCPError(INVALID_PARAMS, "requestState is unknown or has expired; send the request again without it")
        return parked

    def forget(self, parked: ParkedCall) -> None:
        self._calls.pop(parked.token, None)
