"""Cross-checks the schema cannot express, run on the model once its shape is right.

Pure: each check reads the model and yields Findings addressed by JSON pointer; the pipeline turns
them into positioned Problems. Adding a check means adding one generator to ``CHECKS``.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Callable, Iterable, Iterator
from urllib.parse import urlsplit

from gateway.config import pointer as ptr
from gateway.config.model import GatewayConfig, NameFilter, Secret, ToolRules


@dataclass(frozen=True, slots=True)
class Finding:
    pointer: str
    code: str
    message: str
    hint: str | None = None
    severity: str = "error"
    at_key: bool = False


Check = Callable[[GatewayConfig], Iterable[Finding]]

MIN_NAME_ROOM = 16  # characters a prefixed name should keep for the upstream's own name
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "host", "content-length", "content-type", "accept", "mcp-session-id", "mcp-protocol-version"}
_GLOB_CHARS = re.compile(r"[A-Za-z0-9_*?\[\]!-]+")
_STDIO_ONLY = ("command", "args", "env", "cwd")
_HTTP_ONLY = ("url", "headers", "auth")


def _shown(value: str) -> str:
    """A value as it may appear in a message: one that came from ``${...}`` only as written."""
    return getattr(value, "written_as", value)


def _did_you_mean(name: str, options: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"did you mean `{close[0]}`?" if close else None


def check_prefixes(config: GatewayConfig) -> Iterator[Finding]:
    sep = config.gateway.naming.separator
    limit = config.gateway.naming.max_tool_name_length
    owners: dict[str, str] = {}
    for name, server in config.servers.items():
        where = f"/servers/{name}/prefix" if server.prefix != name else f"/servers/{name}"
        if sep in server.prefix:
            hint = "set `prefix` to a name without it" if server.prefix == name else None
            yield Finding(where, "prefix-separator", f"prefix `{_shown(server.prefix)}` contains the separator `{sep}`",
                          hint, at_key=server.prefix == name)
        if server.prefix and server.prefix in owners:
            yield Finding(where, "duplicate-prefix",
                          f"prefix `{_shown(server.prefix)}` is already used by server `{owners[server.prefix]}`",
                          "give one of them another `prefix`", at_key=server.prefix == name)
        owners.setdefault(server.prefix, name)
        room = limit - len(server.prefix) - len(sep)
        if server.prefix and room < MIN_NAME_ROOM:
            yield Finding(where, "long-prefix",
                          f"prefix `{_shown(server.prefix)}` leaves {max(room, 0)} of {limit} characters for tool names",
                          "set a shorter `prefix`", "error" if room < 1 else "warning", at_key=server.prefix == name)


def check_transport_keys(config: GatewayConfig) -> Iterator[Finding]:
    for name, server in config.servers.items():
        foreign = _HTTP_ONLY if server.transport == "stdio" else _STDIO_ONLY
        for key in foreign:
            if getattr(server, key):
                yield Finding(f"/servers/{name}/{key}", "transport-mismatch",
                              f"`{key}` does not apply to a {server.transport} server", at_key=True)


def check_urls(config: GatewayConfig) -> Iterator[Finding]:
    for pointer, url in _urls(config):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            yield Finding(pointer, "bad-url", f"`{_shown(url)}` is not an http(s) URL with a host",
                          "write it as https://host/path")


def _urls(config: GatewayConfig) -> Iterator[tuple[str, str]]:
    for name, server in config.servers.items():
        if server.url is not None:
            yield f"/servers/{name}/url", server.url
        for key in ("token_url", "authorization_url", "resource"):
            if server.auth and getattr(server.auth, key):
                yield f"/servers/{name}/auth/{key}", getattr(server.auth, key)
    oauth = config.auth.oauth if config.auth else None
    if oauth:
        for key in ("issuer", "jwks_url", "resource"):
            if getattr(oauth, key):
                yield f"/auth/oauth/{key}", getattr(oauth, key)
        for i, url in enumerate(oauth.authorization_servers):
            yield f"/auth/oauth/authorization_servers/{i}", url
    for i, source in enumerate(config.sources):
        yield f"/sources/{i}/base_url", source.base_url


def check_headers(config: GatewayConfig) -> Iterator[Finding]:
    limit = config.gateway.http.max_header_bytes
    for name, server in config.servers.items():
        for header, value in server.headers.items():
            pointer = ptr.join(f"/servers/{name}/headers", header)
            if header.lower() in _HOP_BY_HOP:
                yield Finding(pointer, "reserved-header", f"header `{header}` is set by the gateway and cannot be configured",
                              at_key=True)
            if "\r" in value.reveal() or "\n" in value.reveal():
                yield Finding(pointer, "bad-header", f"header `{header}` contains a line break (written as {value.written_as})")
            if len(value.reveal().encode()) > limit:
                yield Finding(pointer, "bad-header", f"header `{header}` is longer than {limit} bytes")


def check_namespaces(config: GatewayConfig) -> Iterator[Finding]:
    for ns_name, namespace in config.namespaces.items():
        for i, server in enumerate(namespace.servers):
            if server not in config.servers and not config.sources:
                yield Finding(f"/namespaces/{ns_name}/servers/{i}", "unknown-server", f"no server is named `{_shown(server)}`",
                              _did_you_mean(server, config.servers))
            elif server not in config.servers:
                yield Finding(f"/namespaces/{ns_name}/servers/{i}", "unknown-server",
                              f"no server in this file is named `{_shown(server)}`; it must come from a source",
                              severity="warning")


def check_auth(config: GatewayConfig) -> Iterator[Finding]:
    auth = config.auth
    if auth is None:
        return
    if not auth.api_keys and auth.oauth is None:
        yield Finding("/auth", "no-credentials", "`auth` has neither `api_keys` nor `oauth`: nobody could call",
                      "add api_keys, or remove the auth section")
    if config.gateway.transport == "stdio":
        yield Finding("/auth", "auth-on-stdio", "`auth` applies to HTTP only; over stdio the client is trusted",
                      severity="warning")
    names: dict[str, int] = {}
    values: dict[str, str] = {}
    for i, key in enumerate(auth.api_keys):
        if key.name in names:
            yield Finding(f"/auth/api_keys/{i}/name", "duplicate-key-name", f"API key name `{_shown(key.name)}` is used twice")
        names.setdefault(key.name, i)
        secret = key.key.reveal() if key.key else key.key_sha256.lower()  # type: ignore[union-attr]
        if secret in values:
            yield Finding(f"/auth/api_keys/{i}", "duplicate-key", f"API keys `{_shown(values[secret])}` and `{_shown(key.name)}` are the same key")
        values.setdefault(secret, key.name)
        for j, ns in enumerate(key.namespaces or ()):
            if ns not in config.namespaces:
                yield Finding(f"/auth/api_keys/{i}/namespaces/{j}", "unknown-namespace", f"no namespace is named `{_shown(ns)}`",
                              _did_you_mean(ns, config.namespaces))


def check_literal_secrets(config: GatewayConfig) -> Iterator[Finding]:
    """Secrets pasted into the file end up in Git; point at the reference syntax instead."""
    candidates: list[tuple[str, Secret | None]] = [("/gateway/http/session_signing_key", config.gateway.http.session_signing_key)]
    if config.auth:
        candidates += [(f"/auth/api_keys/{i}/key", k.key) for i, k in enumerate(config.auth.api_keys)]
    candidates += [(f"/sources/{i}/api_key", s.api_key) for i, s in enumerate(config.sources)]
    for name, server in config.servers.items():
        if server.auth:
            candidates += [(f"/servers/{name}/auth/token", server.auth.token),
                           (f"/servers/{name}/auth/client_secret", server.auth.client_secret)]
    for pointer, secret in candidates:
        if secret is not None and not secret.is_reference:
            yield Finding(pointer, "literal-secret", "a secret is written into the file",
                          "reference it: ${VAR} or ${file:/run/secrets/name}", "warning")


def check_rate_limits(config: GatewayConfig) -> Iterator[Finding]:
    if config.rate_limits is None:
        return
    for i, rule in enumerate(config.rate_limits.rules):
        pointer = f"/rate_limits/rules/{i}/match"
        if rule.match is None:
            continue
        if rule.scope in ("global", "key"):
            yield Finding(pointer, "match-scope", f"`match` applies to the tool and server scopes, not `{rule.scope}`")
        elif not _GLOB_CHARS.fullmatch(rule.match) or rule.match.count("[") != rule.match.count("]"):
            yield Finding(pointer, "bad-match", f"`{_shown(rule.match)}` is not a valid name glob",
                          "use letters, digits, `_`, `-` and the wildcards `*`, `?`, `[...]`")
        elif rule.scope == "server" and not any(fnmatchcase(n, rule.match) for n in config.servers) and not config.sources:
            yield Finding(pointer, "match-nothing", f"`{_shown(rule.match)}` matches no server", severity="warning")


def check_server_policies(config: GatewayConfig) -> Iterator[Finding]:
    for name, server in config.servers.items():
        base = f"/servers/{name}"
        if server.retry.backoff > server.retry.max_backoff:
            yield Finding(f"{base}/retry/backoff", "conflict", "`backoff` is longer than `max_backoff`")
        if server.health_check.enabled and server.health_check.timeout >= server.health_check.interval:
            yield Finding(f"{base}/health_check/timeout", "conflict", "`timeout` must be shorter than `interval`")
        if server.auth and server.headers.get("Authorization") is not None:
            yield Finding(f"{base}/headers/Authorization", "conflict", "`auth` and an `Authorization` header both set the credentials",
                          at_key=True)
        yield from _check_filter(f"{base}/tools", server.tools)
        yield from _check_filter(f"{base}/prompts", server.prompts)


def _check_filter(base: str, rules: NameFilter | ToolRules) -> Iterator[Finding]:
    targets: dict[str, str] = {}
    for source, target in rules.rename.items():
        if target in targets:
            yield Finding(f"{base}/rename/{source}", "rename-clash", f"`{source}` and `{targets[target]}` are both renamed to `{_shown(target)}`")
        targets.setdefault(target, source)
    for i, pattern in enumerate(rules.deny):
        if rules.allow and pattern in rules.allow:
            yield Finding(f"{base}/deny/{i}", "allow-deny", f"`{_shown(pattern)}` is both allowed and denied (deny wins)", severity="warning")


def check_not_yet_supported(config: GatewayConfig) -> Iterator[Finding]:
    """Settings the contract has but this version does not act on yet: say so instead of ignoring
    them silently (a security setting that is not enforced must never look as if it were)."""
    for name, server in config.servers.items():
        for key in ("audience", "authorization_url", "resource"):
            if server.auth is not None and getattr(server.auth, key):
                yield Finding(f"/servers/{name}/auth/{key}", "not-supported-yet",
                              f"`{key}` is not used yet: the authorization server is discovered from the server's "
                              "metadata, and the server's URL is sent as the resource", severity="warning", at_key=True)


def check_session_signing(config: GatewayConfig) -> Iterator[Finding]:
    """A signing key for sessions that are never opened is a setting someone believes in."""
    http = config.gateway.http
    if http.session_signing_key is not None and http.stateless:
        yield Finding("/gateway/http/session_signing_key", "unused-setting",
                      "stateless serving opens no sessions: the signing key is not used", severity="warning",
                      at_key=True)


def check_rate_limit_storage(config: GatewayConfig) -> Iterator[Finding]:
    """A Redis store must be a URL the client can use, with the package to reach it installed.
    The messages never quote the URL: it may carry a password."""
    storage = config.rate_limits.storage if config.rate_limits else "memory"
    if storage == "memory":
        return
    pointer = "/rate_limits/storage"
    problem = _redis_url_problem(storage)
    if problem:
        yield Finding(pointer, "bad-url", f"not a usable Redis URL: {problem}", "redis://[:PASSWORD@]HOST[:PORT][/DB]")
        return
    password = urlsplit(_shown(storage)).password  # as written: a `${...}` reference is no leak
    if password and "${" not in password:
        yield Finding(pointer, "literal-secret", "a password is written into the file",
                      "reference it: redis://:${REDIS_PASSWORD}@HOST:PORT/DB", "warning")
    if importlib.util.find_spec("redis") is None:
        yield Finding(pointer, "missing-package", "shared rate limits need the `redis` package, which is not installed",
                      "pip install 'mcpgw[redis]'")


def _redis_url_problem(url: str) -> str | None:
    """What keeps ``url`` from being a Redis URL, worded without its contents; ``None`` if nothing."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "its host or port cannot be read (a port is a number from 0 to 65535)"
    if not parts.hostname:
        return "it names no host"
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        return "its database (the path) is not a number"
    return None


def check_cors(config: GatewayConfig) -> Iterator[Finding]:
    cors = config.cors
    if cors and cors.allow_credentials and "*" in cors.allow_origins:
        yield Finding("/cors/allow_credentials", "conflict", "credentials cannot be allowed for the origin `*`",
                      "list the origins explicitly")


def check_sources(config: GatewayConfig) -> Iterator[Finding]:
    seen: set[str] = set()
    for i, source in enumerate(config.sources):
        if source.name in seen:
            yield Finding(f"/sources/{i}/name", "duplicate-source", f"a source named `{_shown(source.name)}` is already declared",
                          "give each source its own `name`")
        seen.add(source.name)


CHECKS: tuple[Check, ...] = (
    check_prefixes, check_transport_keys, check_urls, check_headers, check_namespaces, check_auth,
    check_literal_secrets, check_rate_limits, check_rate_limit_storage, check_server_policies, check_cors,
    check_sources, check_not_yet_supported, check_session_signing,
)


def run_checks(config: GatewayConfig) -> list[Finding]:
    return [finding for check in CHECKS for finding in check(config)]
