"""The SDK's Streamable HTTP session manager, with what a gateway of several replicas needs.

Two additions, both at the seams the SDK has for them (``_admit_session``, the stateful request
path) and guarded by tests (tests/test_resumability.py, tests/test_replicas.py):

- **An event store per session.** The SDK hands its one store to every session, but a stream is
  named by its request id (or ``_GET_stream``), which repeats from session to session: one shared
  store could replay a client another session's messages. The store given to the manager only
  says that resumability is on.
- **Signed session ids** (``gateway.http.session_signing_key``, gateway/session_ids.py). A new
  session's id carries the client's ``initialize`` and its credentials' name, signed; a request
  for a session this replica does not hold is served by rebuilding the session from its id, ready
  (no second handshake), exactly as the replica that opened it would hold it. Ids that do not
  verify, belong to another endpoint or were opened with other credentials are "Session not
  found", as an unknown id always was.

What a rebuilt session does not have is what lived only in the other replica's memory: calls in
flight there (and the questions they asked the client), the events kept for resuming its streams,
its ``logging/setLevel`` level and resource subscriptions (docs/deployment.md, "Scaling").
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any, Callable

import anyio
from anyio.abc import TaskStatus
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from gateway import session_ids
from gateway.event_store import BoundedEventStore
from gateway.lane import serve_connection
from gateway.security.front_door import opening_message, principal_of, session_id_of
from gateway.sse import GatewayTransport, KeptVerdicts
from gateway.sessions import SessionRegistry, owner_admits

log = logging.getLogger("mcpgw")

_opening: ContextVar[Scope | None] = ContextVar("mcpgw_opening_request", default=None)


class SessionManager(StreamableHTTPSessionManager):
    """One endpoint's sessions; ``signing_key()`` is the replicas' shared key, or None."""

    def __init__(self, *, endpoint: str, signing_key: Callable[[], str | None], sessions: SessionRegistry,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.endpoint = endpoint
        self.signing_key = signing_key
        self.sessions = sessions
        self._verdicts = KeptVerdicts(self.security_settings)  # the transports' header checks, kept

    async def handle_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The SDK's handling without its body limit: the front door (``security.front_door``) has
        read every POST body to an endpoint already, bounded by the same ``max_body_bytes``, and
        the SDK would read it again from the front door's replay (GET and DELETE bodies are never
        read)."""
        await self._handle_request(scope, receive, send)

    async def _handle_stateful_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = session_id_of(scope)
        if session_id is None:
            token = _opening.set(scope)  # read by _admit_session, called synchronously below
            try:
                await super()._handle_stateful_request(scope, receive, send)
            finally:
                _opening.reset(token)
            return
        if session_id not in self._server_instances:
            await self._rebuild(session_id, scope)  # when it can: else the SDK answers 404 below
        await super()._handle_stateful_request(scope, receive, send)

    def _admit_session(self, requestor: Any) -> Any:
        transport = super()._admit_session(requestor)
        if transport is None:
            return None
        transport._security = self._verdicts
        if self.event_store is not None:
            transport._event_store = BoundedEventStore()  # tests/test_resumability.py guards this private touch
        key, scope = self.signing_key(), _opening.get()
        message = opening_message(scope) if scope is not None else None
        if key and message is not None and message.get("method") == "initialize":
            principal = principal_of(scope) if scope is not None else None
            signed = session_ids.issue(key, self.endpoint, message.get("params") or {},
                                       principal.name if principal else None)
            random_id = transport.mcp_session_id
            self._server_instances[signed] = self._server_instances.pop(random_id)
            if random_id in self._session_owners:
                self._session_owners[signed] = self._session_owners.pop(random_id)
            transport.mcp_session_id = signed
        return transport

    async def _rebuild(self, session_id: str, scope: Scope) -> None:
        """Serve a session another replica opened (or this one, before a restart), if its id says so."""
        key = self.signing_key()
        claims = session_ids.verify(key, session_id) if key else None
        if claims is None or claims.endpoint != self.endpoint:
            if key and session_ids.is_signed(session_id):
                log.warning("refused a session id that does not verify on endpoint %r (forged, altered, "
                            "or signed with another key)", self.endpoint)
            return
        principal = principal_of(scope)
        if not owner_admits(claims.owner, principal.name if principal else None):
            log.info("refused a session opened with other credentials")
            return
        try:
            client_params, version = ServerRunner._negotiate_initialize(claims.initialize)
        except ValidationError:
            log.warning("refused a signed session id whose initialize does not validate")
            return
        async with self._session_creation_lock:
            if session_id in self._server_instances:
                return  # another request of the session rebuilt it meanwhile
            if self.max_sessions is not None and len(self._server_instances) >= self.max_sessions:
                return
            transport = GatewayTransport(
                mcp_session_id=session_id, is_json_response_enabled=self.json_response,
                event_store=BoundedEventStore() if self.event_store is not None else None,
                security_settings=self.security_settings, retry_interval=self.retry_interval,
                idle_timeout=self.session_idle_timeout)
            transport._security = self._verdicts
            self._server_instances[session_id] = transport
        self.sessions.bind_session(session_id, claims.owner)
        assert self._task_group is not None
        await self._task_group.start(self._serve_rebuilt, transport, client_params, version)
        log.info("rebuilt a session from its signed id on endpoint %r (%s)", self.endpoint,
                 client_params.client_info.name)

    async def _serve_rebuilt(self, transport: StreamableHTTPServerTransport, client_params: Any, version: str,
                             *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The SDK's session task (``_serve_opening_request``), with a connection born initialized."""
        session_id = transport.mcp_session_id
        assert session_id is not None
        async with transport.connect() as (read_stream, write_stream):
            task_status.started()
            try:
                idle_scope = transport.idle_scope or anyio.CancelScope()
                with idle_scope:
                    dispatcher: JSONRPCDispatcher[Any] = JSONRPCDispatcher(
                        read_stream, write_stream, inline_methods=frozenset({"initialize"}))
                    connection = Connection.for_loop(dispatcher, session_id=session_id, protocol_version_hint=version)
                    connection.client_params = client_params
                    connection.initialized.set()
                    await serve_connection(self.app, dispatcher, connection=connection,
                                           lifespan_state=self._lifespan_state)
            except Exception:
                log.exception("a rebuilt session crashed")
            finally:
                await self._discard_session(session_id, transport)
