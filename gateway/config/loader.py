"""The one pipeline from a file to a GatewayConfig: what ``validate`` runs is what ``serve`` runs.

read -> YAML (positions, ``${...}``) -> JSON Schema -> frozen model -> cross-checks. Each stage
reports problems instead of stopping at the first; a later stage runs only on input the earlier
ones accepted (cross-checks need the right shape), so a file is fixed in at most a few rounds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from gateway.config.build import build_config
from gateway.config.checks import run_checks
from gateway.config.document import Document, parse_document
from gateway.config.model import GatewayConfig
from gateway.config.problems import Problem, has_errors, sort_problems
from gateway.config.schema import schema_problems
from gateway.errors import ConfigFileError, ConfigInvalid

MAX_FILE_BYTES = 4 * 2**20


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A file's problems, and its model when it has no errors (warnings allowed)."""

    file: str
    config: GatewayConfig | None
    problems: tuple[Problem, ...]

    @property
    def valid(self) -> bool:
        return self.config is not None


def read_config_text(path: Path) -> str:
    """The file's text, or ConfigFileError saying why it cannot be had (exit code 2 territory)."""
    try:
        if path.is_dir():
            raise ConfigFileError(str(path), "is a directory, not a config file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigFileError(str(path), f"is larger than {MAX_FILE_BYTES // 2**20} MiB")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigFileError(str(path), "no such file") from exc
    except PermissionError as exc:
        raise ConfigFileError(str(path), "permission denied") from exc
    except UnicodeDecodeError as exc:
        raise ConfigFileError(str(path), f"is not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigFileError(str(path), exc.strerror or type(exc).__name__) from exc


def load_text(text: str, file: str, env: Mapping[str, str], base_dir: Path) -> LoadResult:
    """Run the whole pipeline on text already read."""
    doc = parse_document(text, file, env, base_dir)
    problems = list(doc.problems)
    if doc.data is not None:
        problems += schema_problems(doc)
    config = None
    if doc.data is not None and not has_errors(problems):
        config = build_config(doc)
        problems += _positioned(doc, run_checks(config))
        if has_errors(problems):
            config = None
    return LoadResult(file, config, sort_problems(problems))


def check_file(path: str | Path, env: Mapping[str, str] | None = None) -> LoadResult:
    """Load one file; raises ConfigFileError only when the file cannot be read at all."""
    path = Path(path)
    text = read_config_text(path)
    return load_text(text, str(path), os.environ if env is None else env, path.resolve().parent)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """The model of a valid file, or ConfigInvalid carrying every problem."""
    result = check_file(path, env)
    if result.config is None:
        raise ConfigInvalid(result.problems)
    return result.config


def _positioned(doc: Document, findings: list) -> list[Problem]:
    return [doc.problem(f.pointer, f.code, f.message, f.hint, key=f.at_key, severity=f.severity) for f in findings]
