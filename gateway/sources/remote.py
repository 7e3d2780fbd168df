"""Remote sources of server definitions (``sources:``), polled, merged into the configuration.

The configuration in service is always ``merge(the file, the latest good value of each source)``,
computed by one pure function; a source's change goes through the same reload pipeline as an
edit of the file, so only servers whose connection changed reconnect. A source that answers
401 is loud (an error in the log, ``unauthorized`` in ``/health``); one that fails otherwise (5xx,
timeout, garbage) keeps its last good value and is marked ``stale``; a malformed record is skipped
with a problem naming it while the rest are used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import mcp_types as types

from gateway.config.digest import fingerprint
from gateway.config.model import GatewayConfig, PluggedinSource
from gateway.sources import pluggedin

log = logging.getLogger("mcpgw.sources")


@dataclass(slots=True)
class SourceStatus:
    """What ``/health`` shows of one source."""

    name: str
    state: str = "pending"  # pending | ok | stale | unauthorized
    error: str | None = None
    fetched_at: float | None = None
    servers: int = 0
    problems: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "error": self.error, "servers": self.servers,
                "fetched_at": self.fetched_at, "problems": list(self.problems)}


ACTIVITY_QUEUE = 256  # reports waiting to be sent; more are dropped: a report never slows a call
ACTIVITY_TIMEOUT = 5.0
_ACTIONS = {"tools/call": "tool_call", "prompts/get": "prompt_get", "resources/read": "resource_read"}


class RemoteSources:
    def __init__(self) -> None:
        self._catalogs: dict[str, pluggedin.RemoteCatalog] = {}
        self._digests: dict[str, str] = {}
        self.status: dict[str, SourceStatus] = {}
        self._reports, self._pending = anyio.create_memory_object_stream[tuple[PluggedinSource, dict[str, Any]]](
            ACTIVITY_QUEUE)

    def report(self, config: GatewayConfig, server: str, method: str, item: str | None, ok: bool,
               error: str | None, duration_ms: float) -> None:
        """Queue an activity report for a call to a server of a source with ``report_activity``
        (fire-and-forget: dropped, not waited for, when the queue is full)."""
        action = _ACTIONS.get(method)
        found = self.origin_of(config, server) if action and config.sources else None
        if found is None or not found[0].report_activity or found[1] is None:
            return
        source, origin = found
        body = {"action": action, "serverName": origin.name, "serverUuid": origin.uuid, "itemName": item or "",
                "success": ok, "executionTime": round(duration_ms)}
        if error:
            body["errorMessage"] = error
        try:
            self._reports.send_nowait((source, body))
        except anyio.WouldBlock:
            log.debug("activity report to %s dropped: %d waiting already", source.name, ACTIVITY_QUEUE)

    async def _send_reports(self, http: httpx2.AsyncClient) -> None:
        async for source, body in self._pending:
            try:
                with anyio.fail_after(ACTIVITY_TIMEOUT):
                    await http.post(f"{source.base_url.rstrip('/')}/api/notifications/mcp-activity", json=body,
                                    headers={"Authorization": f"Bearer {source.api_key.reveal()}"})
            except (TimeoutError, httpx2.HTTPError) as exc:
                log.debug("activity report to %s not sent (%s)", source.name, type(exc).__name__)

    def merged(self, local: GatewayConfig) -> GatewayConfig:
        """The file's configuration with every source's latest good servers (pure)."""
        if not local.sources:
            return local
        catalogs = {s.name: self._catalogs[s.name] for s in local.sources if s.name in self._catalogs}
        config, problems = pluggedin.merge(local, catalogs)
        for problem in problems:
            log.warning("%s", problem)
        return config

    def origin_of(self, config: GatewayConfig, server: str) -> tuple[PluggedinSource, Any] | None:
        """The source a server in service came from, and who it is there; None for local ones."""
        source_name = pluggedin.remote_servers(config, self._catalogs).get(server)
        if source_name is None:
            return None
        source = next(s for s in config.sources if s.name == source_name)
        return source, self._catalogs[source_name].origins.get(server)

    def local_prompts(self, config: GatewayConfig) -> dict[str, tuple[types.Prompt, types.GetPromptResult]]:
        """Server name -> the prompt its custom instructions are served as (answered by the
        gateway: the upstream knows nothing of them)."""
        prompts: dict[str, tuple[types.Prompt, types.GetPromptResult]] = {}
        for server, source_name in pluggedin.remote_servers(config, self._catalogs).items():
            instructions = self._catalogs[source_name].instructions.get(server)
            if instructions is not None:
                prompt = types.Prompt(name=instructions.name, description=instructions.description)
                result = types.GetPromptResult.model_validate(
                    {"description": instructions.description, "messages": list(instructions.messages)})
                prompts[server] = (prompt, result)
        return prompts

    async def refresh(self, source: PluggedinSource, http: httpx2.AsyncClient) -> bool:
        """Fetch ``source`` once; True if what it defines changed."""
        status = self.status.setdefault(source.name, SourceStatus(source.name))
        outcome = await pluggedin.fetch_records(source, http)
        status.fetched_at = time.time()
        before = (status.state, status.error, list(status.problems))
        if outcome.records is None:
            loud = outcome.unauthorized
            status.state, status.error = ("unauthorized" if loud else "stale"), outcome.reason
            if (status.state, status.error) != before[:2]:  # said once per change, not once per poll
                log.log(logging.ERROR if loud else logging.WARNING, "source %s: %s%s", source.name, outcome.reason,
                        "" if loud else " (serving its last good servers)")
            return False
        # the policy may resolve host names (blocking DNS): off the event loop
        catalog = await anyio.to_thread.run_sync(pluggedin.servers_from_records, outcome.records, source)
        status.state, status.error = "ok", None
        status.servers, status.problems = len(catalog.servers), list(catalog.problems)
        if before[0] in ("stale", "unauthorized"):
            log.info("source %s: answering again", source.name)
        for problem in catalog.problems if status.problems != before[2] else ():
            log.warning("%s", problem)
        digest = _digest(catalog)
        if self._digests.get(source.name) == digest:
            return False
        self._catalogs[source.name], self._digests[source.name] = catalog, digest
        return True

    async def refresh_all(self, config: GatewayConfig) -> None:
        """One fetch of every source (at start: serving begins with what can be had)."""
        async with httpx2.AsyncClient() as http:
            for source in config.sources:
                await self.refresh(source, http)

    async def run(self, current: Callable[[], GatewayConfig], changed: Callable[[str], Awaitable[Any]]) -> None:
        """Poll every source of the configuration in service on its ``refresh``; a change reloads."""
        async with httpx2.AsyncClient() as http, anyio.create_task_group() as tg:
            tg.start_soon(self._send_reports, http)
            due: dict[str, float] = {}
            while True:
                sources = {s.name: s for s in current().sources}
                now = anyio.current_time()
                for name, source in sources.items():
                    if due.setdefault(name, now + source.refresh) <= now:
                        due[name] = now + source.refresh
                        if await self.refresh(source, http):
                            await changed(f"source {name} changed")
                for name in set(due) - set(sources):
                    del due[name]
                await anyio.sleep(max(0.0, min([*(at - anyio.current_time() for at in due.values()), 1.0])))


def _digest(catalog: Any) -> str:
    """What a source's value means for the gateway: its servers (as the reload fingerprint sees
    them) and instructions, not the records' notes or timestamps."""
    servers = GatewayConfig(servers=catalog.servers)
    return fingerprint(servers) + repr(sorted(catalog.instructions.items()))
