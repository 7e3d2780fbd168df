"""Checking tool arguments against the tool's ``inputSchema`` before they reach the upstream
(``validate_arguments``, on by default, per server).

The point is a clear answer early: a model that sent a string for an integer learns which argument
is wrong and why, in one short message, instead of whatever the upstream makes of it. It is not a
security boundary (the upstream must still check its input), so a schema the gateway cannot use
(itself invalid, or referring to documents it cannot fetch) turns validation off for that schema,
with one warning, rather than blocking a tool that works.

Validators are compiled once per distinct schema, with the draft the schema declares in
``$schema`` (Draft 2020-12 when it declares none, as MCP specifies): two of them. ``jsonschema-rs``
(in Rust, about 30 times faster) answers whether the arguments fit, on every call; ``jsonschema``,
the reference, says why when they do not (so the message is the same as it always was) and has
the last word when the two disagree. Neither fetches a remote ``$ref``: the schema comes from an
upstream, and the reference left alone would fetch it with ``urlopen``, blocking the event loop
for as long as the URL takes to answer (it gets an empty registry beside the specifications'
metaschemas; the Rust one is told ``offline``). Neither asserts ``format``.

Two bounded LRU caches find them: by the identity of the schema object (the routing table keeps
the same ``Tool`` for every call, so a call costs one dict lookup and the validation itself), and
behind it by the schema's canonical JSON, so a re-listed tool with an unchanged schema is not
compiled again.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Any, Optional

import jsonschema_rs
import mcp_types
from jsonschema import Draft202012Validator, exceptions
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from referencing.jsonschema import EMPTY_REGISTRY

log = logging.getLogger("mcpgw")

MAX_SCHEMAS = 4096
MAX_MESSAGE = 200  # jsonschema quotes the offending value; a huge one must not become the answer

_SKIP = None  # cached for a schema the gateway cannot use: arguments pass unchecked


class _Compiled:
    """One schema's validators (see the module docstring): the fast one asked first."""

    __slots__ = ("fast", "reference")

    def __init__(self, reference: Validator, fast: Any) -> None:
        self.reference, self.fast = reference, fast

    def is_valid(self, instance: Any) -> bool:
        if self.fast is not None:
            try:
                if self.fast.is_valid(instance):
                    return True
            except Exception:  # noqa: BLE001 - a value the Rust side cannot take: the reference decides
                pass
        return self.reference.is_valid(instance)

    def iter_errors(self, instance: Any) -> Any:
        return self.reference.iter_errors(instance)


class ArgumentValidator:
    """Validates tool arguments; one per gateway (its caches outlive configuration reloads)."""

    def __init__(self, max_schemas: int = MAX_SCHEMAS) -> None:
        self._max = max_schemas
        self._by_identity: OrderedDict[int, tuple[Any, Optional[_Compiled]]] = OrderedDict()
        self._by_content: OrderedDict[str, Optional[_Compiled]] = OrderedDict()

    def check(self, tool: mcp_types.Tool, arguments: Optional[dict[str, Any]]) -> Optional[str]:
        """``None`` when ``arguments`` fit the tool's input schema (missing arguments are ``{}``),
        else a short message naming the first problem and where it is."""
        validator = self._validator(tool)
        if validator is _SKIP:
            return None
        instance = {} if arguments is None else arguments
        try:
            if validator.is_valid(instance):
                return None
            error = exceptions.best_match(validator.iter_errors(instance))
        except RecursionError:
            return "arguments: nested too deeply to validate"
        except Exception as exc:  # e.g. an unresolvable $ref: the schema is unusable, not the call
            self._give_up(tool, exc)
            return None
        return _describe(error) if error is not None else None

    def _validator(self, tool: mcp_types.Tool) -> Optional[_Compiled]:
        schema = tool.input_schema
        cached = self._by_identity.get(id(schema))
        if cached is not None and cached[0] is schema:
            self._by_identity.move_to_end(id(schema))
            return cached[1]
        validator = self._by_content_of(tool, schema)
        _put(self._by_identity, id(schema), (schema, validator), self._max)  # keeps schema alive: ids stay unique
        return validator

    def _by_content_of(self, tool: mcp_types.Tool, schema: Any) -> Optional[_Compiled]:
        try:
            content = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            log.warning("tool %s: input schema is not JSON (%s); its arguments are not validated",
                        tool.name, exc)
            return _SKIP
        if content in self._by_content:
            self._by_content.move_to_end(content)
            return self._by_content[content]
        validator = _compile(tool, schema)
        _put(self._by_content, content, validator, self._max)
        return validator

    def _give_up(self, tool: mcp_types.Tool, exc: Exception) -> None:
        """Stop validating against a schema that failed while validating (warned once)."""
        log.warning("tool %s: input schema cannot be used (%s); its arguments are not validated",
                    tool.name, _shorten(str(exc)))
        schema = tool.input_schema
        _put(self._by_identity, id(schema), (schema, _SKIP), self._max)
        try:
            _put(self._by_content, json.dumps(schema, sort_keys=True, separators=(",", ":")), _SKIP, self._max)
        except (TypeError, ValueError):
            pass


def _compile(tool: mcp_types.Tool, schema: Any) -> Optional[_Compiled]:
    """Validators for ``schema`` in its declared draft, or ``_SKIP`` (warned) when it is invalid."""
    try:
        cls = validator_for(schema, default=Draft202012Validator)
        cls.check_schema(schema)
        return _Compiled(cls(schema, registry=EMPTY_REGISTRY), _fast(schema))
    except exceptions.SchemaError as exc:
        reason = f"{_pointer(exc.absolute_path)}: {exc.message}" if exc.absolute_path else exc.message
    except Exception as exc:  # an unhashable $schema, a broken $ref target, ...
        reason = f"{type(exc).__name__}: {exc}"
    log.warning("tool %s: input schema is invalid (%s); its arguments are not validated",
                tool.name, _shorten(reason))
    return _SKIP


def _fast(schema: Any) -> Any:
    """The Rust validator for a schema the reference accepted; None where it cannot make one (a
    draft it does not know, a ``$ref`` it would have to fetch): the reference then works alone."""
    try:
        if isinstance(schema, dict) and "$schema" in schema:
            return jsonschema_rs.validator_for(schema, validate_formats=False, offline=True)
        return jsonschema_rs.Draft202012Validator(schema, validate_formats=False, offline=True)
    except Exception:  # noqa: BLE001 - whatever it refuses, the reference still validates
        return None


def _describe(error: exceptions.ValidationError) -> str:
    """``argument /count: 'x' is not of type 'integer'`` (or ``arguments: ...`` at the top)."""
    where = f"argument {_pointer(error.absolute_path)}" if error.absolute_path else "arguments"
    return f"{where}: {_shorten(error.message)}"


def _pointer(path: Any) -> str:
    """A JSON pointer (RFC 6901) for a jsonschema path."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "…"


def _put(cache: OrderedDict, key: Any, value: Any, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)
