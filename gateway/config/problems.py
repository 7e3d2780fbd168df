"""Problems found in a configuration, and how they are shown.

A Problem is data, not an exception: the pipeline collects every problem it can find in one pass
so a user fixes a file in one round trip. Each one names where it is twice: as a JSON pointer (stable
for tools and for the schema) and as a YAML line and column (for people and editors).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Iterable, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or suspicious) in a configuration file.

    ``code`` is a stable identifier (``unknown-key``, ``missing-env``, ...) for CI tooling;
    ``message`` never contains an interpolated value, only the ``${NAME}`` reference.
    """

    file: str
    line: int
    column: int
    pointer: str
    code: str
    message: str
    hint: str | None = None
    severity: Severity = "error"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def render(self) -> str:
        """``FILE:LINE:COL: /pointer: message``, the format editors and CI annotators parse."""
        label = "warning: " if self.severity == "warning" else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{self.file}:{self.line}:{self.column}: {self.pointer or '/'}: {label}{self.message}{hint}"

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def sort_problems(problems: Iterable[Problem]) -> tuple[Problem, ...]:
    """Problems in file order, so output reads top to bottom like the file."""
    return tuple(sorted(problems, key=lambda p: (p.file, p.line, p.column, p.pointer, p.code, p.message)))


def has_errors(problems: Iterable[Problem]) -> bool:
    return any(p.is_error for p in problems)


def render_json(results: dict[str, tuple[Problem, ...]]) -> str:
    """Machine-readable report of several files' problems, for CI."""
    files = [
        {"file": name, "valid": not has_errors(problems), "problems": [p.to_json() for p in problems]}
        for name, problems in results.items()
    ]
    return json.dumps({"valid": all(f["valid"] for f in files), "files": files}, indent=2)
