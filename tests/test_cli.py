"""The `mcpgw` command as users and CI run it: the real installed script, in a subprocess.

Exit codes are part of the contract: 0 valid (warnings allowed), 1 invalid, 2 usage error (bad
arguments, a file that cannot be read). Every run gets a fixed environment (plus PATH), so nothing
from the developer's shell changes the outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import jsonschema
import pytest

import gateway

REPO = Path(__file__).resolve().parents[1]
MCPGW = Path(sys.executable).with_name("mcpgw")
TIMEOUT = 30  # seconds for one run of the command
BASE_ENV = {"PYTHONUTF8": "1", "COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}

SECRET = "s3cr3t-Zq9-VALUE-4411"  # distinctive: if it shows up anywhere, it leaked
Cli = Callable[[str], "subprocess.CompletedProcess[str]"]
PROBLEM_FIELDS = {"file", "line", "column", "pointer", "code", "message", "hint", "severity"}

VALID = """\
version: 1
servers:
  time:
    command: uvx
    args: [mcp-server-time]
  docs:
    url: https://docs.example.com/mcp
namespaces:
  dev:
    servers: [time, docs]
"""

INVALID = """\
version: 1
servers:
  time:
    command: uvx
    timeout: 30
"""

WARNING_ONLY = """\
version: 1
servers:
  docs:
    url: http://127.0.0.1:9/mcp
    auth: {type: bearer, token: this-is-a-literal-token}
"""


# Errors found by the schema stage, with the secret used everywhere a secret goes.
SECRET_SCHEMA_STAGE = """\
version: 1
gateway:
  transport: streamable-http
  http:
    session_signing_key: ${MCPGW_TEST_SECRET}
servers:
  docs:
    url: https://docs.example.com/mcp
    headers:
      X-Api-Key: ${MCPGW_TEST_SECRET}
    timeout: 30
  github:
    command: npx
    env:
      GITHUB_TOKEN: ${MCPGW_TEST_SECRET}
auth:
  api_keys:
    - name: ci-bot
      key: ${MCPGW_TEST_SECRET}
"""

# Schema-valid, so the cross-checks run and find errors next to (and about) the secret.
SECRET_CHECK_STAGE = """\
version: 1
gateway:
  transport: streamable-http
servers:
  docs:
    url: https://docs.example.com/mcp
    headers:
      X-Api-Key: "key ${MCPGW_TEST_SECRET}"
      Host: docs.example.com
  github:
    command: npx
    env:
      GITHUB_TOKEN: ${MCPGW_TEST_SECRET}
auth:
  api_keys:
    - name: ci-bot
      key: ${MCPGW_TEST_SECRET}
      namespaces: [nope]
"""


SECRET_BAD_URL = """\
version: 1
servers:
  docs:
    url: ${MCPGW_TEST_URL}
"""

SECRET_WRONG_TYPE_CONTAINER = """\
version: 1
servers:
  docs:
    url: https://docs.example.com/mcp
    headers: ["Authorization: Bearer ${MCPGW_TEST_SECRET}"]
"""


RECURSIVE_ALIAS = """\
version: 1
x-loop: &loop [*loop]
"""


# serve runs for real: its one upstream is the bundled demo server, a local process (no network).
SERVE = f"""\
version: 1
servers:
  demo:
    command: {json.dumps(sys.executable)}
    args: [-m, gateway.demo]
"""

FILES = {
    "serve.yaml": SERVE,
    "recursive-alias.yaml": RECURSIVE_ALIAS,
    "valid.yaml": VALID,
    "invalid.yaml": INVALID,
    "warn.yaml": WARNING_ONLY,
    "secret-schema-stage.yaml": SECRET_SCHEMA_STAGE,
    "secret-check-stage.yaml": SECRET_CHECK_STAGE,
    "secret-bad-url.yaml": SECRET_BAD_URL,
    "secret-wrong-type-container.yaml": SECRET_WRONG_TYPE_CONTAINER,
}

_SECRET_ENV = {"MCPGW_TEST_SECRET": SECRET, "MCPGW_TEST_URL": f"ftp://bot:{SECRET}@docs.example.com/mcp"}
_CRLF_ENV = {"MCPGW_TEST_SECRET": SECRET + "\r\nX-Injected: 1"}

# Every invocation the tests look at, by name: (arguments, extra environment). They are all started
# at once on a small pool (a run costs ~0.4 s of CPU, mostly imports) and each test waits for its own.
RUNS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "version": (("--version",), {}),
    "no-args": ((), {}),
    "valid": (("validate", "valid.yaml"), {}),
    "invalid": (("validate", "invalid.yaml"), {}),
    "warn": (("validate", "warn.yaml"), {}),
    "warn-json": (("validate", "--format", "json", "warn.yaml"), {}),
    "missing": (("validate", "missing.yaml"), {}),
    "directory": (("validate", "adir"), {}),
    "one-missing": (("validate", "valid.yaml", "missing.yaml", "invalid.yaml"), {}),
    "one-invalid": (("validate", "valid.yaml", "invalid.yaml", "warn.yaml"), {}),
    "json": (("validate", "--format", "json", "valid.yaml", "invalid.yaml"), {}),
    "json-valid": (("validate", "--format", "json", "valid.yaml"), {}),
    "json-missing": (("validate", "--format", "json", "valid.yaml", "missing.yaml"), {}),
    **{f"secret-{stage}-{fmt}": (("validate", "--format", fmt, f"secret-{stage}.yaml"), env)
       for stage, env in [("schema-stage", _SECRET_ENV), ("check-stage", _CRLF_ENV), ("bad-url", _SECRET_ENV),
                          ("wrong-type-container", _SECRET_ENV)]
       for fmt in ("text", "json")},
    "recursive-alias": (("validate", "recursive-alias.yaml"), {}),
    "schema": (("schema",), {}),
    "serve-valid": (("serve", "serve.yaml"), {}),
    "serve-invalid": (("serve", "invalid.yaml"), {}),
    "serve-missing": (("serve", "missing.yaml"), {}),
    "serve-help": (("serve", "--help"), {}),
}


def mcpgw(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**BASE_ENV, **(env or {}), "PATH": os.environ.get("PATH", os.defpath)}
    return subprocess.run([str(MCPGW), *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          encoding="utf-8", timeout=TIMEOUT, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """``cli(name)``: the finished run ``RUNS[name]``, made in a directory holding ``FILES``."""
    work = tmp_path_factory.mktemp("cli")
    for name, text in FILES.items():
        (work / name).write_text(text, encoding="utf-8")
    (work / "adir").mkdir()
    pool = ThreadPoolExecutor(max_workers=max(2, min(8, (os.cpu_count() or 2) * 2)))
    futures = {name: pool.submit(mcpgw, *args, cwd=work, env=env) for name, (args, env) in RUNS.items()}
    yield lambda name: futures[name].result(timeout=TIMEOUT * 2)
    pool.shutdown(wait=True, cancel_futures=True)


def test_version(cli: Cli) -> None:
    result = cli("version")
    assert result.returncode == 0
    assert result.stdout == f"mcpgw {gateway.__version__}\n"


def test_no_arguments_prints_usage(cli: Cli) -> None:
    result = cli("no-args")
    output = result.stdout + result.stderr
    assert "Usage: mcpgw" in output
    for command in ("validate", "schema", "serve"):
        assert command in output
    assert result.returncode == 2  # a usage error, like every other one


# validate ------------------------------------------------------------------------------------------


def test_validate_valid_file(cli: Cli) -> None:
    result = cli("valid")
    assert (result.returncode, result.stdout, result.stderr) == (0, "valid.yaml: valid: 2 servers, 1 namespace\n", "")


def test_validate_invalid_file(cli: Cli) -> None:
    result = cli("invalid")
    assert result.returncode == 1
    assert result.stdout == (
        "invalid.yaml:5:14: /servers/time/timeout: expected a string, got an integer 30 (durations need a unit, like `30s`)\n"
        "invalid.yaml: invalid: 1 error\n"
    )
    assert result.stderr == ""


def test_warnings_alone_exit_0(cli: Cli) -> None:
    result = cli("warn")
    assert result.returncode == 0, result.stdout
    assert result.stdout == (
        "warn.yaml:5:33: /servers/docs/auth/token: warning: a secret is written into the file "
        "(reference it: ${VAR} or ${file:/run/secrets/name})\n"
        "warn.yaml: valid: 1 server, 0 namespaces, 1 warning\n"
    )


def test_warnings_alone_exit_0_in_json(cli: Cli) -> None:
    result = cli("warn-json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["valid"] is True
    [file] = report["files"]
    assert file["valid"] is True
    assert [p["severity"] for p in file["problems"]] == ["warning"]


@pytest.mark.parametrize("run, name, reason", [("missing", "missing.yaml", "no such file"),
                                               ("directory", "adir", "is a directory, not a config file")])
def test_unreadable_file_is_a_usage_error(cli: Cli, run: str, name: str, reason: str) -> None:
    result = cli(run)
    assert result.returncode == 2
    assert result.stderr == f"mcpgw: {name}: {reason}\n"
    assert result.stdout == ""


def test_several_files_one_missing(cli: Cli) -> None:
    result = cli("one-missing")
    assert result.returncode == 2  # the usage error wins over the invalid file
    assert result.stderr == "mcpgw: missing.yaml: no such file\n"
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0] == "valid.yaml: valid: 2 servers, 1 namespace"
    assert lines[1].startswith("invalid.yaml:5:14: /servers/time/timeout: ")
    assert lines[2] == "invalid.yaml: invalid: 1 error"


def test_one_invalid_among_valid_files_exits_1(cli: Cli) -> None:
    result = cli("one-invalid")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "valid.yaml: valid: 2 servers, 1 namespace" in lines
    assert "invalid.yaml: invalid: 1 error" in lines
    assert "warn.yaml: valid: 1 server, 0 namespaces, 1 warning" in lines


def test_json_format(cli: Cli) -> None:
    result = cli("json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    valid, invalid = report["files"]
    assert (valid["file"], valid["valid"], valid["problems"]) == ("valid.yaml", True, [])
    assert (invalid["file"], invalid["valid"]) == ("invalid.yaml", False)
    for problem in invalid["problems"]:
        assert set(problem) == PROBLEM_FIELDS
    assert invalid["problems"] == [{
        "file": "invalid.yaml", "line": 5, "column": 14, "pointer": "/servers/time/timeout", "code": "wrong-type",
        "message": "expected a string, got an integer 30", "hint": "durations need a unit, like `30s`",
        "severity": "error",
    }]


def test_json_format_valid(cli: Cli) -> None:
    result = cli("json-valid")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["valid"] is True
    assert [(f["file"], f["valid"], f["problems"]) for f in report["files"]] == [("valid.yaml", True, [])]


def test_json_format_missing_file(cli: Cli) -> None:
    result = cli("json-missing")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert report["files"][0]["valid"] is True
    assert (report["files"][1]["file"], report["files"][1]["error"]) == ("missing.yaml", "no such file")


# secrets -------------------------------------------------------------------------------------------


def _messages(result: subprocess.CompletedProcess[str], fmt: str) -> str:
    if fmt == "text":
        return result.stdout
    return "\n".join(p["message"] for f in json.loads(result.stdout)["files"] for p in f["problems"])


@pytest.mark.parametrize("stage, shown", [
    ("schema-stage", '"${MCPGW_TEST_SECRET}" must be at least 32 characters long'),
    ("check-stage", "contains a line break (written as key ${MCPGW_TEST_SECRET})"),
])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secret_never_printed(cli: Cli, stage: str, shown: str, fmt: str) -> None:
    result = cli(f"secret-{stage}-{fmt}")
    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr
    assert shown in _messages(result, fmt)  # the value is shown as the reference it was written as


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secret_not_printed_in_bad_url(cli: Cli, fmt: str) -> None:
    result = cli(f"secret-bad-url-{fmt}")
    assert result.returncode == 1
    assert "/servers/docs/url" in result.stdout
    assert SECRET not in result.stdout + result.stderr
    assert "${MCPGW_TEST_URL}" in _messages(result, fmt)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secret_not_printed_in_wrong_type_container(cli: Cli, fmt: str) -> None:
    result = cli(f"secret-wrong-type-container-{fmt}")
    assert result.returncode == 1
    assert "/servers/docs/headers" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_recursive_alias_is_a_problem_not_a_crash(cli: Cli) -> None:
    result = cli("recursive-alias")
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    assert result.stdout.startswith("recursive-alias.yaml:2:")
    assert result.stdout.endswith("recursive-alias.yaml: invalid: 1 error\n")


# schema --------------------------------------------------------------------------------------------


def test_schema_prints_the_draft_2020_12_schema(cli: Cli) -> None:
    result = cli("schema")
    assert result.returncode == 0
    printed = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(printed)
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert printed == json.loads((REPO / "schemas" / "mcpgw.schema.json").read_text(encoding="utf-8"))


def test_packaged_schema_is_the_repository_schema() -> None:
    packaged = REPO / "gateway" / "schemas" / "mcpgw.schema.json"
    published = REPO / "schemas" / "mcpgw.schema.json"
    assert json.loads(packaged.read_text(encoding="utf-8")) == json.loads(published.read_text(encoding="utf-8"))


# serve ---------------------------------------------------------------------------------------------


def test_serve_stops_cleanly_when_the_stdio_client_closes_stdin(cli: Cli) -> None:
    result = cli("serve-valid")
    assert result.returncode == 0
    assert result.stdout == "", "stdout is the MCP channel: nothing but protocol may reach it"
    assert "input closed; stopping" in result.stderr


def test_serve_invalid_config_reports_problems_on_stderr_and_does_not_start(cli: Cli) -> None:
    result = cli("serve-invalid")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "invalid.yaml:5:14: /servers/time/timeout:" in result.stderr


def test_serve_missing_config_is_a_usage_error(cli: Cli) -> None:
    result = cli("serve-missing")
    assert result.returncode == 2
    assert result.stderr == "mcpgw: missing.yaml: no such file\n"


def test_serve_help_names_the_transports(cli: Cli) -> None:
    result = cli("serve-help")
    assert result.returncode == 0
    assert "--transport" in result.stdout and "streamable-http" in result.stdout




def test_serving_freezes_what_startup_made_and_a_reload_settles_again() -> None:
    """``serve`` hides startup's objects from the garbage collector (full collections walked them
    for up to 0.1 s under load) and collects young ones less often; each applied reload unfreezes,
    collects what the old configuration left in cycles, and freezes the new state."""
    import gc
    import weakref

    from gateway import serve

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    thresholds = gc.get_threshold()
    try:
        left = Cycle()
        collected: list[bool] = []
        weakref.finalize(left, collected.append, True)
        serve._settle_gc()  # as at startup: left is frozen with everything else
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == serve.GC_THRESHOLDS
        del left  # garbage now, in a cycle, but frozen: no collection sees it
        gc.collect()
        assert collected == []
        serve._settle_gc()  # as after a reload
        assert collected == [True]
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
