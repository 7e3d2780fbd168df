"""Durations and sizes as written in the config (``500ms``, ``4MiB``), turned into numbers once."""

from __future__ import annotations

import re

_DURATION = re.compile(r"(?P<n>[0-9]+(?:\.[0-9]+)?)(?P<unit>ms|s|m|h)")
_SIZE = re.compile(r"(?P<n>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>B|KB|KiB|MB|MiB|GB|GiB)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_BYTES = {"B": 1, "KB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ValueError for anything the schema's pattern would refuse."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return float(match["n"]) * _SECONDS[match["unit"]]


def parse_size(value: int | str) -> int:
    """Bytes in ``value`` (an integer is already bytes)."""
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(value)
    if not match:
        raise ValueError(f"not a size: {value!r}")
    return int(float(match["n"]) * _BYTES[match["unit"]])
