"""``session: per_client``: each client gets a session of its own with the upstream.

On a shared session, the upstream's requests to a client (sampling, elicitation, roots) can only
be routed while the calls in flight on it come from one client. A server that asks its clients
things while several of them call it needs a session per client: everything that arrives on it
is that client's. The session is opened on the client's first request, declares exactly the
capabilities that client declared, and is closed when the client's connection is gone (or the
upstream stops). A client on the 2026-07-28 wire has no session to be recognised by: each of its
requests gets a session of its own (on a 2026-07-28 upstream its questions come back as
input-required results, routed by the request itself, so ``shared`` serves it as well).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus
from mcp import Client

from gateway.caller import Caller
from gateway.errors import UpstreamUnavailable
from gateway.upstreams.back_channel import BackChannel

log = logging.getLogger("mcpgw.upstream")

# Opens a connected client whose server-to-client traffic goes to ``back_channel``, restricted to
# ``capabilities``; ``on_eof`` is called when its transport ends.
Opener = Callable[[BackChannel, dict[str, Any], Callable[[], None]], AbstractAsyncContextManager[Client]]


class _Dedicated:
    __slots__ = ("back_channel", "client", "error", "ready", "scope")

    def __init__(self, back_channel: BackChannel) -> None:
        self.back_channel = back_channel
        self.client: Client | None = None
        self.error = "not connected"
        self.ready = anyio.Event()
        self.scope = anyio.CancelScope()


class DedicatedSessions:
    def __init__(self, server: str, open_session: Opener, new_back_channel: Callable[[], BackChannel]) -> None:
        self.server = server
        self._open = open_session
        self._new_back_channel = new_back_channel
        self._sessions: weakref.WeakKeyDictionary[Any, _Dedicated] = weakref.WeakKeyDictionary()
        self._tg: TaskGroup | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Owns the sessions: leaving (the upstream stopping) closes every one."""
        async with anyio.create_task_group() as self._tg:
            task_status.started()
            await anyio.sleep_forever()

    async def session_for(self, caller: Caller) -> tuple[Client, BackChannel]:
        """The caller's own session, opened on its first request."""
        key = caller.session_key
        entry = self._sessions.get(key)
        if entry is None:
            if self._tg is None:
                raise UpstreamUnavailable(self.server, f"server '{self.server}' is not running")
            entry = self._sessions[key] = _Dedicated(self._new_back_channel())
            weakref.finalize(key, entry.scope.cancel)  # the client (or request) is gone: close its session
            self._tg.start_soon(self._serve, weakref.ref(key), entry, caller.capabilities())
        await entry.ready.wait()
        if entry.client is None:
            raise UpstreamUnavailable(self.server, f"server '{self.server}' could not open a session for this "
                                                   f"client: {entry.error}")
        return entry.client, entry.back_channel

    def drop(self, caller: Caller) -> None:
        """The caller's session failed: close it; its next request opens a new one."""
        entry = self._sessions.pop(caller.session_key, None)
        if entry is not None:
            entry.scope.cancel()

    async def _serve(self, key: weakref.ref[Any], entry: _Dedicated, capabilities: dict[str, Any]) -> None:
        with entry.scope:
            try:
                async with self._open(entry.back_channel, capabilities, entry.scope.cancel) as client:
                    entry.client = client
                    entry.ready.set()
                    log.info("opened a session for a client (%d open)", len(self._sessions), extra={"server": self.server})
                    await anyio.sleep_forever()
            except Exception as exc:  # noqa: BLE001 - this client's session failed, no one else's
                entry.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            finally:
                entry.client = None
                entry.ready.set()
        owner = key()
        if owner is not None and self._sessions.get(owner) is entry:
            del self._sessions[owner]
        log.debug("closed a client's session", extra={"server": self.server})


