"""Who is subscribed to which upstream resource (``resources/subscribe``), reference-counted.

The upstream is subscribed once, for the first subscriber of a URI, and unsubscribed after the
last one leaves. Subscribers are held weakly: a client that goes away without unsubscribing
drops out by itself, and the next update for its URI finds nobody to tell and ends the upstream
subscription. Pure bookkeeping; the messages are sent by the caller.
"""

from __future__ import annotations

import weakref
from typing import Any

Key = tuple[str, str]  # (server, resource URI)


class ResourceSubscriptions:
    def __init__(self) -> None:
        self._subscribers: dict[Key, weakref.WeakSet[Any]] = {}

    def add(self, server: str, uri: str, subscriber: Any) -> bool:
        """Record the subscription; True if it is the first for this URI (subscribe upstream)."""
        subscribers = self._subscribers.setdefault((server, uri), weakref.WeakSet())
        first = not subscribers
        subscribers.add(subscriber)
        return first

    def remove(self, server: str, uri: str, subscriber: Any) -> bool:
        """Forget the subscription; True if nobody is left for this URI (unsubscribe upstream)."""
        subscribers = self._subscribers.get((server, uri))
        if subscribers is None or subscriber not in subscribers:
            return False
        subscribers.discard(subscriber)
        return self._drop_if_empty((server, uri))

    def subscribers(self, server: str, uri: str) -> list[Any]:
        return list(self._subscribers.get((server, uri), ()))

    def drop_if_empty(self, server: str, uri: str) -> bool:
        """True (and forgotten) if every subscriber of the URI has gone away."""
        return self._drop_if_empty((server, uri))

    def uris(self, server: str) -> list[str]:
        """The URIs of ``server`` someone is subscribed to (to subscribe again after a reconnect)."""
        return [uri for (name, uri), subscribers in self._subscribers.items() if name == server and subscribers]

    def _drop_if_empty(self, key: Key) -> bool:
        subscribers = self._subscribers.get(key)
        if subscribers is not None and not subscribers:
            del self._subscribers[key]
            return True
        return False
