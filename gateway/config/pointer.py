"""JSON pointers (RFC 6901): the one way every layer of the config pipeline names a place."""

from __future__ import annotations

from typing import Iterable


def escape(token: object) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def join(base: str, *tokens: object) -> str:
    """``join("/servers", "a/b")`` -> ``/servers/a~1b``."""
    return base + "".join("/" + escape(t) for t in tokens)


def from_path(path: Iterable[object]) -> str:
    return join("", *path)


def parent(pointer: str) -> str:
    return pointer.rsplit("/", 1)[0] if pointer else ""
