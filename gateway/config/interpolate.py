"""``${...}`` references in configuration values: the only way secrets should enter a config.

Pure: the environment and the file reader are passed in, so tests and ``validate`` see exactly
what ``serve`` sees. Grammar (inside string values only, never keys):

- ``${NAME}``            the variable; unset is a problem, never an empty string
- ``${NAME:-default}``   the default when the variable is unset or empty
- ``${NAME:?message}``   a problem carrying your message when unset or empty
- ``${file:/path}``      the file's contents, one trailing newline stripped (Docker/Kubernetes
                         secrets); a relative path is relative to the config file's directory
- ``$$``                 a literal ``$``; any other ``$`` is kept as it is
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

_TOKEN = re.compile(r"\$(?:\$|\{(?P<body>[^}]*)\}|(?P<open>\{))")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

FileReader = Callable[[Path], str]


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one reference could not be resolved; ``message`` names the reference, never a value."""

    code: str
    message: str
    hint: str | None = None


@dataclass(slots=True)
class Interpolated:
    value: str
    references: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.references)


def read_text_file(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def interpolate(
    text: str, env: Mapping[str, str], base_dir: Path, read_file: FileReader = read_text_file
) -> Interpolated:
    """Resolve every reference in ``text``; failures are collected, not raised."""
    result = Interpolated(value="")
    if "$" not in text:
        result.value = text
        return result

    def replace(match: re.Match[str]) -> str:
        if match.group("open"):
            result.failures.append(Failure("bad-reference", "unterminated `${` (a reference ends with `}`)",
                                           "write `$$` for a literal dollar sign"))
            return match.group(0)
        body = match.group("body")
        if body is None:
            return "$"
        result.references.append("${" + body + "}")
        return _resolve(body, env, base_dir, read_file, result.failures)

    result.value = _TOKEN.sub(replace, text)
    return result


def _resolve(body: str, env: Mapping[str, str], base_dir: Path, read_file: FileReader,
             failures: list[Failure]) -> str:
    if body.startswith("file:"):
        return _read_secret_file(body[len("file:"):], base_dir, read_file, failures)
    name, op, rest = _split(body)
    if not _NAME.fullmatch(name) or "${" in rest:
        failures.append(Failure("bad-reference", f"`${{{body}}}` is not a valid reference",
                                "use ${NAME}, ${NAME:-default}, ${NAME:?message} or ${file:/path}"))
        return ""
    value = env.get(name)
    if op == ":-":
        return value if value else rest
    if op == ":?" and not value:
        failures.append(Failure("missing-env", f"environment variable {name} is not set: {rest or 'required'}"))
        return ""
    if value is None:
        failures.append(Failure("missing-env", f"environment variable {name} is not set",
                                f"set it, or give a default: ${{{name}:-default}}"))
        return ""
    return value


def _split(body: str) -> tuple[str, str, str]:
    for op in (":-", ":?"):
        name, found, rest = body.partition(op)
        if found:
            return name, op, rest
    return body, "", ""


def _read_secret_file(raw: str, base_dir: Path, read_file: FileReader, failures: list[Failure]) -> str:
    if not raw:
        failures.append(Failure("bad-reference", "`${file:}` names no file"))
        return ""
    path = Path(raw) if Path(raw).is_absolute() else base_dir / raw
    try:
        text = read_file(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        failures.append(Failure("missing-secret-file", f"cannot read secret file `${{file:{raw}}}`: {reason}"))
        return ""
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
