"""Schema-valid plain data -> the frozen model, driven by the model's own type annotations.

Only called on data the schema accepted, so conversion cannot meet a wrong shape; what it adds is
units (``Duration``, ``Size``), tuples and read-only mappings, ``Secret`` wrapping (remembering how
each secret was written), and the few values inferred from others (a server's name, transport and
prefix).
"""

from __future__ import annotations

import collections.abc
import typing
from dataclasses import fields, is_dataclass
from functools import cache
from types import MappingProxyType, UnionType
from typing import Any, Annotated, Callable, get_args, get_origin

from gateway.config import pointer as ptr
from gateway.config.document import Document
from gateway.config.model import Expanded, GatewayConfig, Secret, ServerConfig
from gateway.config.units import parse_duration, parse_size

_UNITS: dict[str, Callable[[Any], Any]] = {"duration": parse_duration, "size": parse_size}


def build_config(doc: Document) -> GatewayConfig:
    """The model of a document whose data passed the schema."""
    data = {k: v for k, v in doc.data.items() if not k.startswith("x-")}
    return _Builder(doc).build(GatewayConfig, data, "")


def _infer_server(name: str, data: dict[str, Any]) -> dict[str, Any]:
    inferred = {"name": name, "prefix": name,
                "transport": "streamable-http" if "url" in data and "command" not in data else "stdio"}
    return inferred | data


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc

    def build(self, cls: type, data: dict[str, Any], pointer: str) -> Any:
        hints = _hints(cls)
        values = {f.name: self.convert(hints[f.name], data[f.name], ptr.join(pointer, f.name))
                  for f in fields(cls) if f.name in data}
        return cls(**values)

    def convert(self, tp: Any, value: Any, pointer: str) -> Any:
        origin, args = get_origin(tp), get_args(tp)
        if origin is Annotated:
            return _UNITS[args[1]](value)
        if origin in (typing.Union, UnionType):
            return self.convert(next(a for a in args if a is not type(None)), value, pointer)
        if tp is Secret:
            return Secret(value, self.doc.templates.get(pointer, "***"))
        if isinstance(value, str) and pointer in self.doc.templates:
            return Expanded(value, self.doc.templates[pointer])
        if tp is int and isinstance(value, float):
            return int(value)  # JSON Schema counts 1.0 as an integer
        if is_dataclass(tp):
            return self.build(tp, value, pointer)
        if origin is tuple:
            return tuple(self.convert(args[0], v, ptr.join(pointer, i)) for i, v in enumerate(value))
        if origin is collections.abc.Mapping:
            return MappingProxyType({k: self.convert(args[1], self._named(args[1], k, v), ptr.join(pointer, k))
                                     for k, v in value.items()})
        return value

    @staticmethod
    def _named(tp: Any, key: str, value: Any) -> Any:
        """Members of a name-keyed mapping (servers, namespaces) carry their own name."""
        if tp is ServerConfig:
            return _infer_server(key, value)
        if is_dataclass(tp) and "name" in _hints(tp):
            return {"name": key} | value
        return value
