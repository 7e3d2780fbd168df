"""The names clients see, and the globs that choose which upstream names they see at all.

Clients (Claude Desktop, Cursor, the OpenAI tool format) reject tool names longer than 64
characters or outside ``[A-Za-z0-9_-]``, and an upstream may offer either: a long prefix plus a
long tool name, or a name with ``.``, ``/`` or non-ASCII letters in it. A gateway that passed such
names on would make a whole server unusable in those clients, so every name leaves through
:func:`expose_name`, which guarantees a valid name and changes nothing that was valid already.

A changed name is *deterministic* (the same upstream name gives the same exposed name on every
start, reload and replica, so clients that remembered a tool still find it) and *distinct* (it
ends in a hash of the whole original, so two long names with a common start, or ``a.b`` and an
existing ``a_b``, do not become one). The routing table maps the exposed name back, so nothing
needs to reverse the transformation.

Pure functions only: no I/O, no state.
"""

from __future__ import annotations

import hashlib
import re
from fnmatch import fnmatchcase
from typing import Optional

__all__ = ["VALID_NAME", "HASH_LENGTH", "join_name", "expose_name", "matches"]

VALID_NAME = re.compile(r"[A-Za-z0-9_-]+")
"""What clients accept in a tool or prompt name (use with ``fullmatch``)."""

HASH_LENGTH = 8
"""Hex characters of sha256 appended to a changed name: 32 bits, plenty for one gateway's names."""

_INVALID_CHAR = re.compile(r"[^A-Za-z0-9_-]")


def join_name(prefix: str, separator: str, name: str) -> str:
    """``prefix + separator + name``, or ``name`` alone when the prefix is empty.

    An empty prefix means "pass names through" (``prefix: ""`` in the config), so no separator is
    added: a bare ``__get_time`` would surprise everyone.
    """
    return f"{prefix}{separator}{name}" if prefix else name


def expose_name(prefix: str, separator: str, name: str, max_length: int) -> str:
    """The name clients see for the upstream's ``name`` under ``prefix``.

    Valid names that fit are returned unchanged, so the common case stays readable and predictable.
    Anything else becomes ``<sanitized and truncated candidate>_<8 hex of sha256(candidate)>``,
    exactly ``max_length`` long when the candidate was too long. The prefix stays at the front so
    users can still tell which server a shortened tool belongs to.
    """
    if max_length < HASH_LENGTH + 1:
        raise ValueError(f"max_length must be at least {HASH_LENGTH + 1}, got {max_length}")
    candidate = join_name(prefix, separator, name)
    if _is_valid(candidate, max_length):
        return candidate
    head = _sanitize(candidate)[: max_length - HASH_LENGTH - 1]
    return f"{head}_{_short_hash(candidate)}"


def matches(name: str, allow: Optional[tuple[str, ...]], deny: tuple[str, ...]) -> bool:
    """Whether ``name`` passes the ``allow``/``deny`` globs of a server's config.

    Globs are case-sensitive (``fnmatchcase``) because upstream names are: ``Delete`` and
    ``delete`` are different tools, and the answer must not depend on the operating system.
    ``deny`` wins over ``allow`` so a broad allow list can be narrowed without rewriting it;
    ``allow=None`` (not written) means everything, while an empty allow list means nothing.
    """
    if any(fnmatchcase(name, pattern) for pattern in deny):
        return False
    return allow is None or any(fnmatchcase(name, pattern) for pattern in allow)


def _is_valid(candidate: str, max_length: int) -> bool:
    """A name clients accept as it is."""
    return len(candidate) <= max_length and VALID_NAME.fullmatch(candidate) is not None


def _sanitize(candidate: str) -> str:
    """Every character clients reject becomes ``_``, one for one, so the readable part keeps its shape."""
    return _INVALID_CHAR.sub("_", candidate)


def _short_hash(candidate: str) -> str:
    """The first hex characters of sha256 of the *original* candidate: stable across processes
    (unlike ``hash()``) and different for originals that sanitize or truncate to the same text.
    ``surrogatepass``: a name decoded from JSON may hold a lone surrogate, which must not crash us."""
    return hashlib.sha256(candidate.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_LENGTH]
