"""Rate limits, the audit log and tool-argument validation (gateway/security), without a gateway.

Rate limits never sleep to pass: aiolimiter measures time on the event loop's clock, and a burst
of calls in one test takes microseconds of it, so a bucket refills by a negligible fraction of a
unit between them. The one test that must see a bucket refill uses a 0.2s unit and bounds the wait
with ``fail_after`` instead of timing anything.
"""

from __future__ import annotations

import socket
import hashlib
import io
import json
import logging
import re
import sys
from pathlib import Path

import anyio
import mcp_types
import pytest

from gateway.config.model import AuditConfig, GatewayConfig, RateLimitRule, RateLimits, Secret, ServerConfig
from gateway.redact import REDACT
from gateway.security.arguments import ArgumentValidator
from gateway.security.audit import AuditLog, arguments_sha256
from gateway.security.limits import RateLimited, RateLimiter, describe_rule

pytestmark = pytest.mark.anyio

TOOL_CALLS_PER_MINUTE = RateLimitRule(scope="key", requests=60, per=60.0, methods=("tools/call",))


def limiter(*rules: RateLimitRule, max_wait: float = 0.0, **kwargs) -> RateLimiter:
    return RateLimiter.from_config(RateLimits(rules=rules, max_wait=max_wait), **kwargs)


async def admitted(limits: RateLimiter, **call) -> bool:
    call.setdefault("method", "tools/call")
    call.setdefault("key", "alice")
    try:
        await limits.admit(**call)
    except RateLimited:
        return False
    return True


# --- rate limits ---------------------------------------------------------------------------------

async def test_the_61st_call_in_a_60_per_minute_window_is_refused() -> None:
    limits = limiter(TOOL_CALLS_PER_MINUTE)
    for _ in range(60):
        await limits.admit(method="tools/call", key="alice", server="gh", tool="gh__search")
    with pytest.raises(RateLimited) as refused:
        await limits.admit(method="tools/call", key="alice", server="gh", tool="gh__search")
    assert refused.value.rule == TOOL_CALLS_PER_MINUTE
    assert refused.value.retry_after == pytest.approx(1.0)
    assert str(refused.value) == "rate limit exceeded: 60 tools/call per 60s per client; retry after 1.0s"
    assert refused.value.retry_after_header == "1"
    assert refused.value.data["retryAfter"] == pytest.approx(1.0)


async def test_a_small_window_refuses_the_call_after_its_last_unit() -> None:
    limits = limiter(RateLimitRule(scope="global", requests=3, per=60.0, methods=("tools/call",)))
    assert [await admitted(limits) for _ in range(4)] == [True, True, True, False]
    with pytest.raises(RateLimited) as refused:
        await limits.admit(method="tools/call", key="bob")  # global: every client shares it
    assert refused.value.retry_after == pytest.approx(20.0)
    assert refused.value.retry_after_header == "20"
    assert "3 tools/call per 60s in total" in str(refused.value)


async def test_the_message_never_names_the_client() -> None:
    limits = limiter(RateLimitRule(scope="key", requests=1, per=60.0, methods=("tools/call",)))
    await limits.admit(method="tools/call", key="10.1.2.3")
    with pytest.raises(RateLimited) as refused:
        await limits.admit(method="tools/call", key="10.1.2.3")
    assert "10.1.2.3" not in str(refused.value) and "per client" in str(refused.value)


async def test_each_key_has_its_own_bucket() -> None:
    limits = limiter(RateLimitRule(scope="key", requests=2, per=60.0, methods=("tools/call",)))
    assert [await admitted(limits, key="a") for _ in range(3)] == [True, True, False]
    assert await admitted(limits, key="b")
    assert not await admitted(limits, key="a")


async def test_tool_scope_counts_each_matching_tool_by_itself() -> None:
    limits = limiter(RateLimitRule(scope="tool", requests=1, per=60.0, match="gh__*"))
    assert await admitted(limits, tool="gh__search", server="gh")
    assert not await admitted(limits, tool="gh__search", server="gh")
    assert await admitted(limits, tool="gh__create_issue", server="gh")  # another tool, another bucket
    assert await admitted(limits, tool="fs__read", server="fs")          # not matched
    assert await admitted(limits, tool="fs__read", server="fs")
    assert await admitted(limits, method="resources/read", server="gh")  # no tool named
    # a tool rule counts tools/call unless it says otherwise
    assert await admitted(limits, method="tools/list", tool="gh__search")


async def test_server_scope_applies_when_a_server_is_named_and_matches() -> None:
    limits = limiter(RateLimitRule(scope="server", requests=1, per=60.0, match="g*"))
    assert await admitted(limits, method="resources/read", server="gh")
    assert not await admitted(limits, method="tools/call", server="gh", tool="gh__x")
    assert await admitted(limits, method="tools/call", server="fs")
    assert await admitted(limits, method="tools/list")


async def test_methods_filter_limits_only_those_methods() -> None:
    limits = limiter(RateLimitRule(scope="key", requests=1, per=60.0, methods=("tools/call",)))
    assert await admitted(limits, method="tools/call")
    assert not await admitted(limits, method="tools/call")
    for _ in range(5):
        assert await admitted(limits, method="tools/list")


async def test_a_refusal_takes_nothing_from_the_rules_that_had_room() -> None:
    roomy = RateLimitRule(scope="key", requests=2, per=60.0, methods=("tools/call",))
    tight = RateLimitRule(scope="tool", requests=1, per=60.0, match="gh__*")
    limits = limiter(roomy, tight)
    assert await admitted(limits, tool="gh__a")
    for _ in range(3):
        assert not await admitted(limits, tool="gh__a")  # refused by `tight` only
    assert await admitted(limits, tool="fs__b")  # so `roomy` still has its second unit
    assert not await admitted(limits, tool="fs__c")


async def test_the_refusal_names_the_rule_with_the_longest_wait() -> None:
    fast = RateLimitRule(scope="key", requests=1, per=1.0, methods=("tools/call",))
    slow = RateLimitRule(scope="global", requests=1, per=30.0, methods=("tools/call",))
    limits = limiter(fast, slow)
    await limits.admit(method="tools/call", key="a")
    with pytest.raises(RateLimited) as refused:
        await limits.admit(method="tools/call", key="a")
    assert refused.value.rule == slow and refused.value.retry_after == pytest.approx(30.0)


async def test_request_wide_rules_are_charged_per_request_and_call_rules_per_call() -> None:
    limits = RateLimiter.from_config(RateLimits())  # the defaults: 60 tools/call and 100 requests
    assert limits.request_rules == (RateLimitRule(scope="key", requests=100, per=60.0),)
    assert limits.call_rules == (TOOL_CALLS_PER_MINUTE,)

    for _ in range(100):
        await limits.admit_request(key="alice")
    with pytest.raises(RateLimited) as refused:
        await limits.admit_request(key="alice")
    assert refused.value.retry_after_header == "1"
    assert "100 requests per 60s per client" in str(refused.value)
    # admit() does not charge the request-wide rule again: the call rule still has room
    await limits.admit(method="tools/call", key="alice", server="gh", tool="gh__x")
    await limits.admit(method="tools/list", key="alice")


async def test_stdio_charges_both_kinds_in_one_admit() -> None:
    limits = limiter(RateLimitRule(scope="key", requests=2, per=60.0),
                     RateLimitRule(scope="key", requests=5, per=60.0, methods=("tools/call",)))
    stdio = {"key": "stdio", "include_request_rules": True}
    assert await admitted(limits, method="tools/list", **stdio)
    assert await admitted(limits, method="tools/call", **stdio)
    assert not await admitted(limits, method="tools/call", **stdio)
    assert await admitted(limits, method="tools/call", key="stdio")  # without: only the call rule


async def test_max_wait_admits_once_room_frees() -> None:
    limits = limiter(RateLimitRule(scope="key", requests=1, per=0.2), max_wait=5.0)
    await limits.admit_request(key="a")
    with anyio.fail_after(5):
        await limits.admit_request(key="a")  # waits about 0.2s for the unit to drain


async def test_max_wait_refuses_when_room_does_not_free_in_time() -> None:
    limits = limiter(RateLimitRule(scope="key", requests=1, per=60.0), max_wait=0.05)
    await limits.admit_request(key="a")
    with anyio.fail_after(5):
        with pytest.raises(RateLimited):
            await limits.admit_request(key="a")
    await limits.admit_request(key="b")  # the refused wait took nothing from anyone


async def test_buckets_per_identity_are_bounded() -> None:
    limits = limiter(RateLimitRule(scope="key", requests=1, per=60.0), max_buckets=3)
    for key in ("a", "b", "c", "d", "e"):
        await limits.admit_request(key=key)
    (family,) = limits.families
    assert len(family) == 3
    assert not await _request_admitted(limits, "e")  # recent buckets are kept
    assert await _request_admitted(limits, "a")      # the oldest was forgotten


async def _request_admitted(limits: RateLimiter, key: str) -> bool:
    try:
        await limits.admit_request(key=key)
    except RateLimited:
        return False
    return True


async def test_no_config_limits_nothing_and_a_redis_store_is_shared() -> None:
    none = RateLimiter.from_config(None)
    assert not none.enabled
    for _ in range(500):
        await none.admit(method="tools/call", key="a", tool="x")
        await none.admit_request(key="a")
    redis = RateLimiter.from_config(RateLimits(storage="redis://redis:6379/0"))
    assert redis.enabled and redis.shared and redis.store_status()["storage"] == "redis"


async def test_a_reload_keeps_the_buckets_of_unchanged_rules() -> None:
    kept = RateLimitRule(scope="key", requests=1, per=60.0, methods=("tools/call",))
    old = limiter(kept)
    await old.admit(method="tools/call", key="a")
    new = RateLimiter.from_config(RateLimits(rules=(kept, RateLimitRule(scope="global", requests=9, per=1.0))),
                                  previous=old)
    assert not await admitted(new, key="a")
    changed = RateLimiter.from_config(RateLimits(rules=(RateLimitRule(scope="key", requests=2, per=60.0,
                                                                      methods=("tools/call",)),)),
                                      previous=old)
    assert await admitted(changed, key="a")


def test_rules_are_described_for_people() -> None:
    assert describe_rule(RateLimitRule(scope="tool", requests=10, per=1.5, match="gh__*")) == \
        "10 tools/call per 1.5s per tool matching 'gh__*'"
    assert describe_rule(RateLimitRule(scope="server", requests=5, per=60.0,
                                       methods=("tools/call", "resources/read"))) == \
        "5 resources/read or tools/call per 60s per server"
    assert describe_rule(RateLimitRule(scope="global", requests=1, per=2.0)) == "1 request per 2s in total"


# --- audit log -----------------------------------------------------------------------------------

CALL = dict(key="ci", session="s-1", method="tools/call", name="gh__search", upstream_name="search",
            server="gh", duration_ms=12.3456, outcome="ok", error=None)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def forget_secrets():
    """REDACT is process-wide: put back what it knew before the test taught it a secret."""
    known = REDACT._pattern
    yield
    REDACT._pattern = known


def test_audit_writes_one_json_line_per_call_with_hashed_arguments(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog.from_config(AuditConfig(path=str(path)))
    assert audit is not None
    audit.record(**CALL, arguments={"q": "mcp", "n": 1})
    audit.record(**{**CALL, "outcome": "error", "error": "UpstreamTimeout"}, arguments=None)
    audit.close()
    first, second = read_lines(path)
    assert list(first) == ["time", "key", "session", "method", "name", "upstream_name", "server",
                           "duration_ms", "outcome", "error", "arguments_sha256"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first["duration_ms"] == 12.346 and first["outcome"] == "ok" and first["error"] is None
    assert first["arguments_sha256"] == arguments_sha256({"n": 1, "q": "mcp"})
    assert first["arguments_sha256"] == hashlib.sha256(b'{"n":1,"q":"mcp"}').hexdigest()
    assert "mcp" not in path.read_text().split('"arguments_sha256"')[1]
    assert second["error"] == "UpstreamTimeout" and second["arguments_sha256"] is None


def test_audit_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"earlier":true}\n')
    audit = AuditLog(str(path))
    audit.record(**CALL)
    audit.close()
    audit.record(**CALL)  # after close: ignored, not an error
    assert len(read_lines(path)) == 2


def test_audit_includes_arguments_when_configured(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog.from_config(AuditConfig(path=str(path), include_arguments=True))
    audit.record(**CALL, arguments={"q": "mcp"})
    audit.close()
    (line,) = read_lines(path)
    assert line["arguments"] == {"q": "mcp"} and "arguments_sha256" not in line


def test_audit_masks_configured_secrets(tmp_path: Path, forget_secrets) -> None:
    token = 'tok-"quoted"-s3cr3t'
    REDACT.learn(GatewayConfig(servers={"gh": ServerConfig(name="gh", transport="streamable-http", prefix="gh",
                                                           headers={"Authorization": Secret(token)})}))
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path), include_arguments=True)
    audit.record(**{**CALL, "session": f"s-{token}"}, arguments={"note": f"use {token}", token: [token]})
    audit.close()
    text = path.read_text()
    assert "s3cr3t" not in text
    (line,) = read_lines(path)
    assert line["session"] == "s-***" and line["arguments"] == {"note": "use ***", "***": ["***"]}


def test_audit_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    audit = AuditLog.from_config(AuditConfig())
    assert audit is not None and audit.path == "stderr"
    audit.record(**CALL, arguments={})
    out, err = capsys.readouterr()
    assert out == "" and json.loads(err)["name"] == "gh__search"


def test_no_audit_config_means_no_audit_log() -> None:
    assert AuditLog.from_config(None) is None


def test_an_unwritable_audit_log_drops_lines_and_says_so_once(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    audit = AuditLog("stderr")
    with caplog.at_level(logging.WARNING, logger="mcpgw.audit"):
        monkeypatch.setattr(sys, "stderr", Full())
        for _ in range(3):
            audit.record(**CALL)  # does not raise
        assert audit.dropped == 3
        assert [r.levelname for r in caplog.records if r.name == "mcpgw.audit"] == ["ERROR"]
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        audit.record(**CALL)
        audit.record(**CALL)
    assert [r.levelname for r in caplog.records if r.name == "mcpgw.audit"] == ["ERROR", "WARNING"]
    assert len(sys.stderr.getvalue().splitlines()) == 2


def test_an_audit_file_that_cannot_be_opened_is_an_error_at_start(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        AuditLog.from_config(AuditConfig(path=str(tmp_path / "missing-dir" / "audit.jsonl")))


# --- argument validation -------------------------------------------------------------------------

def tool(schema: dict, name: str = "gh__search") -> mcp_types.Tool:
    return mcp_types.Tool(name=name, input_schema=schema)


SEARCH = tool({"type": "object", "properties": {"query": {"type": "string"}, "count": {"type": "integer"}},
               "required": ["query"]})


def test_valid_arguments_pass() -> None:
    assert ArgumentValidator().check(SEARCH, {"query": "mcp", "count": 3}) is None


def test_a_wrong_type_is_named_with_its_path() -> None:
    assert ArgumentValidator().check(SEARCH, {"query": "mcp", "count": "x"}) == \
        "argument /count: 'x' is not of type 'integer'"
    nested = tool({"type": "object", "properties": {"filters": {"type": "array", "items": {"type": "string"}}}})
    assert ArgumentValidator().check(nested, {"filters": ["a", 2]}) == "argument /filters/1: 2 is not of type 'string'"


def test_a_missing_required_argument_is_named() -> None:
    validator = ArgumentValidator()
    assert validator.check(SEARCH, {"count": 1}) == "arguments: 'query' is a required property"
    assert validator.check(SEARCH, None) == "arguments: 'query' is a required property"
    assert validator.check(tool({"type": "object"}), None) is None


def test_long_offending_values_are_shortened() -> None:
    message = ArgumentValidator().check(SEARCH, {"query": "x" * 5000, "count": "y" * 5000})
    assert message is not None and len(message) < 250


def test_an_invalid_schema_skips_validation_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    broken = tool({"type": "object", "properties": {"count": {"type": "integr"}}})
    validator = ArgumentValidator()
    with caplog.at_level(logging.WARNING, logger="mcpgw"):
        assert validator.check(broken, {"count": "x"}) is None
        assert validator.check(broken, {"count": "x"}) is None
        assert validator.check(tool(dict(broken.input_schema), name="other"), {}) is None  # same content
    assert len([r for r in caplog.records if "input schema" in r.getMessage()]) == 1


def test_an_unresolvable_ref_skips_validation() -> None:
    remote = tool({"type": "object", "properties": {"a": {"$ref": "https://example.invalid/a.json"}}})
    validator = ArgumentValidator()
    assert validator.check(remote, {"a": 1}) is None
    assert validator.check(remote, {"a": 1}) is None


def test_the_declared_draft_is_honoured() -> None:
    dependencies = {"type": "object", "dependencies": {"a": ["b"]}}  # a draft-07 keyword, gone in 2020-12
    draft7 = tool({"$schema": "http://json-schema.org/draft-07/schema#", **dependencies})
    default = tool(dependencies)
    validator = ArgumentValidator()
    assert validator.check(draft7, {"a": 1}) == "arguments: 'b' is a dependency of 'a'"
    assert validator.check(default, {"a": 1}) is None  # Draft 2020-12 ignores the unknown keyword


def test_validators_are_compiled_once_per_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.security.arguments as arguments

    compiled = []
    real = arguments._compile
    monkeypatch.setattr(arguments, "_compile", lambda t, s: compiled.append(t.name) or real(t, s))
    validator = ArgumentValidator(max_schemas=2)
    for _ in range(3):
        validator.check(SEARCH, {"query": "q"})
    validator.check(tool(dict(SEARCH.input_schema), name="relisted"), {"query": "q"})
    assert compiled == ["gh__search"]
    for i in range(3):
        validator.check(tool({"type": "object", "title": str(i)}), {})
    assert len(validator._by_identity) == 2 and len(validator._by_content) == 2


def test_arguments_are_checked_in_rust_and_the_reference_words_the_errors() -> None:
    """jsonschema-rs answers whether arguments fit; jsonschema says why, and decides a disagreement."""
    from jsonschema import Draft202012Validator

    from gateway.security.arguments import _Compiled

    validator = ArgumentValidator()
    assert validator.check(SEARCH, {"query": "q"}) is None
    assert validator._validator(SEARCH).fast is not None  # the schema compiled for the Rust side too

    class Says:
        def __init__(self, answer: object) -> None:
            self.answer = answer

        def is_valid(self, instance: object) -> bool:
            if isinstance(self.answer, Exception):
                raise self.answer
            return bool(self.answer)

    integer = Draft202012Validator({"type": "integer"})
    assert _Compiled(integer, Says(False)).is_valid(1)  # the reference overrules a wrong "no"
    assert _Compiled(integer, Says(ValueError("cannot take it"))).is_valid(1)  # and decides when it fails
    assert not _Compiled(integer, Says(False)).is_valid("x")
    assert _Compiled(integer, None).is_valid(1) and not _Compiled(integer, None).is_valid("x")


def test_a_remote_ref_is_never_fetched() -> None:
    """A tool's schema comes from an upstream: validating it must not make the gateway fetch URLs.
    (A fetch would connect, then wait for an answer that never comes: the default socket timeout
    bounds that wait, so a regression fails in seconds.)"""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5)
    try:
        _never_fetches_a_remote_ref()
    finally:
        socket.setdefaulttimeout(before)


def _never_fetches_a_remote_ref() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/a.json"
        remote = tool({"type": "object", "properties": {"a": {"$ref": url}}})
        validator = ArgumentValidator()
        assert validator.check(remote, {"a": 1}) is None  # unusable without the document: not validated
        assert validator._validator(remote) is None or validator._validator(remote).fast is None
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
