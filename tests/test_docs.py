"""docs/ stays true: the config reference is the schema's, and README's commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.config.reference import render_reference
from gateway.config.schema import load_schema

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_generated_from_the_current_schema() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render_reference(), "run: mcpgw schema --format markdown > docs/configuration.md"


def test_every_key_has_a_description_and_every_leaf_an_example() -> None:
    sections = re.split(r"\n(?=#{2,4} `)", render_reference())[1:]
    assert len(sections) > 100
    undescribed = [s.splitlines()[0] for s in sections if not s.splitlines()[2].strip()]
    leaves = [s for s in sections if "Type: mapping\n" not in s + "\n"]
    unexampled = [s.splitlines()[0] for s in leaves if "```yaml" not in s]
    assert (undescribed, unexampled) == ([], [])


def test_every_key_in_the_schema_is_in_the_reference() -> None:
    reference = render_reference()

    def keys(node: dict) -> set[str]:
        found = set(node.get("properties", {}))
        for child in node.get("properties", {}).values():
            found |= keys(child)
        return found

    schema = load_schema()
    every = keys(schema) | {k for d in schema["$defs"].values() for k in keys(d)}
    absent = sorted(k for k in every if not re.search(rf"`[^`]*\b{re.escape(k)}`", reference))
    assert absent == []


def test_ci_runs_the_test_command_that_readme_gives() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in readme


def test_every_object_in_the_schema_refuses_unknown_keys() -> None:
    """`additionalProperties: false` everywhere (maps of names constrain their values instead); only
    the top level lets `x-` keys through, for YAML anchors."""
    open_objects: list[str] = []

    def visit(node: object, where: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(where)
            for key, child in node.items():
                if key not in ("if", "not"):  # conditions test values, they do not define shapes
                    visit(child, f"{where}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                visit(child, f"{where}/{i}")

    schema = load_schema()
    visit(schema, "#")
    assert open_objects == []
    assert list(schema["patternProperties"]) == ["^x-"]
