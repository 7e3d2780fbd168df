"""The config pipeline in-process: ``interpolate`` on its own, and ``load_text`` from text to model.

No subprocesses and no real environment: every test passes its own ``env`` mapping and, where files
are read, its own ``base_dir``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

import pytest

from gateway.config.interpolate import interpolate
from gateway.config.loader import LoadResult, load_text
from gateway.config.model import DEFAULT_RATE_LIMIT_RULES, GatewayConfig
from gateway.config.schema import load_schema
from gateway.config.units import parse_duration, parse_size

HERE = Path(".")


def load(text: str, env: Mapping[str, str] | None = None, base_dir: Path = HERE) -> LoadResult:
    return load_text(text, "gw.yaml", env or {}, base_dir)


def load_valid(text: str, env: Mapping[str, str] | None = None, base_dir: Path = HERE) -> GatewayConfig:
    result = load(text, env, base_dir)
    assert result.config is not None, [p.render() for p in result.problems]
    assert [p for p in result.problems if p.is_error] == []
    return result.config


def rendered(result: LoadResult) -> list[str]:
    return [p.render() for p in result.problems]


# interpolate ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, env, value", [
    ("plain", {}, "plain"),
    ("${A}", {"A": "x"}, "x"),
    ("pre-${A}-${B}-post", {"A": "1", "B": "2"}, "pre-1-2-post"),
    ("${A}", {"A": ""}, ""),                         # set but empty is a value, not a problem
    ("${A:-fallback}", {}, "fallback"),
    ("${A:-fallback}", {"A": ""}, "fallback"),       # empty counts as unset for :-
    ("${A:-fallback}", {"A": "set"}, "set"),
    ("${A:-}", {}, ""),
    ("${A:-has spaces: and colons}", {}, "has spaces: and colons"),
    ("${A:?needed}", {"A": "set"}, "set"),
    ("$$", {}, "$"),
    ("$${A}", {"A": "x"}, "${A}"),                   # an escaped reference stays literal text
    ("cost: $$5 and $$$${A}", {}, "cost: $5 and $${A}"),
    ("$5 and $A and $", {"A": "x"}, "$5 and $A and $"),  # any other `$` is kept as it is
])
def test_interpolate_grammar(text: str, env: dict[str, str], value: str) -> None:
    done = interpolate(text, env, HERE)
    assert done.failures == []
    assert done.value == value


def test_interpolate_records_references_not_values() -> None:
    done = interpolate("a ${A} b ${B:-x} c $$", {"A": "secret"}, HERE)
    assert done.references == ["${A}", "${B:-x}"]
    assert done.changed
    assert not interpolate("no refs $$ here", {}, HERE).changed


@pytest.mark.parametrize("text, env, code, message", [
    ("${MISSING}", {}, "missing-env", "environment variable MISSING is not set"),
    ("${NEED:?ask the admin}", {}, "missing-env", "environment variable NEED is not set: ask the admin"),
    ("${NEED:?ask the admin}", {"NEED": ""}, "missing-env", "environment variable NEED is not set: ask the admin"),
    ("${NEED:?}", {}, "missing-env", "environment variable NEED is not set: required"),
    ("abc${OPEN", {}, "bad-reference", "unterminated `${` (a reference ends with `}`)"),
    ("${1BAD}", {}, "bad-reference", "`${1BAD}` is not a valid reference"),
    ("${}", {}, "bad-reference", "`${}` is not a valid reference"),
    ("${file:}", {}, "bad-reference", "`${file:}` names no file"),
    ("${file:does/not/exist}", {}, "missing-secret-file",
     "cannot read secret file `${file:does/not/exist}`: No such file or directory"),
])
def test_interpolate_failures(text: str, env: dict[str, str], code: str, message: str, tmp_path: Path) -> None:
    done = interpolate(text, env, tmp_path)
    assert [(f.code, f.message) for f in done.failures] == [(code, message)]


def test_missing_variable_hint_suggests_a_default() -> None:
    [failure] = interpolate("${GITHUB_TOKEN}", {}, HERE).failures
    assert failure.hint == "set it, or give a default: ${GITHUB_TOKEN:-default}"


def test_every_failure_is_collected() -> None:
    done = interpolate("${A} ${B:?why} ${C:-ok} ${D", {}, HERE)
    assert [f.code for f in done.failures] == ["missing-env", "missing-env", "bad-reference"]


@pytest.mark.parametrize("content, value", [
    ("tok\n", "tok"),
    ("tok\r\n", "tok"),
    ("tok", "tok"),
    ("tok\n\n", "tok\n"),     # one trailing newline only
    ("line1\nline2\n", "line1\nline2"),
    ("", ""),
])
def test_file_secret_strips_one_trailing_newline(tmp_path: Path, content: str, value: str) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(content.encode())
    done = interpolate(f"${{file:{secret}}}", {}, Path("/nonexistent"))  # absolute: base_dir unused
    assert done.failures == []
    assert done.value == value


def test_file_secret_relative_path_is_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text("from-base-dir\n")
    assert interpolate("${file:secrets/token}", {}, tmp_path).value == "from-base-dir"
    assert interpolate("${file:./secrets/token}", {}, tmp_path).value == "from-base-dir"


def test_file_reader_is_injectable() -> None:
    seen: list[Path] = []

    def reader(path: Path) -> str:
        seen.append(path)
        return "injected\n"

    done = interpolate("${file:rel/x} ${file:/abs/y}", {}, Path("/base"), reader)
    assert done.value == "injected injected"
    assert seen == [Path("/base/rel/x"), Path("/abs/y")]


def test_unreadable_secret_file_is_a_failure_not_an_exception(tmp_path: Path) -> None:
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00")
    [failure] = interpolate("${file:binary}", {}, tmp_path).failures
    assert failure.code == "missing-secret-file"
    [failure] = interpolate("${file:.}", {}, tmp_path).failures
    assert failure.code == "missing-secret-file"


# interpolation through the pipeline ----------------------------------------------------------------


def test_unquoted_reference_is_retyped_quoted_stays_a_string() -> None:
    text = "version: 1\ngateway:\n  http:\n    port: {port}\n"
    config = load_valid(text.format(port="${PORT}"), {"PORT": "8080"})
    assert config.gateway.http.port == 8080
    for quoted in ('"${PORT}"', "'${PORT}'"):
        result = load(text.format(port=quoted), {"PORT": "8080"})
        assert result.config is None
        assert rendered(result) == [
            'gw.yaml:4:11: /gateway/http/port: expected an integer, got a string "${PORT}" (write it without quotes)']


def test_retyping_follows_yaml_1_2() -> None:
    text = "version: 1\nservers:\n  a:\n    command: x\n    enabled: ${FLAG}\n    description: ${DESC}\n"
    config = load_valid(text, {"FLAG": "false", "DESC": "yes"})
    assert config.servers["a"].enabled is False
    assert config.servers["a"].description == "yes"


def test_default_and_file_secret_in_a_config(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file-token\n")
    config = load_valid(
        "version: 1\nservers:\n  gh:\n    command: npx\n    env:\n"
        "      TOKEN: ${file:token}\n      LEVEL: ${LOG_LEVEL:-info}\n      LITERAL: price $$5\n",
        {}, tmp_path)
    env = config.servers["gh"].env
    assert env["TOKEN"].reveal() == "file-token"
    assert env["LEVEL"].reveal() == "info"
    assert env["LITERAL"].reveal() == "price $5"


def test_failed_reference_is_not_reported_twice() -> None:
    """A value whose interpolation failed gets its interpolation problem only, not a schema one too."""
    result = load("version: 1\ngateway:\n  http:\n    port: ${PORT}\n")
    assert [p.code for p in result.problems] == ["missing-env"]


# YAML 1.2 ------------------------------------------------------------------------------------------


def test_yaml_1_2_scalars() -> None:
    config = load_valid(
        "version: 1\nservers:\n"
        "  a:\n    command: x\n    description: yes\n    args: [on, off, y, n, 2024-01-02, 1_000]\n"
        "  b:\n    command: x\n    enabled: False\n")
    a, b = config.servers["a"], config.servers["b"]
    assert a.description == "yes"
    assert a.args[:5] == ("on", "off", "y", "n", "2024-01-02")  # no YAML 1.1 booleans, no dates
    assert a.args[5] == "1_000"
    assert b.enabled is False


def test_dates_stay_strings() -> None:
    config = load_valid("version: 1\ngateway:\n  instructions: 2024-01-02\n")
    assert config.gateway.instructions == "2024-01-02"


def test_leading_zero_integer_is_decimal() -> None:
    config = load_valid("version: 1\nservers:\n  a:\n    command: x\n    retry:\n      attempts: 010\n")
    assert config.servers["a"].retry.attempts == 10


def test_merge_keys_with_x_anchors() -> None:
    config = load_valid("""\
version: 1
x-defaults: &defaults
  timeout: 5s
  retry: {attempts: 5}
x-quiet: &quiet
  description: quiet
  health_check: {enabled: false}
servers:
  a:
    <<: *defaults
    command: uvx
  b:
    <<: [*defaults, *quiet]
    command: uvx
    timeout: 10s
""")
    a, b = config.servers["a"], config.servers["b"]
    assert (a.timeout, a.retry.attempts, a.description) == (5.0, 5, None)
    assert (b.timeout, b.retry.attempts, b.description, b.health_check.enabled) == (10.0, 5, "quiet", False)


def test_x_keys_are_ignored_but_other_unknown_keys_are_not() -> None:
    assert load("version: 1\nx-anything: {whatever: [1, 2]}\n").valid
    result = load("version: 1\ny-anything: 1\n")
    assert [p.code for p in result.problems] == ["unknown-key"]


def test_duplicate_keys_are_problems() -> None:
    result = load("version: 1\nversion: 1\n")
    assert not result.valid
    assert [p.code for p in result.problems] == ["duplicate-key"]


def test_non_string_keys_are_problems() -> None:
    result = load("version: 1\n1: one\n")
    assert [(p.line, p.column, p.code) for p in result.problems] == [(2, 1, "bad-key")]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_documents(text: str) -> None:
    result = load(text)
    assert [(p.line, p.column, p.code) for p in result.problems] == [(1, 1, "empty")]


@pytest.mark.parametrize("text", ["---\n", "--- # servers go here\n", "null\n", "~\n"])
def test_null_document_is_a_problem(text: str) -> None:
    result = load(text)
    assert not result.valid
    assert [p.code for p in result.problems if p.is_error] != []


@pytest.mark.parametrize("text", [
    "version: 1\n", "[]\n", "42\n", "version: 1\nservers: []\n", "version: 1\nservers:\n  a: {}\n",
    "version: 1\nservers:\n  a:\n    command: x\n    url: https://x.example.com\n", "version: '1'\n",
    "{version: 1, gateway: {http: {port: 0}}}\n", "version: 1\n? [a]\n: b\n", "version: 1.0\n",
])
def test_invalid_always_says_why(text: str) -> None:
    """Whatever the input, the result is valid or carries at least one error, and nothing raises."""
    result = load(text)
    assert result.valid == (result.config is not None)
    assert result.valid or any(p.is_error for p in result.problems)
    assert all(p.file == "gw.yaml" and p.line >= 1 and p.column >= 1 for p in result.problems)


def test_unsupported_tag_is_one_problem() -> None:
    result = load("version: !!python/object:os.system x\n")
    assert [p.code for p in result.problems] == ["yaml-tag"]


@pytest.mark.parametrize("text", [
    "version: 1\nx-loop: &loop [*loop]\n",
    "version: 1\nservers:\n  a: &a\n    command: x\n    <<: *a\n",
])
def test_recursive_alias_is_a_problem(text: str) -> None:
    result = load(text)
    assert not result.valid
    assert result.problems and result.problems[0].is_error


def test_alias_bomb_is_bounded() -> None:
    lines = ['version: 1', 'x-a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"x-{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    result = load("\n".join(lines) + "\n")
    assert [p.code for p in result.problems] == ["too-large"]


# model ---------------------------------------------------------------------------------------------

SECRETS = {
    "SIGNING_KEY": "signing-key-value-0123456789abcdef-XYZ",
    "GH_TOKEN": "gh-token-value-Q1W2E3",
    "DOCS_KEY": "docs-key-value-R4T5Y6",
    "BEARER": "bearer-value-U7I8O9",
    "CI_KEY": "ci-key-value-P0A1S2D3F4",
    "PG_KEY": "pg-key-value-G5H6J7",
}
FILE_SECRET = "client-secret-from-file-K8L9"

SECRET_CONFIG = """\
version: 1
gateway:
  transport: streamable-http
  http:
    session_signing_key: ${SIGNING_KEY}
servers:
  gh:
    command: npx
    env: {GITHUB_TOKEN: "${GH_TOKEN}"}
  docs:
    url: https://docs.example.com/mcp
    headers: {X-Api-Key: "key=${DOCS_KEY}"}
  oauth:
    url: https://oauth.example.com/mcp
    auth: {type: oauth_client_credentials, client_id: mcpgw, client_secret: "${file:client_secret}"}
  bearer:
    url: https://bearer.example.com/mcp
    auth: {type: bearer, token: "${BEARER}"}
auth:
  api_keys:
    - {name: ci, key: "${CI_KEY}"}
sources:
  - {type: pluggedin, api_key: "${PG_KEY}"}
"""


@pytest.fixture
def secret_config(tmp_path: Path) -> GatewayConfig:
    (tmp_path / "client_secret").write_text(FILE_SECRET + "\n")
    return load_valid(SECRET_CONFIG, SECRETS, tmp_path)


def test_repr_never_contains_a_secret(secret_config: GatewayConfig) -> None:
    for text in (repr(secret_config), str(secret_config), f"{secret_config}"):
        for value in [*SECRETS.values(), FILE_SECRET]:
            assert value not in text
        for name in SECRETS:
            assert "${" + name + "}" in text
        assert "${file:client_secret}" in text


def test_secrets_are_still_there_to_use(secret_config: GatewayConfig) -> None:
    servers = secret_config.servers
    assert servers["gh"].env["GITHUB_TOKEN"].reveal() == SECRETS["GH_TOKEN"]
    assert servers["docs"].headers["X-Api-Key"].reveal() == "key=" + SECRETS["DOCS_KEY"]
    assert servers["oauth"].auth.client_secret.reveal() == FILE_SECRET
    assert servers["bearer"].auth.token.reveal() == SECRETS["BEARER"]
    assert secret_config.auth.api_keys[0].key.reveal() == SECRETS["CI_KEY"]
    assert secret_config.sources[0].api_key.reveal() == SECRETS["PG_KEY"]
    assert secret_config.gateway.http.session_signing_key.reveal() == SECRETS["SIGNING_KEY"]
    assert servers["docs"].headers["X-Api-Key"].written_as == "key=${DOCS_KEY}"


def test_literal_secret_repr_is_masked() -> None:
    result = load("version: 1\nservers:\n  gh:\n    command: npx\n    env: {TOKEN: literal-secret-value}\n")
    assert result.config is not None
    assert "literal-secret-value" not in repr(result.config)
    assert "Secret('***')" in repr(result.config.servers["gh"].env)


def test_repr_does_not_contain_secrets_interpolated_into_plain_strings() -> None:
    config = load_valid(
        "version: 1\nservers:\n  gh:\n    command: npx\n    args: [--api-key, '${KEY}']\n"
        "  docs:\n    url: 'https://docs.example.com/mcp?key=${KEY}'\n", {"KEY": "plain-string-secret-Z9"})
    assert "plain-string-secret-Z9" not in repr(config)


def test_model_is_frozen(secret_config: GatewayConfig) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        secret_config.version = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        secret_config.gateway.http.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        secret_config.servers["gh"].env["GITHUB_TOKEN"].value = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        secret_config.servers["new"] = secret_config.servers["gh"]  # type: ignore[index]
    with pytest.raises(TypeError):
        secret_config.servers["gh"].env["OTHER"] = secret_config.servers["gh"].env["GITHUB_TOKEN"]  # type: ignore[index]
    assert isinstance(secret_config.servers["gh"].args, tuple)
    assert isinstance(secret_config.auth.api_keys, tuple)
    with pytest.raises(AttributeError):  # slots: no stray attributes either
        object.__setattr__(secret_config, "extra", 1)


def test_servers_get_inferred_transport_prefix_and_name() -> None:
    config = load_valid("""\
version: 1
servers:
  local:
    command: uvx
  remote:
    url: https://remote.example.com/mcp
  legacy:
    transport: sse
    url: https://legacy.example.com/sse
  renamed:
    command: uvx
    prefix: rn
  bare:
    command: uvx
    prefix: ""
namespaces:
  dev:
    servers: [local, remote]
""")
    got = {name: (s.name, s.transport, s.prefix) for name, s in config.servers.items()}
    assert got == {
        "local": ("local", "stdio", "local"),
        "remote": ("remote", "streamable-http", "remote"),
        "legacy": ("legacy", "sse", "legacy"),
        "renamed": ("renamed", "stdio", "rn"),
        "bare": ("bare", "stdio", ""),
    }
    assert list(config.servers) == ["local", "remote", "legacy", "renamed", "bare"]  # file order kept
    assert config.namespaces["dev"].name == "dev"
    assert config.namespaces["dev"].servers == ("local", "remote")


def test_units_are_converted() -> None:
    config = load_valid("""\
version: 1
gateway:
  drain_timeout: 1.5h
  http:
    max_body_bytes: 1MiB
    max_header_bytes: 1000
    keepalive: 250ms
servers:
  a:
    command: x
    tools:
      timeouts: {run_query: 5m}
""")
    assert config.gateway.drain_timeout == 5400.0
    assert config.gateway.http.max_body_bytes == 2**20
    assert config.gateway.http.max_header_bytes == 1000
    assert config.gateway.http.keepalive == 0.25
    assert config.servers["a"].tools.timeouts["run_query"] == 300.0


def test_rate_limits_without_rules_get_the_default_rules() -> None:
    config = load_valid("version: 1\nrate_limits: {}\n")
    assert config.rate_limits.rules == DEFAULT_RATE_LIMIT_RULES
    assert [(r.requests, r.per, r.methods) for r in config.rate_limits.rules] == [
        (60, 60.0, ("tools/call",)), (100, 60.0, None)]
    assert load_valid("version: 1\n").rate_limits is None


def test_problems_come_in_file_order() -> None:
    result = load("""\
version: 1
servers:
  b:
    command: x
    timeout: 1
    env: {A: "${UNSET}"}
  a:
    command: x
    session: nope
gateway:
  name: 5
""")
    positions = [(p.line, p.column) for p in result.problems]
    assert positions == sorted(positions)
    assert [p.pointer for p in result.problems] == [
        "/servers/b/timeout", "/servers/b/env/A", "/servers/a/session", "/gateway/name"]


# schema defaults == model defaults -----------------------------------------------------------------

SCHEMA = load_schema()

# Reaches every object of the schema that needs more than `{}` to be valid; `_fill` adds `{}` for all
# the others, so each `default` in the schema is compared with the value the model gives an omitted key.
DEFAULTS_SEED = {
    "version": 1,
    "gateway": {"http": {"tls": {"cert_file": "/c.pem", "key_file": "/k.pem"}}},
    "servers": {
        "local": {"command": "uvx"},
        "remote": {"url": "https://remote.example.com/mcp",
                   "auth": {"type": "oauth_refresh_token", "client_id": "mcpgw", "token_file": "/t.json"}},
    },
    "namespaces": {"dev": {"servers": ["local"]}},
    "auth": {"api_keys": [{"name": "ci", "key_sha256": hashlib.sha256(b"k").hexdigest()}],
             "oauth": {"issuer": "https://auth.example.com", "audience": "gw",
                       "jwks_url": "https://auth.example.com/jwks.json"}},
    "rate_limits": {"rules": [{"scope": "tool", "requests": 1, "per": "1s"}]},
    "cors": {"allow_origins": ["https://app.example.com"]},
    "sources": [{"type": "pluggedin", "api_key": "${PG_KEY}"}],
}

# Model values for omitted keys that the schema rightly does not state as `default`.
MODEL_ONLY_DEFAULTS = {"/servers/*/transport", "/servers/*/prefix"}  # inferred per server, not defaults


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = SCHEMA
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _is_open_object(node: dict[str, Any]) -> bool:
    node = _resolve(node)
    return node.get("type") == "object" and "properties" in node and not node.get("required")


def _fill(node: dict[str, Any], data: Any) -> Any:
    """``data`` with ``{}`` for every absent object-valued key that needs nothing to be valid."""
    node = _resolve(node)
    if isinstance(data, dict):
        props = node.get("properties", {})
        for key, sub in props.items():
            if key not in data and _is_open_object(sub):
                data[key] = {}
            if key in data:
                _fill(sub, data[key])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in data.items():
                if key not in props:
                    _fill(extra, value)
    elif isinstance(data, list) and isinstance(node.get("items"), dict):
        for item in data:
            _fill(node["items"], item)
    return data


def _expected(sub: dict[str, Any]) -> Any:
    default, ref = sub["default"], sub.get("$ref", "")
    if ref.endswith("/duration"):
        return parse_duration(default)
    if ref.endswith("/size"):
        return parse_size(default)
    return tuple(default) if isinstance(default, list) else default


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (tuple, Mapping)) and len(value) == 0)


@dataclasses.dataclass(frozen=True)
class Seen:
    kind: str              # "default": the schema states one; "model-only": it does not, the model has one
    pointer: str           # where, with `*` for any map key or list index
    node_id: int | None    # id() of the property's node in the schema document
    schema: Any
    model: Any


def _walk(node: dict[str, Any], data: Any, model: Any, pointer: str = "") -> Iterator[Seen]:
    """Every key the schema knows but ``data`` omits, with what the built model holds for it."""
    node = _resolve(node)
    if isinstance(data, dict):
        props = node.get("properties", {})
        for key, sub in props.items():
            here = f"{pointer}/{key}"
            value = getattr(model, key)
            if key in data:
                yield from _walk(sub, data[key], value, here)
            elif "default" in sub:
                yield Seen("default", here, id(sub), _expected(sub), value)
            elif not _empty(value):
                yield Seen("model-only", here, None, None, value)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in data.items():
                if key not in props:
                    yield from _walk(extra, item, model[key], f"{pointer}/*")
    elif isinstance(data, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(data):
            yield from _walk(node["items"], item, model[i], f"{pointer}/*")


def _schema_defaults(node: Any, pointer: str = "#") -> Iterator[tuple[str, int]]:
    """(where, id) of every property node in the schema document that states a default."""
    if isinstance(node, dict):
        for key, value in node.items():
            if pointer.endswith("/properties") and isinstance(value, dict) and "default" in value:
                yield f"{pointer}/{key}", id(value)
            yield from _schema_defaults(value, f"{pointer}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _schema_defaults(value, f"{pointer}/{i}")


@pytest.fixture(scope="module")
def defaults_walk() -> list[Seen]:
    data = _fill(SCHEMA, copy.deepcopy(DEFAULTS_SEED))
    config = load_valid(json.dumps(data), {"PG_KEY": "pg"})
    return list(_walk(SCHEMA, data, config))


def test_schema_defaults_equal_model_defaults(defaults_walk: list[Seen]) -> None:
    compared = [seen for seen in defaults_walk if seen.kind == "default"]
    assert len(compared) > 40
    assert [(s.pointer, s.schema, s.model) for s in compared if s.schema != s.model] == []


def test_every_schema_default_is_compared(defaults_walk: list[Seen]) -> None:
    """A default added anywhere in the schema is reached by the walk (if not, extend DEFAULTS_SEED)."""
    compared = {seen.node_id for seen in defaults_walk}
    missing = [where for where, node_id in _schema_defaults(SCHEMA)
               if node_id not in compared and where not in COMPARED_ELSEWHERE]
    assert missing == []


def test_model_defaults_are_stated_in_the_schema(defaults_walk: list[Seen]) -> None:
    model_only = {seen.pointer for seen in defaults_walk if seen.kind == "model-only"}
    assert model_only - MODEL_ONLY_DEFAULTS == set()


COMPARED_ELSEWHERE = {"#/properties/rate_limits/properties/rules"}  # see the next test


def test_rate_limit_rules_default_in_the_schema_is_what_an_empty_section_builds() -> None:
    stated = SCHEMA["properties"]["rate_limits"]["properties"]["rules"]["default"]
    implicit = load_valid("version: 1\nrate_limits: {}\n")
    explicit = load_valid(json.dumps({"version": 1, "rate_limits": {"rules": stated}}))
    assert implicit.rate_limits is not None and explicit.rate_limits is not None
    assert implicit.rate_limits.rules == explicit.rate_limits.rules
    assert [(r.requests, r.per, r.methods) for r in implicit.rate_limits.rules] == [(60, 60.0, ("tools/call",)), (100, 60.0, None)]
