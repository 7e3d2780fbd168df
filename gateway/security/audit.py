"""The audit log (``observability.audit``): one JSON line per call, saying who called what, where it
went, how long it took and how it ended.

A line has the keys ``time`` (RFC 3339, UTC, milliseconds), ``key`` (the API key's *name*),
``session``, ``method``, ``name`` (the exposed, prefixed name), ``upstream_name``, ``server``,
``duration_ms``, ``outcome``, ``error`` (an error class), and either ``arguments_sha256`` or, with
``include_arguments``, ``arguments``. Arguments are hashed by default because they are the user's
data (file contents, queries, tokens): the hash still shows that two calls were the same, and it
is the SHA-256 of the canonical JSON (``sort_keys``, separators ``,`` and ``:``, UTF-8, no ASCII
escaping), so anyone holding the arguments can recompute it. It is ``null`` for a call without
arguments.

Every string that came from outside passes through ``REDACT`` before it is encoded, so a configured
secret value never lands in the file (not even inside arguments logged in full). Strings are
masked one by one rather than the finished line, because masking JSON text could cut into its
numbers and escapes and leave a line that no longer parses.

The log never raises into the request path: a write that fails is logged once on the
``mcpgw.audit`` logger (and again only after a write has succeeded since), counted in ``dropped``,
and the line is lost. Opening the file is different: ``from_config`` raises ``OSError``, so a path
that cannot be written stops ``serve`` (or rejects a reload) instead of auditing nothing quietly.
Writes are synchronous, one ``write`` and one ``flush`` per line, like the gateway's own logging.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, Optional, TextIO

from gateway.config.model import AuditConfig
from gateway.redact import REDACT

log = logging.getLogger("mcpgw.audit")

STDERR = "stderr"


def arguments_sha256(arguments: Any) -> Optional[str]:
    """The hash an audit line carries for ``arguments`` (``None`` when there are none)."""
    if arguments is None:
        return None
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def rfc3339_utc(timestamp: float) -> str:
    """``2026-01-02T03:04:05.678Z``."""
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _redacted(value: Any) -> Any:
    """``value`` with every string in it (mapping keys too) masked by ``REDACT``."""
    if isinstance(value, str):
        return REDACT(value)
    if isinstance(value, dict):
        return {_redacted(str(k)): _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(item) for item in value]
    return value


class AuditLog:
    """Where audit lines go. ``path`` is ``stderr`` (looked up at every write, so a replaced
    ``sys.stderr`` is honoured) or a file opened for appending."""

    def __init__(self, path: str, *, include_arguments: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.include_arguments = include_arguments
        self.dropped = 0
        self._clock = clock
        self._file: Optional[TextIO] = None
        self._closed = False
        self._failing = False
        if path != STDERR:
            self._file = open(path, "a", encoding="utf-8", buffering=1)

    @classmethod
    def from_config(cls, audit: Optional[AuditConfig]) -> Optional["AuditLog"]:
        """``None`` when auditing is off. Raises ``OSError`` when the file cannot be opened."""
        if audit is None:
            return None
        return cls(audit.path, include_arguments=audit.include_arguments)

    def record(self, *, key: Optional[str], session: Optional[str], method: str,
               name: Optional[str], upstream_name: Optional[str], server: Optional[str],
               duration_ms: float, outcome: str, error: Optional[str],
               arguments: Any = None) -> None:
        """Write one line for one call. ``outcome`` is a short word (``ok``, ``error``,
        ``rate_limited``, ``invalid_arguments``, ``denied``, ...); ``error`` the error's class."""
        if self._closed:
            return
        try:
            line = self._line(key=key, session=session, method=method, name=name,
                              upstream_name=upstream_name, server=server, duration_ms=duration_ms,
                              outcome=outcome, error=error, arguments=arguments)
            self._write(line)
        except Exception as exc:  # never into the request path: the call matters more than its line
            self._dropped(exc)
        else:
            self._recovered()

    def _line(self, *, key: Optional[str], session: Optional[str], method: str,
              name: Optional[str], upstream_name: Optional[str], server: Optional[str],
              duration_ms: float, outcome: str, error: Optional[str], arguments: Any) -> str:
        entry: dict[str, Any] = {
            "time": rfc3339_utc(self._clock()),
            "key": _redacted(key), "session": _redacted(session), "method": _redacted(method),
            "name": _redacted(name), "upstream_name": _redacted(upstream_name),
            "server": _redacted(server), "duration_ms": round(duration_ms, 3),
            "outcome": _redacted(outcome), "error": _redacted(error),
        }
        if self.include_arguments:
            entry["arguments"] = _redacted(arguments)
        else:
            entry["arguments_sha256"] = arguments_sha256(arguments)
        # ASCII escapes: the line stays valid JSON whatever encoding stderr has
        return json.dumps(entry, separators=(",", ":"), default=str) + "\n"

    def _write(self, line: str) -> None:
        stream = self._file if self._file is not None else sys.stderr
        stream.write(line)
        stream.flush()

    def _dropped(self, exc: Exception) -> None:
        self.dropped += 1
        if not self._failing:
            self._failing = True
            log.error("audit log %s: cannot write (%s: %s); dropping lines until it works again",
                      self.path, type(exc).__name__, exc)

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("audit log %s: writing again (%d lines dropped so far)", self.path, self.dropped)

    def close(self) -> None:
        """Close the file (not stderr). Lines recorded afterwards are ignored, not errors: a call
        finishing during shutdown must not fail because the log went first."""
        self._closed = True
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                log.error("audit log %s: closing failed (%s)", self.path, exc)
            self._file = None
