"""The JSON Schema contract, and its errors told the way a person fixing a YAML file needs them.

jsonschema's own messages quote the offending value (which may be a secret behind ``${...}``) and
speak of "instances"; here every error is rewritten from its parts, showing values only through
``Document.display``, and pointing at the key itself when the key is what is wrong.
"""

from __future__ import annotations

import difflib
import json
import re
from functools import cache
from importlib import resources
from typing import Any, Iterator

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from gateway.config import pointer as ptr
from gateway.config.document import Document
from gateway.config.problems import Problem

_JSON_TYPES = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
               float: "a number", type(None): "null"}


@cache
def load_schema() -> dict[str, Any]:
    """The schema shipped inside the package (``schemas/mcpgw.schema.json`` in the repository)."""
    text = resources.files("gateway").joinpath("schemas/mcpgw.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def schema_text() -> str:
    return json.dumps(load_schema(), indent=2) + "\n"


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema())


def schema_problems(doc: Document) -> list[Problem]:
    """Every schema violation in ``doc``, except at values whose interpolation already failed.

    An unquoted ``${PORT}`` is re-typed like YAML would type its result; where the schema wants a
    string there (``env: {PORT: ${PORT}}``) the value goes back to being the string it expanded to.
    """
    errors = list(_validator().iter_errors(doc.data))
    wanted_strings = [ptr.from_path(e.absolute_path) for e in errors
                      if e.validator == "type" and "string" in _as_list(e.validator_value)]
    reverted = [p for p in wanted_strings if p in doc.retyped]
    for pointer in reverted:
        doc.set(pointer, doc.retyped.pop(pointer))
    if reverted:
        errors = list(_validator().iter_errors(doc.data))
    translator = _Translator(doc)
    return [problem for error in errors if ptr.from_path(error.absolute_path) not in doc.failed
            for problem in translator.translate(error)]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class _Translator:
    def __init__(self, doc: Document) -> None:
        self.doc = doc

    def translate(self, error: ValidationError) -> Iterator[Problem]:
        here = ptr.from_path(error.absolute_path)
        kind = error.validator
        if "propertyNames" in error.schema_path:
            yield self._bad_name(here, error)
        elif kind == "additionalProperties":
            yield from self._unknown_keys(here, error)
        elif kind == "required":
            for name in error.validator_value:
                if name not in error.instance:
                    yield self.doc.problem(here, "missing-key", f"missing required key `{name}`")
        elif kind in ("oneOf", "anyOf"):
            yield self._alternatives(here, error)
        else:
            yield self._value(here, error)

    def _bad_name(self, here: str, error: ValidationError) -> Problem:
        name = error.instance
        return self.doc.problem(ptr.join(here, name), "bad-name", f"`{name}` is not {_noun(error.schema)}", key=True)

    def _unknown_keys(self, here: str, error: ValidationError) -> Iterator[Problem]:
        known = list(error.schema.get("properties", {}))
        patterns = error.schema.get("patternProperties", {})
        for key in error.instance:
            if key in known or any(re.search(p, key) for p in patterns):
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean `{close[0]}`?" if close else "expected one of: " + ", ".join(f"`{k}`" for k in known)
            yield self.doc.problem(ptr.join(here, key), "unknown-key", f"unknown key `{key}`", hint, key=True)

    def _alternatives(self, here: str, error: ValidationError) -> Problem:
        branches = error.validator_value
        if all(set(b) == {"required"} for b in branches):
            names = " or ".join(f"`{b['required'][0]}`" for b in branches)
            count = "exactly one" if error.validator == "oneOf" else "one"
            return self.doc.problem(here, "missing-key", f"needs {count} of {names}")
        if _is_noun(error.schema):
            shown = self.doc.display(here, error.instance)
            return self.doc.problem(here, "invalid-value", f"{shown} is not {_noun(error.schema)}")
        deepest = best_match(error.context) if error.context else None
        return next(self.translate(deepest)) if deepest else self._value(here, error)

    def _value(self, here: str, error: ValidationError) -> Problem:
        shown = self.doc.display(here, error.instance)
        kind, expected = error.validator, error.validator_value
        description = error.schema.get("description", "")
        if kind == "type":
            return self.doc.problem(here, "wrong-type", f"expected {_type_name(expected)}, got {_JSON_TYPES.get(type(error.instance), 'a value')} {shown}",
                                    _type_hint(error.instance, expected, description))
        if kind == "enum":
            options = ", ".join(f"`{o}`" for o in expected)
            close = difflib.get_close_matches(str(error.instance), [str(o) for o in expected], n=1)
            return self.doc.problem(here, "not-allowed", f"{shown} is not one of {options}",
                                    f"did you mean `{close[0]}`?" if close else None)
        if kind == "const":
            return self.doc.problem(here, "not-allowed", f"{shown} must be {json.dumps(expected)}")
        if kind in ("pattern", "maxLength", "minLength") and _is_noun(error.schema):
            return self.doc.problem(here, "invalid-value", f"{shown} is not {_noun(error.schema)}")
        if kind == "pattern":
            return self.doc.problem(here, "invalid-value", f"{shown} does not match `{expected}`")
        return self.doc.problem(here, "invalid-value", f"{shown} {_LIMITS.get(kind, 'is not valid ({})').format(expected)}")


_YAML11_BOOLEANS = {"yes", "no", "on", "off", "y", "n"}

_LIMITS = {
    "minimum": "must be at least {}", "maximum": "must be at most {}",
    "minLength": "must be at least {} characters long", "maxLength": "must be at most {} characters long",
    "minItems": "must have at least {} items", "maxItems": "must have at most {} items",
    "uniqueItems": "has duplicate items",
}


def _is_noun(schema: dict[str, Any]) -> bool:
    """Reusable value kinds (``$defs``) are described as "A duration: ...", so errors can say
    "is not a duration: ..."."""
    return schema.get("description", "").startswith(("A ", "An "))


def _noun(schema: dict[str, Any]) -> str:
    text = schema.get("description", "a valid value")
    return text[0].lower() + text[1:].rstrip(".")


def _type_name(expected: str | list[str]) -> str:
    names = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "`true` or `false`", "null": "null"}
    items = expected if isinstance(expected, list) else [expected]
    return " or ".join(names.get(e, e) for e in items)


def _type_hint(value: Any, expected: str | list[str], description: str) -> str | None:
    if description.startswith("A duration") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"durations need a unit, like `{value}s`"
    if expected == "boolean" and isinstance(value, str) and value.lower() in _YAML11_BOOLEANS:
        return f"only `true` and `false` are booleans: `{value}` is a string since YAML 1.2"
    if expected in ("integer", "number", "boolean") and isinstance(value, str):
        return "write it without quotes"
    if expected == "string" and isinstance(value, (bool, int, float)):
        return "put it in quotes"
    if value is None:
        return "the value is empty"
    return None
