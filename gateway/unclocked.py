"""A request sent without a timeout runs without the SDK's request clock.

The SDK's dispatcher wraps every request it sends in ``request_clock(timeout)``: an anyio cancel
scope, a clock object in a context variable, the scope's deadline set when the request has been
written (to infinity when there is no timeout), so that the timeout can pause while a person
answers (``waiting_on_a_person``). The gateway sends its upstream requests without the SDK's
timeout (each has its own deadline, ``Upstream.request``), so that was a cancel scope per call
that could never fire: 2.3% of a call's instructions. ``install()`` gives the dispatcher a
``request_clock`` that keeps the SDK's clock for a request with a timeout and, for one without,
only what code below the request can see of it: no clock (``waiting_on_a_person`` then does
nothing, as it would with the SDK's clock of infinite budget).
"""

from __future__ import annotations

from typing import Any

import mcp.shared.jsonrpc_dispatcher as dispatcher
from mcp.shared import _request_clock as sdk


class _Unclocked:
    """The clock of a request without a timeout: nothing to start, pause or resume."""

    __slots__ = ("_token",)

    def __enter__(self) -> "_Unclocked":
        self._token = sdk._clock.set(None)
        return self

    def __exit__(self, *exc_info: object) -> None:
        sdk._clock.reset(self._token)

    def start(self) -> None:
        pass

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass


def request_clock(timeout: float | None) -> Any:
    """The SDK's ``request_clock`` where there is a timeout to keep; else ``_Unclocked``."""
    return _Unclocked() if timeout is None else sdk.request_clock(timeout)


def install() -> None:
    """Make the SDK's dispatcher clock its requests with ``request_clock`` (idempotent)."""
    dispatcher.request_clock = request_clock  # type: ignore[assignment]
