"""Golden configs: what `mcpgw validate` prints for broken files is a contract, checked line by line.

Each ``tests/golden/NAME.yaml`` is one broken config; ``NAME.expected`` next to it holds the EXACT
stdout of ``mcpgw validate tests/golden/NAME.yaml`` run from the repository root (so the path in
every line is the relative one) with the fixed environment ``GOLDEN_ENV`` (plus ``PATH``), and the
command must exit 1 with nothing on stderr. The real installed command is run, the one next to
``sys.executable``.

The ``.expected`` files were written and reviewed by hand: every ``LINE:COL`` must point at the
offending node and every message must be right. They are not a snapshot of whatever the code prints.
Cases in ``KNOWN_BUGS`` hold the behaviour the code SHOULD have and are strict xfails: fixing the
bug makes them pass, so remove the entry then.

Adding a case: write ``NAME.yaml``, then regenerate and review::

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden_configs.py
    git diff tests/golden      # read every line: position, pointer, message, hint

``UPDATE_GOLDEN=1`` rewrites every ``.expected`` file from the command's current output, except
those of ``KNOWN_BUGS`` (hand-written, they describe the fixed behaviour). It does not review them
for you.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
MCPGW = Path(sys.executable).with_name("mcpgw")
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
TIMEOUT = 30  # seconds for one run of the command

# The whole environment of every run (PATH is added): nothing from the machine leaks in, so e.g.
# GITHUB_TOKEN is unset here whatever the developer's shell has.
GOLDEN_ENV = {
    "PYTHONUTF8": "1",
    "MCPGW_GOOD_TOKEN": "golden-token-0123456789",
    "MCPGW_CRLF_VALUE": "abc\r\nX-Injected: yes",
}

KNOWN_BUGS: dict[str, str] = {}

CASES = sorted(path.stem for path in GOLDEN.glob("*.yaml"))


def _env() -> dict[str, str]:
    return {**GOLDEN_ENV, "PATH": os.environ.get("PATH", os.defpath)}


def _run(name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MCPGW), "validate", f"tests/golden/{name}.yaml"],
        cwd=REPO, env=_env(), capture_output=True, text=True, encoding="utf-8", timeout=TIMEOUT,
    )


@pytest.fixture(scope="session")
def golden_runs() -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    """Every case started at once on a small pool; each test waits only for its own."""
    pool = ThreadPoolExecutor(max_workers=max(2, min(8, (os.cpu_count() or 2) * 2)))
    futures = {name: pool.submit(_run, name) for name in CASES}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def _params() -> list:
    return [
        pytest.param(name, id=name, marks=pytest.mark.xfail(reason=KNOWN_BUGS[name], strict=True))
        if name in KNOWN_BUGS else pytest.param(name, id=name)
        for name in CASES
    ]


@pytest.mark.parametrize("name", _params())
def test_golden_config(name: str, golden_runs: dict[str, Future[subprocess.CompletedProcess[str]]]) -> None:
    result = golden_runs[name].result(timeout=TIMEOUT * 2)
    expected_file = GOLDEN / f"{name}.expected"
    if UPDATE and name not in KNOWN_BUGS:
        expected_file.write_text(result.stdout, encoding="utf-8")
    expected = expected_file.read_text(encoding="utf-8")
    assert result.stdout == expected
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""


def test_every_case_has_an_expected_file() -> None:
    assert CASES, "no golden cases found"
    expected = sorted(path.stem for path in GOLDEN.glob("*.expected"))
    missing = sorted(set(CASES) - set(expected))
    assert not missing or UPDATE, f"run with UPDATE_GOLDEN=1 and review: {missing}"
    assert sorted(set(expected) - set(CASES)) == [], "an .expected file without its .yaml"
    assert set(KNOWN_BUGS) <= set(CASES), "KNOWN_BUGS names a case that does not exist"


def test_the_installed_command_is_used() -> None:
    assert MCPGW.is_file(), f"mcpgw is not installed next to {sys.executable}: pip install -e ."
    assert "GITHUB_TOKEN" not in _env()  # env_missing.yaml relies on it being unset
