"""A YAML file read into plain data, with where every value came from.

PyYAML's constructor forgets positions, so the composed node tree is walked here instead: each value
is recorded under its JSON pointer with its line and column, every string is interpolated on the
way (``interpolate.py``), and the text each interpolated value was written as is kept so that
problems can show ``${NAME}`` instead of the secret behind it.

YAML 1.2 rules are used where YAML 1.1 surprises people: only ``true``/``false`` are booleans (so
``DEBUG: yes`` stays the string ``"yes"``), dates stay strings, and ``010`` is ten. Duplicate keys
are problems, not silently last-wins. Anchors, aliases and ``<<`` merge keys work as usual.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config import pointer as ptr
from gateway.config.interpolate import FileReader, interpolate, read_text_file
from gateway.config.problems import Problem

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"
_DROPPED = {_BOOL, _INT, "tag:yaml.org,2002:timestamp"}
MAX_NODES = 100_000  # bounds alias expansion ("billion laughs")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and integers, and no timestamps."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _DROPPED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))


def _construct_int(loader: yaml.SafeLoader, node: ScalarNode) -> int:
    """YAML 1.2 integers: decimal even with leading zeros (``010`` is ten), ``0o`` octal, ``0x`` hex."""
    text = node.value
    base = {"0o": 8, "0x": 16}.get(text[:2], 10)
    return int(text[2:] if base != 10 else text, base)


_Loader.add_constructor(_INT, _construct_int)


@dataclass(frozen=True, slots=True)
class Position:
    line: int
    column: int


@dataclass(slots=True)
class Document:
    """Plain data (dicts, lists, scalars) plus the positions and the raw text of interpolated values."""

    file: str
    data: Any = None
    values: dict[str, Position] = field(default_factory=dict)
    keys: dict[str, Position] = field(default_factory=dict)
    templates: dict[str, str] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    containers: set[str] = field(default_factory=set)
    retyped: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def position(self, pointer: str, *, key: bool = False) -> Position:
        """Where ``pointer`` is written; a mapping or list is where its key is, a missing member
        where its nearest parent is."""
        while True:
            prefer_key = key or pointer in self.containers
            found = (prefer_key and self.keys.get(pointer)) or self.values.get(pointer)
            if found or not pointer:
                return found or Position(1, 1)
            pointer = ptr.parent(pointer)
            key = False

    def display(self, pointer: str, value: Any) -> str:
        """How a value may be shown to a person: interpolated parts only as they were written."""
        text = json.dumps(self.masked(pointer, value), default=str)
        return text if len(text) <= 80 else text[:77] + "..."

    def masked(self, pointer: str, value: Any) -> Any:
        """``value`` with every interpolated value inside it replaced by its ``${...}`` text."""
        if pointer in self.templates:
            return self.templates[pointer]
        if isinstance(value, dict):
            return {k: self.masked(ptr.join(pointer, k), v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.masked(ptr.join(pointer, i), v) for i, v in enumerate(value)]
        return value

    def set(self, pointer: str, value: Any) -> None:
        """Replace the value at an existing pointer (used to undo a re-typing the schema refused)."""
        *parents, last = pointer.split("/")[1:]
        target = self.data
        for token in parents:
            target = target[_token(token, target)]
        target[_token(last, target)] = value

    def problem(self, pointer: str, code: str, message: str, hint: str | None = None, *,
                key: bool = False, severity: str = "error") -> Problem:
        pos = self.position(pointer, key=key)
        return Problem(self.file, pos.line, pos.column, pointer, code, message, hint, severity)  # type: ignore[arg-type]


def parse_document(text: str, file: str, env: Mapping[str, str], base_dir: Path,
                   read_file: FileReader = read_text_file) -> Document:
    """Parse YAML text into a Document; syntax errors become problems, never exceptions."""
    doc = Document(file=file)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            doc.problems.append(Problem(file, 1, 1, "", "empty", "the file is empty",
                                        "start with `version: 1`"))
            return doc
        walker = _Walker(loader, doc, env, base_dir, read_file)
        doc.data = walker.walk(node, "")
        if doc.data is None and not doc.problems:
            doc.problems.append(Problem(file, 1, 1, "", "empty", "the file is empty", "start with `version: 1`"))
    except yaml.MarkedYAMLError as exc:
        doc.problems.append(_syntax_problem(file, exc))
        doc.data = None
    except _Recursive as exc:
        doc.problems.append(Problem(file, exc.position.line, exc.position.column, exc.pointer, "yaml-recursive",
                                    "an alias refers to a node that contains it", "YAML data must not contain itself"))
        doc.data = None
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(file, 1, 1, "", "yaml-syntax", f"invalid YAML: {exc}"))
        doc.data = None
    except _TooLarge:
        doc.problems.append(Problem(file, 1, 1, "", "too-large",
                                    f"the document expands to more than {MAX_NODES} values (aliases?)"))
        doc.data = None
    finally:
        loader.dispose()
    return doc


def _syntax_problem(file: str, exc: yaml.MarkedYAMLError) -> Problem:
    """PyYAML's error, placed where the broken construct starts (an unclosed ``[``, a key missing
    its ``:``) and saying where the parser noticed."""
    where, noticed = exc.context_mark or exc.problem_mark, exc.problem_mark
    line, col = (where.line + 1, where.column + 1) if where else (1, 1)
    reason = ", ".join(filter(None, [exc.context, exc.problem]))
    if exc.context_mark and noticed and (noticed.line, noticed.column) != (where.line, where.column):
        reason += f" (at line {noticed.line + 1}, column {noticed.column + 1})"
    hint = "indent with spaces: YAML does not allow tabs" if "'\\t'" in (exc.problem or "") else None
    return Problem(file, line, col, "", "yaml-syntax", f"invalid YAML: {reason}", hint)


def _token(token: str, container: Any) -> Any:
    token = token.replace("~1", "/").replace("~0", "~")
    return int(token) if isinstance(container, list) else token


class _TooLarge(Exception):
    pass


class _Recursive(Exception):
    def __init__(self, pointer: str, position: Position) -> None:
        self.pointer, self.position = pointer, position


class _Walker:
    def __init__(self, loader: _Loader, doc: Document, env: Mapping[str, str], base_dir: Path,
                 read_file: FileReader) -> None:
        self.loader, self.doc, self.env, self.base_dir, self.read_file = loader, doc, env, base_dir, read_file
        self.count = 0
        self.open: set[int] = set()  # ids of the containers being walked: an alias to one is a cycle

    def walk(self, node: Node, pointer: str) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooLarge
        self.doc.values[pointer] = _pos(node)
        if isinstance(node, ScalarNode):
            return self._scalar(node, pointer)
        if id(node) in self.open:
            raise _Recursive(pointer, _pos(node))
        self.open.add(id(node))
        self.doc.containers.add(pointer)
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, pointer)
            return [self.walk(item, ptr.join(pointer, i)) for i, item in enumerate(node.value)]
        finally:
            self.open.discard(id(node))

    def _mapping(self, node: MappingNode, pointer: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in self._pairs(node, pointer):
            key = self._key(key_node, pointer)
            if key is None:
                continue
            child = ptr.join(pointer, key)
            if key in result:
                first = self.doc.keys[child].line
                self.doc.problems.append(self._at(key_node, child, "duplicate-key", f"duplicate key `{key}`",
                                                  f"first set at line {first}: remove one of them"))
                continue
            self.doc.keys[child] = _pos(key_node)
            result[key] = self.walk(value_node, child)
        return result

    def _pairs(self, node: MappingNode, pointer: str) -> list[tuple[Node, Node]]:
        """The mapping's own pairs, then those ``<<`` merges in that it does not set itself."""
        own = [(k, v) for k, v in node.value if k.tag != _MERGE]
        merged: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, MappingNode):
                    self.doc.problems.append(self._at(source, pointer, "yaml-merge",
                                                      "`<<` merges only mappings"))
                    continue
                if source is node or id(source) in self.open:
                    raise _Recursive(pointer, _pos(source))
                self.open.add(id(source))
                try:
                    merged.extend(self._pairs(source, pointer))
                finally:
                    self.open.discard(id(source))
        taken = {k.value for k, _ in own if isinstance(k, ScalarNode)}
        for key_node, value_node in merged:
            if key_node.value not in taken:
                taken.add(key_node.value)
                own.append((key_node, value_node))
        return own

    def _key(self, node: Node, pointer: str) -> str | None:
        if isinstance(node, ScalarNode) and node.tag == _STR:
            return node.value
        shown = node.value if isinstance(node, ScalarNode) else "a mapping" if isinstance(node, MappingNode) else "a list"
        self.doc.problems.append(self._at(node, pointer, "bad-key", f"keys must be strings, not `{shown}`",
                                          "quote the key"))
        return None

    def _scalar(self, node: ScalarNode, pointer: str) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self.doc.problems.append(self.doc.problem(pointer, "yaml-tag", f"unsupported YAML value: {exc.problem}"))
            self.doc.failed.add(pointer)
            return None
        if not isinstance(value, str) or "$" not in value:
            return value
        done = interpolate(value, self.env, self.base_dir, self.read_file)
        if done.failures:
            self.doc.failed.add(pointer)
        for failure in done.failures:
            self.doc.problems.append(self.doc.problem(pointer, failure.code, failure.message, failure.hint))
        if not done.changed:
            return done.value
        self.doc.templates[pointer] = value
        typed = self._retype(done.value) if node.style is None else done.value
        if not isinstance(typed, str):
            self.doc.retyped[pointer] = done.value
        return typed

    def _retype(self, text: str) -> Any:
        """An unquoted ``port: ${PORT}`` becomes the number 8080, as if 8080 had been written."""
        tag = self.loader.resolve(ScalarNode, text, (True, False))
        if tag == _STR:
            return text
        return self.loader.construct_object(ScalarNode(tag, text), deep=True)

    def _at(self, node: Node, pointer: str, code: str, message: str, hint: str | None = None) -> Problem:
        pos = _pos(node)
        return Problem(self.doc.file, pos.line, pos.column, pointer, code, message, hint)


def _pos(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)
