"""Every file in examples/ is valid and loads into the model its comments promise."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.loader import check_file
from gateway.config.model import GatewayConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ENV = {
    "GITHUB_TOKEN": "ghp-example", "DOCS_TOKEN": "docs-example", "SEARCH_TOKEN": "search-example",
    "MCPGW_CI_KEY": "ci-key-0123456789abcdef", "MCPGW_APP_KEY": "app-key-0123456789abcdef",
    "MCPGW_SESSION_KEY": "session-key-0123456789abcdef0123456789", "PLUGGEDIN_API_KEY": "pg_in_" + "a" * 64,
}


def load(name: str) -> GatewayConfig:
    """An example's model. Its only problems may be the warnings that a setting it shows is not
    enforced yet (the examples show the whole contract, ahead of the code)."""
    result = check_file(EXAMPLES / name, ENV)
    assert [p.render() for p in result.problems if p.code != "not-supported-yet"] == []
    assert result.config is not None
    return result.config


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_valid_and_declares_its_schema(path: Path) -> None:
    load(path.name)
    assert path.read_text().startswith("# yaml-language-server: $schema=../schemas/mcpgw.schema.json\n")


def test_quickstart_runs_the_bundled_demo_server_over_stdio() -> None:
    config = load("quickstart.yaml")
    demo = config.servers["demo"]
    assert (demo.transport, demo.command, demo.args, demo.prefix) == ("stdio", "python", ("-m", "gateway.demo"), "demo")
    assert config.gateway.transport == "stdio"


def test_minimal_is_one_stdio_server_named_by_its_key() -> None:
    config = load("minimal.yaml")
    assert list(config.servers) == ["time"]
    assert config.servers["time"].prefix == "time"


def test_multi_server_mixes_transports_and_merges_anchored_defaults() -> None:
    config = load("multi-server.yaml")
    transports = {name: s.transport for name, s in config.servers.items()}
    assert transports == {"github": "stdio", "time": "stdio", "docs": "streamable-http", "legacy-search": "sse"}
    github, docs = config.servers["github"], config.servers["docs"]
    assert (github.timeout, github.retry.attempts, github.circuit_breaker.failures) == (30.0, 3, 5)
    assert github.prefix == "gh" and config.servers["time"].prefix == ""
    assert github.tools.rename == {"search_issues": "find_issues"}
    assert docs.headers["Authorization"].reveal() == "Bearer docs-example"
    assert docs.tools.timeouts == {"build_index": 300.0}


def test_production_http_has_auth_limits_cors_and_namespaces() -> None:
    config = load("production-http.yaml")
    assert config.gateway.transport == "streamable-http"
    assert config.gateway.http.max_body_bytes == 4 * 2**20
    assert config.auth is not None and config.auth.lazy
    assert [k.name for k in config.auth.api_keys] == ["ci-bot", "web-app", "oncall"]
    assert config.auth.api_keys[0].key is not None and config.auth.api_keys[0].key.reveal() == ENV["MCPGW_CI_KEY"]
    assert config.namespaces["web"].servers == ("search", "time")
    assert config.rate_limits is not None and [r.scope for r in config.rate_limits.rules] == ["key", "tool", "server"]
    assert config.cors is not None and config.cors.max_age == 3600.0
    assert config.observability.audit is not None and config.observability.log.format == "json"


def test_pluggedin_example_defaults_base_url_and_keeps_key_secret() -> None:
    config = load("pluggedin.yaml")
    (source,) = config.sources
    assert source.base_url == "https://plugged.in"
    assert source.api_key.reveal() == ENV["PLUGGEDIN_API_KEY"]
    assert ENV["PLUGGEDIN_API_KEY"] not in repr(config)
    assert source.policy is not None and source.policy.allowed_commands == ("npx", "uvx")
