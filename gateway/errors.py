"""The exceptions mcpgw raises, as one tree so callers can catch at the depth they care about.

::

    GatewayError                    anything mcpgw raises on purpose
    ├── ConfigError                 a configuration could not be used
    │   ├── ConfigFileError         the file itself cannot be read (missing, a directory, unreadable);
    │   │                           a usage error: `mcpgw validate` exits 2
    │   └── ConfigInvalid           the file was read but has problems; carries every Problem found;
    │                               `mcpgw validate` exits 1
    ├── UpstreamError               one upstream server failed a request; names the server
    │   ├── UpstreamUnavailable     not connected (never started, crashed, connection lost)
    │   ├── UpstreamTimeout         did not answer within its timeout
    │   └── UpstreamInvalid         answered with a result that breaks the client's protocol version
    ├── RateLimited                 a request exceeded a rate limit (security/limits.py); says when to
    │                               retry; clients see JSON-RPC -32029 or HTTP 429 with Retry-After
    └── ReloadRejected              a new configuration could not be put in service (runtime.py)

Foreign exceptions (``OSError``, ``yaml.YAMLError``, ``jsonschema`` errors) never escape the config
package: they are translated where they happen into Problems or into these classes, chained with
``raise ... from``, and their messages never carry secret values. Transport failures of an upstream
(``OSError``, ``httpx2`` errors, closed streams, the SDK's ``CONNECTION_CLOSED``) are translated in
one place, ``Upstream.request``; JSON-RPC errors the upstream itself answered pass through as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config.problems import Problem


class GatewayError(Exception):
    """Base of every exception mcpgw raises on purpose."""


class ConfigError(GatewayError):
    """A configuration could not be used."""


class ConfigFileError(ConfigError):
    """The configuration file cannot be read at all (a usage error, not a problem inside the file)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ConfigInvalid(ConfigError):
    """The configuration was read but has problems; ``problems`` holds every one found."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        errors = [p for p in problems if p.is_error]
        first = errors[0].render() if errors else "invalid configuration"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)
        self.problems = problems


class UpstreamError(GatewayError):
    """An upstream server could not serve a request; the message names the server."""

    def __init__(self, server: str, message: str) -> None:
        super().__init__(message)
        self.server = server


class UpstreamUnavailable(UpstreamError):
    """The upstream is not connected: it never started, crashed, or its connection was lost."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within its configured timeout (the request is cancelled)."""


class UpstreamInvalid(UpstreamError):
    """The upstream answered with a result that breaks the protocol (checked against the version
    the client speaks, before it is passed on); the message says where, never the values."""
