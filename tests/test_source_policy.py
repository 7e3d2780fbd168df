"""The policy for servers from remote sources: what they may run, where they may connect."""

from __future__ import annotations

import pytest

from gateway.config.model import ServerConfig, SourcePolicy
from gateway.security.source_policy import refusal

POLICY = SourcePolicy(allowed_commands=("npx", "uvx"), block_private_networks=True)


def stdio(command: str) -> ServerConfig:
    return ServerConfig(name="remote", transport="stdio", prefix="remote", command=command)


def http(url: str) -> ServerConfig:
    return ServerConfig(name="remote", transport="streamable-http", prefix="remote", url=url)


def public(host: str) -> list[str]:
    return ["93.184.216.34"]


@pytest.mark.parametrize("command", ["npx", "/usr/local/bin/npx", "uvx"])
def test_allowed_commands_run(command: str) -> None:
    assert refusal(stdio(command), POLICY) is None


@pytest.mark.parametrize("command", ["bash", "/bin/sh", "npx-evil"])
def test_other_commands_are_refused_by_name(command: str) -> None:
    assert "not among the policy's allowed_commands" in (refusal(stdio(command), POLICY) or "")


def test_without_allowed_commands_any_command_runs() -> None:
    assert refusal(stdio("anything"), SourcePolicy(allowed_commands=None)) is None


@pytest.mark.parametrize(("url", "why"), [
    ("http://127.0.0.1:8080/mcp", "loopback"),
    ("http://[::1]/mcp", "loopback"),
    ("http://10.1.2.3/mcp", "a private address"),
    ("http://192.168.0.10/mcp", "a private address"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://[fe80::1]/mcp", "link-local"),
    ("http://[::ffff:10.0.0.1]/mcp", "a private address"),
    ("http://0.0.0.0/mcp", "unspecified"),
    ("http://localhost:3000/mcp", "internal"),
    ("http://metadata.google.internal/computeMetadata/v1/", "internal"),
])
def test_internal_addresses_are_refused(url: str, why: str) -> None:
    assert why in (refusal(http(url), POLICY, resolver=public) or "")


def test_a_name_that_resolves_inside_is_refused() -> None:
    why = refusal(http("https://innocent.example.com/mcp"), POLICY, resolver=lambda host: ["10.0.0.5"])
    assert why is not None and "10.0.0.5" in why


def test_a_public_url_is_allowed_and_a_name_that_does_not_resolve_is_not() -> None:
    assert refusal(http("https://mcp.example.com/mcp"), POLICY, resolver=public) is None
    assert "does not resolve" in (refusal(http("https://nowhere.invalid/mcp"), POLICY, resolver=lambda h: []) or "")


def test_private_networks_may_be_allowed_and_no_policy_allows_everything() -> None:
    assert refusal(http("http://10.0.0.1/mcp"), SourcePolicy(block_private_networks=False)) is None
    assert refusal(http("http://10.0.0.1/mcp"), None) is None
