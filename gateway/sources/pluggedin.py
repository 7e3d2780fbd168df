"""Servers from a plugged.in App: its ``GET /api/mcp-servers`` answer turned into ``ServerConfig``s.

The App's records are remote input. Whoever controls the App (or the account behind an API key)
would otherwise choose what this host runs and where it connects, and a single malformed row
would otherwise take every other server down with it. So each record is read on its own: one that
cannot be used safely (wrong types, a URL that is not http(s), a header that could split a request,
a command with a NUL, a name that cannot be a server name) is skipped with one line saying why, and
the others are used. The source's ``policy`` is applied last, to what would otherwise be served.

Problem lines name a record by its slug, uuid or name and never quote an env value, a header value
or a URL: those carry credentials. Env and header values become ``Secret`` (the redactor learns
them once the merged configuration is put in service); a URL carrying userinfo or a query becomes
``Expanded``, whose ``repr`` shows it with those parts masked.

Everything here is pure except :func:`fetch_records` (one HTTP request) and the policy's resolver,
which may look up DNS: with ``block_private_networks`` and the default resolver, call
:func:`servers_from_records` from a worker thread.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, Mapping, Union
from urllib.parse import urlsplit

import anyio
import httpx2

from gateway.config.checks import _HOP_BY_HOP as RESERVED_HEADERS
from gateway.config.model import (
    Expanded,
    GatewayConfig,
    HttpConfig,
    NamingConfig,
    PluggedinSource,
    Secret,
    ServerConfig,
    Transport,
)
from gateway.names import expose_name
from gateway.security import source_policy

__all__ = [
    "INSTRUCTIONS_PROMPT", "FetchOutcome", "Instructions", "Origin", "RemoteCatalog", "fetch_records", "merge",
    "remote_servers", "servers_from_records",
]

INSTRUCTIONS_PROMPT = "system_context"
"""The name (before the server's prefix) of the prompt that serves a server's custom instructions;
the App's own ``/api/custom-instructions`` calls it ``<server>__system_context``."""

MAX_SERVER_NAME = 48
MAX_HEADER_BYTES = HttpConfig().max_header_bytes
MAX_BODY_BYTES = 32 * 2**20
"""A bound on the App's answer: a few thousand servers fit many times over, a runaway body does not."""
MAX_APP_TEXT = 300

_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_-]+")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TYPES: dict[str, Transport] = {"STDIO": "stdio", "SSE": "sse", "STREAMABLE_HTTP": "streamable-http"}
_LEGACY_TRANSPORTS: dict[str, Transport] = {"stdio": "stdio", "sse": "sse", "streamable_http": "streamable-http",
                                            "streamable-http": "streamable-http"}
_LEGACY_TRANSPORT_KEY = "__transport"
_LEGACY_OPTIONS_KEY = "__streamableHTTPOptions"


@dataclass(frozen=True, slots=True)
class Origin:
    """Who a server is in the App: what activity reports and status pages name it by."""

    uuid: str
    name: str
    slug: str | None = None


@dataclass(frozen=True, slots=True)
class Instructions:
    """A server's custom instructions, as the messages of an MCP prompt (``role`` + one content
    block each, already in MCP's shape). Treat the message dicts as read-only."""

    messages: tuple[dict[str, Any], ...]
    description: str | None = None
    name: str = INSTRUCTIONS_PROMPT


@dataclass(frozen=True, slots=True)
class RemoteCatalog:
    """What one answer of one source offers, keyed by server name, and why records were left out."""

    servers: Mapping[str, ServerConfig] = field(default_factory=lambda: MappingProxyType({}))
    instructions: Mapping[str, Instructions] = field(default_factory=lambda: MappingProxyType({}))
    origins: Mapping[str, Origin] = field(default_factory=lambda: MappingProxyType({}))
    problems: tuple[str, ...] = ()


class RecordError(ValueError):
    """Why a record cannot be used. The text never holds a secret value: it is shown to users."""


# --- records -> servers ---------------------------------------------------------------------------

def servers_from_records(records: Any, source: PluggedinSource,
                         resolver: source_policy.Resolver = source_policy.resolve) -> RemoteCatalog:
    """The servers (and their custom instructions) in the App's answer ``records``, with one problem
    line per record left out and per optional field ignored."""
    if not isinstance(records, list):
        return RemoteCatalog(problems=(f"{source.name}: the App's answer is not a list of servers",))
    servers: dict[str, ServerConfig] = {}
    instructions: dict[str, Instructions] = {}
    origins: dict[str, Origin] = {}
    problems: list[str] = []
    for index, record in enumerate(records):
        label = _label(source, record, index)
        try:
            server, origin, notes = _read_record(record, source)
        except RecordError as exc:
            problems.append(f"{label}: {exc}; skipped")
            continue
        refused = source_policy.refusal(server, source.policy, resolver)
        if refused is not None:
            problems.append(f"{label}: refused by the source's policy: {refused}; skipped")
            continue
        if server.name in servers:
            problems.append(f"{label}: the server name `{server.name}` is taken by an earlier record; skipped")
            continue
        found, instruction_notes = _instructions(record)
        problems += [f"{label}: {note}" for note in notes + instruction_notes]
        servers[server.name], origins[server.name] = server, origin
        if found is not None:
            instructions[server.name] = found
    return RemoteCatalog(MappingProxyType(servers), MappingProxyType(instructions), MappingProxyType(origins),
                         tuple(problems))


def _read_record(record: Any, source: PluggedinSource) -> tuple[ServerConfig, Origin, list[str]]:
    """The server a record defines, who it is in the App, and notes on optional fields ignored."""
    if not isinstance(record, dict):
        raise RecordError("it is not an object")
    status = record.get("status")
    if status is not None and status != "ACTIVE":
        raise RecordError(f"its status is {_shown(status)}, not ACTIVE")
    uuid, display_name = _required_text(record, "uuid"), _required_text(record, "name")
    slug = _optional_text(record, "slug") or None
    env = _env(record.get("env"))
    legacy_transport, legacy_options = env.pop(_LEGACY_TRANSPORT_KEY, None), env.pop(_LEGACY_OPTIONS_KEY, None)
    transport = _transport(record.get("type"), legacy_transport)
    name = _server_name(source.prefix, uuid, slug, display_name)
    description, notes = _description(record)
    if transport == "stdio":
        connection = _stdio(record, env, source)
    else:
        connection = _remote(record, legacy_options, source)
    server = ServerConfig(name=name, transport=transport, prefix=name, description=description, **connection)
    return server, Origin(uuid=uuid, name=display_name, slug=slug), notes


def _required_text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise RecordError(f"`{key}` is missing or not a string")
    return value


def _optional_text(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise RecordError(f"`{key}` is not a string")
    return value


def _description(record: dict[str, Any]) -> tuple[str | None, list[str]]:
    """A wrong description is cosmetic: it is dropped, the server is kept."""
    value = record.get("description")
    if value is None or isinstance(value, str):
        return value, []
    return None, ["`description` is not a string; ignored"]


def _env(value: Any) -> dict[str, str]:
    """The record's env as plain strings (legacy transport keys still in it)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError("`env` is not an object")
    for key, item in value.items():
        if not key or "=" in key or "\0" in key:
            raise RecordError(f"`env` has an invalid variable name {_shown(key)}")
        if not isinstance(item, str):
            raise RecordError(f"the value of env {_shown(key)} is not a string")
        if "\0" in item:
            raise RecordError(f"the value of env {_shown(key)} contains a NUL character")
    return dict(value)


def _transport(kind: Any, legacy: str | None) -> Transport:
    """``type`` when the record has it; else the legacy ``env.__transport``; else STDIO (old rows)."""
    if kind is not None:
        if not isinstance(kind, str) or kind not in _TYPES:
            raise RecordError(f"its type {_shown(kind)} is not STDIO, SSE or STREAMABLE_HTTP")
        return _TYPES[kind]
    if legacy is not None:
        transport = _LEGACY_TRANSPORTS.get(legacy.lower())
        if transport is None:
            raise RecordError("its legacy env.__transport is not stdio, sse or streamable_http")
        return transport
    return "stdio"


def _server_name(mode: str, uuid: str, slug: str | None, display_name: str) -> str:
    """The gateway's name for the server (also its prefix), chosen by the source's ``prefix``."""
    if mode == "uuid" or (mode == "slug" and slug is None):
        what, candidate = "uuid", uuid
    elif mode == "slug":
        what, candidate = "slug", slug or ""
    else:
        what, candidate = "name", _name_from_display(display_name)
    name = _fit_name(candidate)
    if name is None:
        raise RecordError(f"its {what} cannot be made a server name (letters, digits, `_` and `-`, "
                          "starting with a letter or digit)")
    return name


def _name_from_display(display_name: str) -> str:
    """``GitHub Tools`` -> ``github_tools``. Runs of ``_`` collapse to one, so a display name never
    yields the default separator ``__`` inside a prefix (``a  b`` would make tool names ambiguous)."""
    name = re.sub(r"[^a-z0-9_-]", "_", display_name.lower())
    return re.sub(r"_{2,}", "_", name).strip("_-")


def _fit_name(candidate: str) -> str | None:
    """``candidate`` if it is a valid server name; shortened with a hash of the whole when only its
    length is wrong (slugs may have 50 characters, names 48), so two long names stay distinct."""
    if not _NAME_CHARS.fullmatch(candidate) or not (candidate[0].isascii() and candidate[0].isalnum()):
        return None
    name = expose_name("", "", candidate, MAX_SERVER_NAME)
    return name if _SERVER_NAME.fullmatch(name) else None


def _stdio(record: dict[str, Any], env: dict[str, str], source: PluggedinSource) -> dict[str, Any]:
    command = record.get("command")
    if not isinstance(command, str) or not command.strip():
        raise RecordError("a STDIO server needs `command` (a non-empty string)")
    if "\0" in command:
        raise RecordError("`command` contains a NUL character")
    args = record.get("args")
    if args is None:
        args = []
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise RecordError("`args` is not a list of strings")
    if any("\0" in arg for arg in args):
        raise RecordError("an argument contains a NUL character")
    return {"command": command, "args": tuple(args),
            "env": MappingProxyType({key: _secret(value, source) for key, value in env.items()})}


def _remote(record: dict[str, Any], legacy_options: str | None, source: PluggedinSource) -> dict[str, Any]:
    return {"url": _url(record.get("url")), "headers": _headers(_options(record, legacy_options), source)}


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise RecordError("an SSE or Streamable HTTP server needs `url` (a string)")
    if _ANY_CONTROL.search(value) or " " in value:
        raise RecordError("`url` contains spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise RecordError("`url` is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RecordError("`url` is not an http(s) URL with a host")
    if parts.username is None and parts.password is None and not parts.query and not parts.fragment:
        return value
    return Expanded(value, _masked_url(parts))


def _masked_url(parts: Any) -> str:
    """The URL as it may be shown: credentials and query values are often keys (``?api_key=``)."""
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    port = f":{parts.port}" if parts.port is not None else ""
    userinfo = "***@" if parts.username is not None or parts.password is not None else ""
    query = "?***" if parts.query else ""
    return f"{parts.scheme}://{userinfo}{host}{port}{parts.path}{query}"


def _options(record: dict[str, Any], legacy: str | None) -> dict[str, Any]:
    """``streamableHTTPOptions``, or for old rows the JSON string in ``env.__streamableHTTPOptions``."""
    options = record.get("streamableHTTPOptions")
    if options is None and legacy is not None:
        try:
            options = json.loads(legacy)
        except ValueError:
            raise RecordError("its legacy env.__streamableHTTPOptions is not valid JSON") from None
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise RecordError("`streamableHTTPOptions` is not an object")
    return options


def _headers(options: dict[str, Any], source: PluggedinSource) -> Mapping[str, Secret]:
    """``headers`` overlaid by ``requestInit.headers`` (where the App's OAuth refresh writes the
    newest token), names compared case-insensitively as HTTP does. Values lose surrounding blanks,
    which HTTP ignores and h11 refuses to send."""
    request_init = options.get("requestInit")
    if request_init is not None and not isinstance(request_init, dict):
        raise RecordError("`streamableHTTPOptions.requestInit` is not an object")
    merged: dict[str, tuple[str, str]] = {}
    for where, raw in (("streamableHTTPOptions.headers", options.get("headers")),
                       ("streamableHTTPOptions.requestInit.headers", (request_init or {}).get("headers"))):
        for name, value in _header_pairs(raw, where):
            _check_header(name, value, where)
            merged[name.lower()] = (name, value.strip(" \t"))
    return MappingProxyType({name: _secret(value, source) for name, value in merged.values()})


def _header_pairs(raw: Any, where: str) -> list[tuple[Any, Any]]:
    """An object, or (as JavaScript's ``HeadersInit`` allows) a list of ``[name, value]`` pairs."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        return list(raw.items())
    if isinstance(raw, list) and all(isinstance(pair, list) and len(pair) == 2 for pair in raw):
        return [(pair[0], pair[1]) for pair in raw]
    raise RecordError(f"`{where}` is not an object of headers")


def _check_header(name: Any, value: Any, where: str) -> None:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise RecordError(f"`{where}` has a header name {_shown(name)} that is not an HTTP token")
    if name.lower() in RESERVED_HEADERS:
        raise RecordError(f"`{where}` sets `{name}`, which the gateway sets itself")
    if not isinstance(value, str):
        raise RecordError(f"the value of header `{name}` is not a string")
    if _CONTROL.search(value):
        raise RecordError(f"the value of header `{name}` contains a line break, NUL or control character")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_HEADER_BYTES:
        raise RecordError(f"the value of header `{name}` is longer than {MAX_HEADER_BYTES} bytes")


def _secret(value: str, source: PluggedinSource) -> Secret:
    return Secret(value, f"<from source {source.name}>")


# --- custom instructions ----------------------------------------------------------------------------

def _instructions(record: dict[str, Any]) -> tuple[Instructions | None, list[str]]:
    """The record's custom instructions as prompt messages. They are advice to the model, not part
    of the connection: when they cannot be read they are dropped (with a note) and the server kept."""
    raw = record.get("customInstructions")
    if raw is None:
        return None, []
    items = [raw] if isinstance(raw, (str, dict)) else raw
    if not isinstance(items, list):
        return None, ["`customInstructions` is not a list of messages; ignored"]
    try:
        messages = tuple(message for item in items for message in _messages(item))
    except ValueError as exc:
        return None, [f"`customInstructions`: {exc}; ignored"]
    description = record.get("customInstructionsDescription")
    if not messages:
        return None, []
    return Instructions(messages, description if isinstance(description, str) else None), []


def _messages(item: Any) -> list[dict[str, Any]]:
    """One App message as MCP prompt messages: a content array becomes one message per block,
    since an MCP prompt message holds exactly one."""
    if isinstance(item, str):
        return [{"role": "user", "content": _content(item)}]
    if not isinstance(item, dict):
        raise ValueError("a message is not an object")
    role = item.get("role", "user")
    if role not in ("user", "assistant"):
        raise ValueError(f"a message has the role {_shown(role)}, not user or assistant")
    content = item.get("content")
    blocks = content if isinstance(content, list) else [content]
    return [{"role": role, "content": _content(block)} for block in blocks]


def _content(block: Any) -> dict[str, Any]:
    if isinstance(block, str):
        return {"type": "text", "text": block}
    if isinstance(block, dict):
        kind = block.get("type", "text")
        if kind == "text" and isinstance(block.get("text"), str):
            return {"type": "text", "text": block["text"]}
        if kind in ("image", "audio") and isinstance(block.get("data"), str) and isinstance(block.get("mimeType"), str):
            return {"type": kind, "data": block["data"], "mimeType": block["mimeType"]}
        resource = block.get("resource")
        if kind == "resource" and isinstance(resource, dict) and isinstance(resource.get("uri"), str):
            return {"type": "resource", "resource": dict(resource)}
    raise ValueError("a message's content is not text, an image, audio or an embedded resource")


# --- merging ----------------------------------------------------------------------------------------

RemoteServers = Mapping[str, Union[RemoteCatalog, Mapping[str, ServerConfig]]]
"""Per source name: its catalog, or just its servers."""


def merge(local: GatewayConfig, remote: RemoteServers) -> tuple[GatewayConfig, list[str]]:
    """``local`` with the servers of its sources added (root endpoint only: namespaces list local
    servers and are left as written), and one line per server not added as offered.

    A name also declared locally follows that source's ``on_conflict``. A name offered by two
    sources goes to the one declared first in ``local.sources``, whatever that one did with it, so
    the outcome never depends on which answer arrived first. Remote servers must also leave room
    for the naming rules local servers are checked against: no separator in the prefix, no prefix
    another server already uses.
    """
    servers = dict(local.servers)
    claimed: dict[str, str] = {}
    problems: list[str] = []
    declared = {source.name for source in local.sources}
    problems += [f"{name}: not a source declared in the configuration; its servers are ignored"
                 for name in remote if name not in declared]
    for source in local.sources:
        offered = remote.get(source.name)
        for name, server in _offered_servers(offered).items():
            problem = _place(servers, local, source, name, server, claimed)
            if problem is not None:
                problems.append(problem)
    return replace(local, servers=MappingProxyType(servers)), problems


def _offered_servers(offered: RemoteCatalog | Mapping[str, ServerConfig] | None) -> Mapping[str, ServerConfig]:
    if offered is None:
        return {}
    return offered.servers if isinstance(offered, RemoteCatalog) else offered


def _place(servers: dict[str, ServerConfig], local: GatewayConfig, source: PluggedinSource, name: str,
           server: ServerConfig, claimed: dict[str, str]) -> str | None:
    """Put ``server`` into ``servers`` if the rules allow; the problem line when they do not, or when
    a local server was replaced or dropped."""
    where = f"{source.name}: server `{name}`"
    if name in claimed:
        return f"{where} is also offered by source `{claimed[name]}`, which is declared first; skipped"
    claimed[name] = source.name
    naming = _naming_problem(server, local.gateway.naming)
    if naming is not None:
        return f"{where}: {naming}; skipped"
    if name in local.servers and source.on_conflict == "prefer_local":
        return f"{where} is also declared locally; the local one is used (on_conflict: prefer_local)"
    if name in local.servers and source.on_conflict == "reject":
        del servers[name]
        return f"{where} is also declared locally; neither is used (on_conflict: reject)"
    owner = next((other.name for other in servers.values() if other.name != name and other.prefix
                  and other.prefix == server.prefix), None)
    if owner is not None:
        return f"{where}: its prefix `{server.prefix}` is already used by server `{owner}`; skipped"
    servers[name] = server
    if name in local.servers:
        return f"{where} is also declared locally; the source's one is used (on_conflict: prefer_remote)"
    return None


def _naming_problem(server: ServerConfig, naming: NamingConfig) -> str | None:
    if naming.separator in server.prefix:
        return f"its prefix contains the separator `{naming.separator}`"
    if naming.max_tool_name_length - len(server.prefix) - len(naming.separator) < 1:
        return f"its prefix leaves no room for tool names ({naming.max_tool_name_length} characters at most)"
    return None


def remote_servers(config: GatewayConfig, catalogs: Mapping[str, RemoteCatalog]) -> dict[str, str]:
    """Server name -> source name, for the servers of a merged ``config`` that came from a source
    (not those a local server won over): where to find their ``instructions`` and ``origins``."""
    owners: dict[str, str] = {}
    for source in config.sources:
        catalog = catalogs.get(source.name)
        for name, server in (catalog.servers.items() if catalog else ()):
            if name not in owners and config.servers.get(name) == server:
                owners[name] = source.name
    return owners


# --- fetching ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FetchOutcome:
    """One poll of the App: ``records`` when it answered with a list, else None and the ``reason``.
    ``unauthorized`` must be loud (the key is wrong or revoked: retrying will not help; the reason is
    the App's own ``error`` text); ``unavailable`` is transient (keep serving the last good answer,
    marked stale)."""

    kind: Literal["ok", "unauthorized", "unavailable"]
    records: list[Any] | None = None
    reason: str = ""
    status: int | None = None

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    @property
    def unauthorized(self) -> bool:
        return self.kind == "unauthorized"

    @property
    def unavailable(self) -> bool:
        return self.kind == "unavailable"

    @property
    def message(self) -> str:
        return self.reason


class _TooLarge(Exception):
    pass


async def fetch_records(source: PluggedinSource, http_client: httpx2.AsyncClient) -> FetchOutcome:
    """``GET {base_url}/api/mcp-servers`` with the source's key, bounded as a whole by
    ``source.timeout`` (a per-read timeout alone would let a trickling answer hang a poll).
    No message ever holds the key, even if the App or an error echoes it."""
    url = f"{source.base_url.rstrip('/')}/api/mcp-servers"
    key = source.api_key.reveal()
    if not key.strip():
        return FetchOutcome("unauthorized", reason=f"the source's API key is empty (written as {source.api_key.written_as})")
    try:
        with anyio.fail_after(source.timeout):
            status, body, location = await _get(http_client, url, key, source.timeout)
    except (TimeoutError, httpx2.TimeoutException):
        return _unavailable(f"no answer from {url} within {source.timeout:g} s", key)
    except _TooLarge:
        return _unavailable(f"the answer from {url} is larger than {MAX_BODY_BYTES} bytes", key)
    except httpx2.HTTPError as exc:
        return _unavailable(f"cannot reach {url}: {str(exc) or type(exc).__name__}", key)
    return _outcome(status, body, location, url, key)


async def _get(http_client: httpx2.AsyncClient, url: str, key: str, timeout: float) -> tuple[int, bytes, str | None]:
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    async with http_client.stream("GET", url, headers=headers, timeout=timeout, follow_redirects=False) as response:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise _TooLarge
        return response.status_code, bytes(body), response.headers.get("location")


def _outcome(status: int, body: bytes, location: str | None, url: str, key: str) -> FetchOutcome:
    try:
        answer: Any = json.loads(body)
    except (ValueError, RecursionError):
        answer = None
        if status == 200:
            return _unavailable(f"the answer from {url} is not JSON", key, status)
    error = _app_error(answer, key)
    if status in (401, 403):
        return FetchOutcome("unauthorized", reason=error or f"HTTP {status}", status=status)
    if 300 <= status < 400:
        target = _app_text(location, key) or "elsewhere"
        return _unavailable(f"HTTP {status}: the App redirects to {target}; set base_url to that address", key, status)
    if status != 200:
        return _unavailable(f"HTTP {status}" + (f": {error}" if error else ""), key, status)
    if not isinstance(answer, list):
        return _unavailable(f"the answer from {url} is not a list of servers", key, status)
    return FetchOutcome("ok", records=answer, status=status)


def _unavailable(message: str, key: str, status: int | None = None) -> FetchOutcome:
    return FetchOutcome("unavailable", reason=_scrub(message, key), status=status)


def _app_error(answer: Any, key: str) -> str:
    """The App's ``{"error": ...}`` text, made safe to log."""
    return _app_text(answer.get("error"), key) if isinstance(answer, dict) else ""


def _app_text(value: Any, key: str) -> str:
    """Text from the App as it may appear in a log line: one line, bounded, without the key."""
    if not isinstance(value, str):
        return ""
    text = _scrub(_ANY_CONTROL.sub(" ", value), key).strip()
    return text if len(text) <= MAX_APP_TEXT else text[:MAX_APP_TEXT] + "…"


def _scrub(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text


# --- naming records in messages ---------------------------------------------------------------------

def _label(source: PluggedinSource, record: Any, index: int) -> str:
    """How a problem line names a record: by slug, else uuid, else name (never by a value that
    could be a secret), with its position for records that have none of them."""
    if isinstance(record, dict):
        for key in ("slug", "uuid", "name"):
            value = record.get(key)
            if isinstance(value, str) and value:
                return f"{source.name}: record {index} ({key} {_shown(value)})"
    return f"{source.name}: record {index}"


def _shown(value: Any) -> str:
    """A remote value quoted in a message: one line, at most 64 characters, in backticks."""
    text = value if isinstance(value, str) else json.dumps(value) if _jsonable(value) else type(value).__name__
    text = _ANY_CONTROL.sub("?", text)
    return f"`{text if len(text) <= 64 else text[:63] + '…'}`"


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float))
