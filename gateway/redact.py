"""Keeping secret values out of everything the gateway writes (logs, status pages, stderr tails).

The configuration knows its secrets: every ``Secret`` and every string that came from ``${...}``.
Their values are replaced by ``***`` wherever text leaves the process. Values shorter than
``MIN_LENGTH`` are left alone: blanking every "1" or "on" would make logs unreadable while hiding
nothing worth hiding.
"""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass
from typing import Any, Iterator, Mapping

from gateway.config.model import Expanded, GatewayConfig, Secret

MIN_LENGTH = 4
MASK = "***"


class Redactor:
    def __init__(self) -> None:
        self._pattern: re.Pattern[str] | None = None

    def learn(self, config: GatewayConfig) -> None:
        """Use the secrets of ``config`` (called for every configuration put in service)."""
        values = sorted({v for v in _secret_values(config) if len(v) >= MIN_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, values))) if values else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text


def _secret_values(value: Any) -> Iterator[str]:
    if isinstance(value, Secret):
        yield value.reveal()
    elif isinstance(value, Expanded):
        yield str.__str__(value)
    elif is_dataclass(value):
        for f in fields(value):
            yield from _secret_values(getattr(value, f.name))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _secret_values(item)
    elif isinstance(value, tuple):
        for item in value:
            yield from _secret_values(item)


REDACT = Redactor()  # one per process: logging is process-wide too
