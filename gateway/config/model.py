"""The configuration as the runtime sees it: frozen, slotted dataclasses, built once per load.

The runtime never reads the raw YAML dict. Durations are seconds (float), sizes are bytes (int),
lists are tuples, mappings are read-only. Defaults here are the defaults: the schema repeats them
for editors and docs, and a test keeps the two equal. Values that are secrets by nature are
``Secret``, whose ``repr`` shows only how the value was written (``${GITHUB_TOKEN}``) even when it
was written literally; any other string that came from ``${...}`` is ``Expanded``, whose ``repr``
is the reference too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Literal, Mapping, Optional

Duration = Annotated[float, "duration"]
Size = Annotated[int, "size"]


def _frozen_map() -> Mapping:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret value that cannot leak through ``repr``, ``str`` or f-strings by accident."""

    value: str = field(repr=False)
    written_as: str = "***"

    def reveal(self) -> str:
        """The value itself: call this only where it leaves the process (a header, an env var)."""
        return self.value

    @property
    def is_reference(self) -> bool:
        return "${" in self.written_as

    def __repr__(self) -> str:
        return f"Secret({self.written_as!r})"

    __str__ = __repr__


class Expanded(str):
    """A plain string that came from ``${...}``: it is the value everywhere except ``repr``, which
    shows the reference it was written as, so printing a model never prints what it expanded to."""

    written_as: str

    def __new__(cls, value: str, written_as: str) -> "Expanded":
        self = super().__new__(cls, value)
        self.written_as = written_as
        return self

    def __repr__(self) -> str:
        return repr(self.written_as)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_file: str
    key_file: str


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 12006
    path: str = "/mcp"
    stateless: bool = False
    json_response: bool = False
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "[::1]")
    allowed_origins: tuple[str, ...] = ()
    max_body_bytes: Size = 4 * 2**20
    max_header_bytes: Size = 8 * 2**10
    keepalive: Duration = 15.0
    session_idle_timeout: Duration = 1800.0
    session_signing_key: Optional[Secret] = None
    tls: Optional[TlsConfig] = None


@dataclass(frozen=True, slots=True)
class NamingConfig:
    separator: str = "__"
    max_tool_name_length: int = 64
    on_collision: Literal["first", "reject"] = "first"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    name: str = "mcpgw"
    instructions: Optional[str] = None
    transport: Literal["stdio", "streamable-http"] = "stdio"
    drain_timeout: Duration = 10.0
    http: HttpConfig = HttpConfig()
    naming: NamingConfig = NamingConfig()


@dataclass(frozen=True, slots=True)
class NameFilter:
    """allow/deny globs on upstream names, and renames (before the prefix is added)."""

    allow: Optional[tuple[str, ...]] = None
    deny: tuple[str, ...] = ()
    rename: Mapping[str, str] = field(default_factory=_frozen_map)


@dataclass(frozen=True, slots=True)
class ToolRules:
    allow: Optional[tuple[str, ...]] = None
    deny: tuple[str, ...] = ()
    rename: Mapping[str, str] = field(default_factory=_frozen_map)
    timeouts: Mapping[str, Duration] = field(default_factory=_frozen_map)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3
    backoff: Duration = 0.5
    max_backoff: Duration = 10.0
    tool_calls: bool = False


@dataclass(frozen=True, slots=True)
class CircuitBreakerPolicy:
    enabled: bool = True
    failures: int = 5
    cooldown: Duration = 30.0
    on_open: Literal["fail", "hide"] = "fail"


@dataclass(frozen=True, slots=True)
class HealthCheckPolicy:
    enabled: bool = True
    interval: Duration = 30.0
    timeout: Duration = 5.0


@dataclass(frozen=True, slots=True)
class UpstreamAuth:
    type: Literal["bearer", "oauth_client_credentials", "oauth_refresh_token"]
    token: Optional[Secret] = None
    client_id: Optional[str] = None
    client_secret: Optional[Secret] = None
    token_url: Optional[str] = None
    authorization_url: Optional[str] = None
    scopes: tuple[str, ...] = ()
    audience: Optional[str] = None
    resource: Optional[str] = None
    token_file: Optional[str] = None
    redirect_port: int = 33418


Transport = Literal["stdio", "streamable-http", "sse"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One upstream. ``transport`` and ``prefix`` are always set (inferred when not written)."""

    name: str
    transport: Transport
    prefix: str
    description: Optional[str] = None
    enabled: bool = True
    command: Optional[str] = None
    args: tuple[str, ...] = ()
    env: Mapping[str, Secret] = field(default_factory=_frozen_map)
    cwd: Optional[str] = None
    url: Optional[str] = None
    headers: Mapping[str, Secret] = field(default_factory=_frozen_map)
    auth: Optional[UpstreamAuth] = None
    protocol: Literal["auto", "2025-11-25", "2026-07-28"] = "auto"
    session: Literal["shared", "per_client"] = "shared"
    connect_timeout: Duration = 30.0
    timeout: Duration = 60.0
    validate_arguments: bool = True
    tools: ToolRules = ToolRules()
    prompts: NameFilter = NameFilter()
    resources: NameFilter = NameFilter()
    retry: RetryPolicy = RetryPolicy()
    circuit_breaker: CircuitBreakerPolicy = CircuitBreakerPolicy()
    health_check: HealthCheckPolicy = HealthCheckPolicy()


@dataclass(frozen=True, slots=True)
class NamespaceConfig:
    name: str
    servers: tuple[str, ...]
    description: Optional[str] = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    key: Optional[Secret] = None
    key_sha256: Optional[str] = None
    namespaces: Optional[tuple[str, ...]] = None


@dataclass(frozen=True, slots=True)
class OAuthResourceServer:
    issuer: str
    audience: str
    jwks_url: str
    required_scopes: tuple[str, ...] = ()
    resource: Optional[str] = None
    authorization_servers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthConfig:
    lazy: bool = False
    api_keys: tuple[ApiKey, ...] = ()
    oauth: Optional[OAuthResourceServer] = None


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    scope: Literal["global", "key", "server", "tool"]
    requests: int
    per: Duration
    match: Optional[str] = None
    methods: Optional[tuple[str, ...]] = None


DEFAULT_RATE_LIMIT_RULES = (
    RateLimitRule(scope="key", requests=60, per=60.0, methods=("tools/call",)),
    RateLimitRule(scope="key", requests=100, per=60.0),
)


@dataclass(frozen=True, slots=True)
class RateLimits:
    storage: str = "memory"
    max_wait: Duration = 0.0
    rules: tuple[RateLimitRule, ...] = DEFAULT_RATE_LIMIT_RULES


@dataclass(frozen=True, slots=True)
class CorsConfig:
    allow_origins: tuple[str, ...]
    allow_methods: tuple[str, ...] = ("GET", "POST", "DELETE", "OPTIONS")
    allow_headers: tuple[str, ...] = ("Authorization", "Content-Type", "Last-Event-ID",
                                      "Mcp-Protocol-Version", "Mcp-Session-Id")
    expose_headers: tuple[str, ...] = ("Mcp-Protocol-Version", "Mcp-Session-Id")
    allow_credentials: bool = False
    max_age: Duration = 600.0


@dataclass(frozen=True, slots=True)
class SourcePolicy:
    allowed_commands: Optional[tuple[str, ...]] = None
    block_private_networks: bool = True


@dataclass(frozen=True, slots=True)
class PluggedinSource:
    type: Literal["pluggedin"]
    api_key: Secret
    name: str = "pluggedin"
    base_url: str = "https://plugged.in"
    refresh: Duration = 60.0
    timeout: Duration = 30.0
    prefix: Literal["slug", "uuid", "name"] = "slug"
    on_conflict: Literal["prefer_local", "prefer_remote", "reject"] = "prefer_local"
    report_activity: bool = False
    policy: Optional[SourcePolicy] = None


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True, slots=True)
class AuditConfig:
    path: str = "stderr"
    include_arguments: bool = False


@dataclass(frozen=True, slots=True)
class ObservabilityConfig:
    log: LogConfig = LogConfig()
    metrics: bool = True
    status_port: Optional[int] = None
    audit: Optional[AuditConfig] = None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """A whole, valid configuration."""

    version: int = 1
    gateway: GatewaySettings = GatewaySettings()
    servers: Mapping[str, ServerConfig] = field(default_factory=_frozen_map)
    namespaces: Mapping[str, NamespaceConfig] = field(default_factory=_frozen_map)
    auth: Optional[AuthConfig] = None
    rate_limits: Optional[RateLimits] = None
    cors: Optional[CorsConfig] = None
    sources: tuple[PluggedinSource, ...] = ()
    observability: ObservabilityConfig = ObservabilityConfig()
