"""The registry of handshake-era client connections (``sessions.SessionRegistry.seen``): each
connection counted once however many requests it makes, forgotten when it goes, a new one
counted even where it takes the place (and the ``id``) of one that went."""

from __future__ import annotations

import gc
from types import SimpleNamespace
from typing import Any

from gateway.sessions import SessionRegistry


class Connection:
    """Stands in for the SDK's connection object: anything weakly referenceable."""


def _ctx(connection: Any, version: str = "2025-11-25") -> Any:
    return SimpleNamespace(session=SimpleNamespace(_connection=connection), protocol_version=version)


def test_a_connection_is_counted_once_and_forgotten_when_it_goes() -> None:
    registry = SessionRegistry()
    first, second = Connection(), Connection()
    for _ in range(3):
        registry.seen("/mcp", _ctx(first))
        registry.seen("/mcp", _ctx(second))
    registry.seen("/ns/team/mcp", _ctx(first))  # another endpoint counts it there too
    assert registry.count() == 3
    registry.seen("/mcp", _ctx(Connection(), version="2026-07-28"))  # stateless: not a connection to keep
    registry.seen("/mcp", _ctx(None))
    assert registry.count() == 3
    del first
    gc.collect()
    assert registry.count() == 1
    assert len(registry._known) == 1  # the one left: nothing kept for the one that went


def test_a_new_connection_is_counted_even_with_the_id_of_one_that_went() -> None:
    registry = SessionRegistry()
    for _ in range(50):  # freed and made again: CPython reuses the memory, and with it the id
        connection = Connection()
        registry.seen("/mcp", _ctx(connection))
        registry.seen("/mcp", _ctx(connection))
        assert registry.count() == 1
        del connection
        assert registry.count() == 0 and registry._known == {}
