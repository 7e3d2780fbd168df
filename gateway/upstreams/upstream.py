"""One upstream MCP server, supervised: connected, listed, reconnected with backoff, and used.

The connection lives in the supervisor task (``run``), because the SDK's client must be entered
and left in one task; request handlers in other tasks share that one session (JSON-RPC lets many
requests be in flight on it). A lost connection is noticed three ways: the transport's read side
ending (a watched stream), a request failing with a transport error, or a health ping failing;
any of them wakes the supervisor, which reconnects with exponential backoff and jitter.
"""

from __future__ import annotations

import logging
import math
import random
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.subscriptions import (PromptsListChanged, ResourcesListChanged, ResourceUpdated,
                                      SubscriptionLost, ToolsListChanged)
from mcp.client.auth.exceptions import OAuthFlowError
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INVALID_REQUEST, METHOD_NOT_FOUND
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway import __version__
from gateway.config.model import ServerConfig
from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.inflight import InFlight
from gateway.redact import REDACT
from gateway.caller import Caller
from gateway.routing import Catalog
from gateway.upstreams.back_channel import BackChannel, DownstreamHooks
from gateway.upstreams.breaker import CircuitBreaker, describe
from gateway.upstreams.dedicated import DedicatedSessions
from gateway.upstreams.credentials import auth_for
from gateway.upstreams import wire
from gateway.upstreams.connection import Streams, describe_failure, list_catalog, relist, watched
from gateway.upstreams.transports import EXCHANGE_FAILED, StderrTail, open_streams

log = logging.getLogger("mcpgw.upstream")

T = TypeVar("T")
_CLIENT_INFO = types.Implementation(name="mcpgw", version=__version__)
RELIST_DEBOUNCE = 0.05  # seconds: list_changed notifications arriving together cause one re-list
_EVENT_KINDS = {ToolsListChanged: "tools", PromptsListChanged: "prompts", ResourcesListChanged: "resources"}
_MODES = {"auto": "auto", "2025-11-25": "legacy", "2026-07-28": "2026-07-28"}  # servers.<name>.protocol
_TRANSPORT_ERRORS = (OSError, httpx2.HTTPError, anyio.ClosedResourceError, anyio.BrokenResourceError,
                     anyio.EndOfStream)


class State(str, Enum):
    STARTING = "starting"
    READY = "ready"
    DOWN = "down"
    UNAUTHORIZED = "unauthorized"  # down because its credentials were refused (not the same fix as down)
    STOPPED = "stopped"


@dataclass(slots=True)
class Status:
    """What operators and error messages need to know about an upstream right now."""

    state: State = State.STARTING
    last_error: str | None = None
    connects: int = 0
    protocol_version: str | None = None
    latency_ms: float | None = None  # of the last request or ping that succeeded


class Upstream:
    """A supervised connection to one upstream server and the last catalog it listed."""

    def __init__(self, config: ServerConfig, on_change: Callable[[], None] = lambda: None,
                 hooks: DownstreamHooks = DownstreamHooks()) -> None:
        self.breaker = CircuitBreaker(config.circuit_breaker)
        self.config = config
        self.name = config.name
        self.catalog: Catalog | None = None
        self.status = Status()
        self.stderr = StderrTail()
        self.first_attempt = anyio.Event()
        self._client: Client | None = None
        self._lost = anyio.Event()
        self._restarting = False  # a connection that worked was lost and is being re-established
        self._attempt_done = anyio.Event()  # set when the current connection attempt ends either way
        self._scope: anyio.CancelScope | None = None
        self._stopped_because: str | None = None
        self.inflight = InFlight()
        self._on_change = on_change
        self.back_channel = BackChannel(config.name, hooks, self._lists_changed)
        self.credentials = auth_for(config)  # OAuth: one token cache for every connection of this upstream
        self._dedicated = DedicatedSessions(config.name, self._session,
                                            lambda: BackChannel(config.name, hooks, self._lists_changed))
        self._stale: set[str] = set()  # kinds of list the server said changed, not yet re-listed
        self._relist = anyio.Event()
        self._relisten: anyio.CancelScope | None = None  # the open subscriptions/listen stream (2026-07-28)
        self._listening = anyio.Event()  # set when the listen stream for the current URIs is in place

    # -- supervision -------------------------------------------------------------------------

    @property
    def config(self) -> ServerConfig:
        return self._config

    @config.setter
    def config(self, config: ServerConfig) -> None:
        """A reload may change policies (timeouts, retries, breaker, health checks) but not the
        connection: those take effect at once."""
        self._config = config
        self.breaker.policy = config.circuit_breaker

    @property
    def ready(self) -> bool:
        return self.status.state is State.READY

    @property
    def logging_capable(self) -> bool:
        """Connected on the handshake era with the logging capability (the one with ``logging/setLevel``)."""
        client = self._client
        return client is not None and client.server_capabilities.logging is not None and not self.modern

    @property
    def hidden(self) -> bool:
        """Its circuit is open and the config says to hide its tools meanwhile."""
        return self.breaker.opened and self.config.circuit_breaker.on_open == "hide"

    async def run(self) -> None:
        """Connect, serve until the connection is lost, reconnect with backoff; until ``stop``."""
        with anyio.CancelScope() as self._scope:
            async with anyio.create_task_group() as tg:
                await tg.start(self._dedicated.run)
                await self._supervise()
        self.first_attempt.set()
        self._attempt_done.set()

    def stop(self, reason: str) -> None:
        """End this upstream: its session is closed (a stdio child's process group is stopped)."""
        self._stopped_because = reason
        self._client = None
        if self._scope is not None:
            self._scope.cancel()

    async def _supervise(self) -> None:
        failures = 0
        try:
            while True:
                connected = await self._connect_once()
                failures = 0 if connected else failures + 1
                self.first_attempt.set()
                if not connected:  # requests waiting for this restart fail now; new ones fail fast
                    self._restarting = False
                    self._attempt_done.set()
                    self._attempt_done = anyio.Event()
                await anyio.sleep(self._backoff(failures))
        finally:
            self.status.state = State.STOPPED

    async def _connect_once(self) -> bool:
        self._lost = anyio.Event()
        try:
            async with self._session(self.back_channel, None, self._connection_lost) as client:
                with anyio.fail_after(self.config.connect_timeout):
                    catalog = await list_catalog(client)
                    await self._resubscribe(client)
                self._publish(client, catalog)
                self.first_attempt.set()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._ping_loop, client)
                    tg.start_soon(self._relist_loop, client)
                    if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                        tg.start_soon(self._listen_loop, client)
                    await self._lost.wait()
                    tg.cancel_scope.cancel()
                self._down("connection lost" + (f"; stderr: {self.stderr.last()}" if self.stderr.last() else ""))
                return True
        except Exception as exc:  # noqa: BLE001 - any failure of one upstream must stay with it
            refused = _unauthorized(exc)
            hint = ("; authorize the gateway again: mcpgw login " + self.name + " CONFIG"
                    if refused and self.config.auth is not None and self.config.auth.type == "oauth_refresh_token" else "")
            self._down(describe_failure(exc, self.stderr) + hint, unauthorized=refused)
            return False
        finally:
            self._client = None

    @asynccontextmanager
    async def _session(self, back_channel: BackChannel, capabilities: dict[str, Any] | None,
                       on_eof: Callable[[], None]) -> AsyncIterator[Client]:
        """A connected, initialized client; only getting there is bounded by ``connect_timeout``."""
        connected = False
        with anyio.CancelScope(deadline=anyio.current_time() + self.config.connect_timeout) as scope:
            async with watched(open_streams(self.config, self.stderr, self.credentials), on_eof) as streams, \
                    Client(Streams(streams), mode=_MODES[self.config.protocol], cache=None,
                           client_info=_CLIENT_INFO, **back_channel.client_options(capabilities)) as client:
                scope.deadline = math.inf
                connected = True
                if self.config.url is None:  # a pipe: no HTTP headers to work out per request
                    client.session._stamp = wire.without_headers(client.session._stamp)
                yield client
        if not connected:
            raise TimeoutError(f"timed out after {self.config.connect_timeout:g}s while connecting")

    async def _resubscribe(self, client: Client) -> None:
        """After a reconnect, the resource subscriptions clients still hold are made again."""
        uris = self.back_channel.hooks.subscribed_uris(self.name)
        resources = client.server_capabilities.resources
        if uris and resources is not None and resources.subscribe:
            for uri in uris:
                await client.session.subscribe_resource(uri)

    def _publish(self, client: Client, catalog: Catalog) -> None:
        self._client = client
        self.catalog = catalog
        self.status.state = State.READY
        self.status.connects += 1
        self.status.protocol_version = client.protocol_version
        self.status.last_error = None
        self._restarting = False
        self._attempt_done.set()
        log.info("connected (%s): %d tools, %d prompts, %d resources, %d templates", client.protocol_version,
                 len(catalog.tools), len(catalog.prompts), len(catalog.resources), len(catalog.resource_templates),
                 extra={"server": self.name})
        self._on_change()

    def _connection_lost(self) -> None:
        """Stop handing out the session at once and wake the supervisor to restart it."""
        if self._client is not None:
            self._client = None
            self._restarting = True
            self._attempt_done = anyio.Event()
        self._lost.set()

    def _down(self, reason: str, unauthorized: bool = False) -> None:
        self._client = None
        self.status.state = State.UNAUTHORIZED if unauthorized else State.DOWN
        self.status.last_error = REDACT(reason)  # shown in /health/servers and in errors to clients
        log.warning("unavailable: %s", reason, extra={"server": self.name})

    async def _ping_loop(self, client: Client) -> None:
        """Health pings every ``interval``; while the circuit is open, a ping is also the probe that
        may close it (a hidden server gets no calls that could probe it)."""
        while True:
            policy = self.config.health_check
            await anyio.sleep(self.breaker.retry_after() if self.breaker.opened else policy.interval)
            probing = self.breaker.opened
            if (probing and not self.breaker.allow()) or not (probing or policy.enabled):
                continue
            started = time.perf_counter()
            try:
                with anyio.fail_after(policy.timeout):
                    await client.session.send_ping()
            except MCPError as exc:
                if exc.code != METHOD_NOT_FOUND:  # 2026-07-28 servers have no ping; an answer is an answer
                    self._record(False)
                    self._connection_lost()
                    continue
            except (TimeoutError, *_TRANSPORT_ERRORS):
                self._record(False)
                self._connection_lost()
                continue
            self.status.latency_ms = (time.perf_counter() - started) * 1000
            if probing:
                self._record(True)

    def _lists_changed(self, kind: str) -> None:
        """The server said a list changed: re-list it soon (a burst of notifications, once)."""
        self._stale.add(kind)
        self._relist.set()

    async def _relist_loop(self, client: Client) -> None:
        """Re-list what the server said changed and publish the new catalog. Whether clients hear
        of it is decided downstream, by comparing what they can list before and after."""
        while True:
            await self._relist.wait()
            await anyio.sleep(RELIST_DEBOUNCE)
            self._relist = anyio.Event()
            kinds, self._stale = self._stale, set()
            try:
                with anyio.fail_after(self.config.timeout):
                    catalog = await relist(client, self.catalog or Catalog(), kinds)
            except MCPError as exc:
                log.warning("could not re-list %s after a change: %s", "/".join(sorted(kinds)), exc.message,
                            extra={"server": self.name})
                continue
            except (TimeoutError, *_TRANSPORT_ERRORS):
                self._connection_lost()
                return
            if catalog != self.catalog:
                log.info("%s changed", "/".join(sorted(kinds)), extra={"server": self.name})
                self.catalog = catalog
                self._on_change()

    async def _listen_loop(self, client: Client) -> None:
        """2026-07-28 servers have no standing channel: changes and resource updates arrive on a
        ``subscriptions/listen`` stream, opened for what the server can announce and the resources
        clients subscribed to, and opened again when those change (``set_subscribed``)."""
        caps = client.server_capabilities
        lists = {kind: bool(getattr(caps, kind) and getattr(getattr(caps, kind), "list_changed", False))
                 for kind in ("tools", "prompts", "resources")}
        hooks = self.back_channel.hooks
        while True:
            uris = hooks.subscribed_uris(self.name)
            if not any(lists.values()) and not uris:
                self._listening.set()
                await self._wait_for_relisten()
                continue
            try:
                with anyio.CancelScope() as self._relisten:
                    async with client.listen(tools_list_changed=lists["tools"], prompts_list_changed=lists["prompts"],
                                             resources_list_changed=lists["resources"],
                                             resource_subscriptions=uris) as subscription:
                        self._listening.set()
                        async for event in subscription:
                            if isinstance(event, ResourceUpdated):
                                await hooks.resource_updated(self.name, event.uri)
                            else:
                                self._lists_changed(_EVENT_KINDS[type(event)])
                    await self._wait_for_relisten()  # the server ended the stream: it has nothing to say
            except MCPError as exc:
                log.warning("cannot listen for changes: %s", exc.message, extra={"server": self.name})
                await self._wait_for_relisten()
            except (SubscriptionLost, *_TRANSPORT_ERRORS):
                self._connection_lost()
                return
            finally:
                self._relisten = None

    async def _wait_for_relisten(self) -> None:
        with anyio.CancelScope() as self._relisten:
            await anyio.sleep_forever()

    async def set_subscribed(self, uri: str, subscribed: bool) -> None:
        """Start or stop the server's updates for ``uri``: a 2026-07-28 server by opening its listen
        stream again with the new set of URIs, a handshake-era one by resources/(un)subscribe."""
        if self.modern:
            self._listening = anyio.Event()
            if self._relisten is not None:
                self._relisten.cancel()
            with anyio.move_on_after(self.config.timeout):  # the update right after subscribing is not missed
                await self._listening.wait()
                return
            raise UpstreamTimeout(self.name, f"server '{self.name}' did not acknowledge the subscription "
                                             f"within {self.config.timeout:g}s")
        await self.request(lambda c: (c.session.subscribe_resource if subscribed else c.session.unsubscribe_resource)(uri),
                           self.config.timeout)

    @property
    def modern(self) -> bool:
        client = self._client
        return client is not None and client.protocol_version in MODERN_PROTOCOL_VERSIONS

    def _record(self, success: bool) -> None:
        """Tell the breaker; when a hidden server's visibility flips, rebuild the tables."""
        before = self.breaker.changes
        self.breaker.record_success() if success else self.breaker.record_failure()
        if self.breaker.changes != before:
            state = self.breaker.state.value
            log.warning("circuit %s: %s", state, describe(self.breaker), extra={"server": self.name}) \
                if self.breaker.opened else log.info("circuit closed", extra={"server": self.name})
            if self.config.circuit_breaker.on_open == "hide":
                self._on_change()

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with full jitter, capped by ``retry.max_backoff``."""
        retry = self.config.retry
        ceiling = min(retry.max_backoff, retry.backoff * (2 ** max(failures - 1, 0)))
        return retry.backoff if failures == 0 else random.uniform(retry.backoff, max(ceiling, retry.backoff))

    # -- use ------------------------------------------------------------------------------------

    async def request(self, operation: Callable[[Client], Awaitable[T]], timeout: float,
                      caller: Caller | None = None) -> T:
        """Run ``operation`` on the live session; transport failures become UpstreamErrors.

        A request that arrives while a lost connection is being restarted waits for that attempt
        (within its own timeout) instead of failing: the restart is usually quick, and the client
        should not see a crash that the gateway has already repaired.
        """
        if not self.breaker.allow():
            raise UpstreamUnavailable(self.name, self._failing())
        healthy: bool | None = None  # what this request says about the server, once known
        dedicated = (self.config.session == "per_client" and caller is not None and caller.session_key is not None
                     and not (caller.modern and self.modern))  # a 2026 upstream routes a 2026 client's questions itself
        lost = (lambda: self._dedicated.drop(caller)) if dedicated else self._connection_lost  # type: ignore[arg-type]
        try:
            started = time.perf_counter()
            # fail_after's own scope, without its two generator layers: every call passes here
            with anyio.CancelScope(deadline=anyio.current_time() + timeout) as deadline, self.inflight.track():
                if dedicated:
                    client, channel = await self._dedicated.session_for(caller)  # type: ignore[arg-type]
                    with channel.serving(caller):
                        result = await operation(client)
                else:
                    with self.back_channel.serving(caller):
                        result = await self._on_live_session(operation)
            if deadline.cancelled_caught:
                raise TimeoutError
            self.status.latency_ms = (time.perf_counter() - started) * 1000
            healthy = True
            return result
        except UpstreamUnavailable:
            healthy = False
            raise
        except TimeoutError as exc:
            healthy = False
            raise UpstreamTimeout(self.name, f"server '{self.name}' did not answer within {timeout:g}s") from exc
        except MCPError as exc:
            if exc.code == EXCHANGE_FAILED:  # this request's HTTP exchange alone: the session goes on
                healthy = False
                raise UpstreamUnavailable(self.name, f"server '{self.name}' failed this request: {exc.message}") from exc
            healthy = exc.code != CONNECTION_CLOSED  # an error answer still means the server is alive
            if healthy:
                raise
            lost()
            raise UpstreamUnavailable(self.name, self._stopped_because or (
                f"server '{self.name}' closed the connection during the request" + self._stderr_note())) from exc
        except _TRANSPORT_ERRORS as exc:
            healthy = False
            lost()
            raise UpstreamUnavailable(self.name, f"server '{self.name}' failed: {type(exc).__name__}") from exc
        finally:
            if healthy is not None:
                self._record(healthy)
            elif self.breaker.probing:
                self._record(False)  # a cancelled probe must not leave the circuit waiting forever

    async def _on_live_session(self, operation: Callable[[Client], Awaitable[T]]) -> T:
        """Run ``operation`` on the session, waiting for a restart in progress. An HTTP server that
        no longer knows our session (it expired, or the server restarted) refused the request
        before running it, so the session is re-established and the request sent once more."""
        for attempt in (1, 2):
            if self._client is None and self._restarting:
                await self._attempt_done.wait()
            client = self._client
            if client is None:
                raise UpstreamUnavailable(self.name, self.unavailable_reason())
            try:
                return await operation(client)
            except MCPError as exc:
                if attempt == 2 or self.config.url is None or not _session_expired(exc):
                    raise
                log.info("the server no longer knows our session; re-initializing", extra={"server": self.name})
                self._connection_lost()
        raise AssertionError("unreachable")

    def unavailable_reason(self) -> str:
        if self._stopped_because:
            return self._stopped_because
        if self.breaker.opened:
            return self._failing()
        why = self.status.last_error or ("still starting" if self.status.state is State.STARTING else "not connected")
        return f"server '{self.name}' is unavailable: {why}"

    def _failing(self) -> str:
        last = f" (last error: {self.status.last_error})" if self.status.last_error else ""
        return f"server '{self.name}' is failing: {describe(self.breaker)}{last}"

    def _stderr_note(self) -> str:
        last = self.stderr.last()
        return f" (last stderr line: {last})" if last else ""


def _unauthorized(exc: BaseException) -> bool:
    """Whether connecting failed on credentials: the OAuth flow failed (a refused client, an
    expired refresh token), or the server answered 401/403 whatever the gateway sent."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_unauthorized(e) for e in exc.exceptions)
    if isinstance(exc, OAuthFlowError):
        return True
    if isinstance(exc, httpx2.HTTPStatusError):
        return exc.response.status_code in (401, 403)
    return exc.__cause__ is not None and _unauthorized(exc.__cause__)


def _session_expired(exc: MCPError) -> bool:
    """How a 404 for our session id reaches us: the SDK's client turns it into INVALID_REQUEST with
    the server's own message ("Session not found" from Python servers) or "Session terminated"
    when the body has none. The HTTP status itself is not passed on, hence the message test."""
    message = exc.message.lower()
    return exc.code == INVALID_REQUEST and ("session not found" in message or "session terminated" in message)
