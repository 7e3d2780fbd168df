"""Servers that did not come from the local YAML (a plugged.in App, any remote source) are untrusted.

Whoever controls a remote source would otherwise choose what the gateway runs and where it
connects: a stdio command is a program started on this host, and a URL can point the gateway at
an internal service or a cloud metadata endpoint (server-side request forgery). A source's
``policy`` limits both: ``allowed_commands`` lists the stdio commands such servers may run (by
name or full path), and ``block_private_networks`` refuses URLs whose host is, or resolves to, a
loopback, private, link-local (cloud metadata included), multicast, reserved or unspecified
address. Pure, but for the resolver, which the caller may replace.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from gateway.config.model import ServerConfig, SourcePolicy

Resolver = Callable[[str], Iterable[str]]
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})


def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to (an unresolvable host resolves to none)."""
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except (OSError, UnicodeError):
        return []


def refusal(server: ServerConfig, policy: SourcePolicy | None, resolver: Resolver = resolve) -> str | None:
    """Why ``policy`` refuses ``server``; None when it may be used."""
    if policy is None:
        return None
    if server.command is not None:
        return _command_refusal(server.command, policy.allowed_commands)
    if server.url is not None and policy.block_private_networks:
        return _url_refusal(server.url, resolver)
    return None


def _command_refusal(command: str, allowed: tuple[str, ...] | None) -> str | None:
    if allowed is None or command in allowed or os.path.basename(command) in allowed:
        return None
    return f"the command `{os.path.basename(command)}` is not among the policy's allowed_commands"


def _url_refusal(url: str, resolver: Resolver) -> str | None:
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if not host:
        return "the URL has no host"
    if host == "localhost" or host.endswith(".localhost") or host in METADATA_HOSTS:
        return f"the host `{host}` is internal (block_private_networks)"
    try:
        addresses = [host] if ipaddress.ip_address(host) else []
    except ValueError:
        addresses = list(resolver(host))
        if not addresses:
            return f"the host `{host}` does not resolve"
    for address in addresses:
        why = _internal(address)
        if why is not None:
            return f"the host `{host}` is {why} ({address}; block_private_networks)"
    return None


def _internal(address: str) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for test, name in ((ip.is_unspecified, "unspecified"), (ip.is_loopback, "loopback"),
                       (ip.is_link_local, "link-local (cloud metadata lives there)"),
                       (ip.is_private, "a private address"), (ip.is_multicast, "multicast"), (ip.is_reserved, "reserved")):
        if test:
            return name
    return None
