"""Two hashes of a configuration, for two audiences.

``digest`` may be shown (``/health``, logs) and compared across replicas: secrets count by the
reference they were written as (``${TOKEN}``), never by value. ``fingerprint`` decides whether a
reload changes anything: it includes secret values (a rotated token must count), so it is never
shown anywhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields, is_dataclass
from typing import Any, Mapping

from gateway.config.model import Expanded, GatewayConfig, Secret


def digest(config: GatewayConfig) -> str:
    return _hash(_plain(config, reveal=False))[:16]


def fingerprint(config: GatewayConfig) -> str:
    return _hash(_plain(config, reveal=True))


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _plain(value: Any, *, reveal: bool) -> Any:
    if isinstance(value, Secret):
        return value.reveal() if reveal else value.written_as
    if isinstance(value, Expanded):
        return str.__str__(value) if reveal else value.written_as
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name), reveal=reveal) for f in fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v, reveal=reveal) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v, reveal=reveal) for v in value]
    return value
