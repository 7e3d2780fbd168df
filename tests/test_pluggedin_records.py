"""The plugged.in source: App records -> servers, merging them with the local file, and one poll.

Records are remote input, so most tests here are about what must *not* get through (a header that
splits a request, a URL into the wrong scheme, a secret in a problem line) while the rest of the
list still does. The poll runs against the fake App over real HTTP.
"""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import anyio
import httpx2
import pytest
from fake_pluggedin import API_KEY, FakePluggedinApp, record, running_fake_app

from gateway.config.checks import run_checks
from gateway.config.model import (
    Expanded,
    GatewayConfig,
    GatewaySettings,
    NamespaceConfig,
    NamingConfig,
    PluggedinSource,
    Secret,
    ServerConfig,
    SourcePolicy,
)
from gateway.redact import Redactor
from gateway.sources.pluggedin import (
    RemoteCatalog,
    fetch_records,
    merge,
    remote_servers,
    servers_from_records,
)
from gateway.upstreams.transports import connection_fingerprint

pytestmark = pytest.mark.anyio
SECRET = "sk-live-very-secret-value-123"
WAIT = 10


def source(prefix: str = "slug", policy: SourcePolicy | None = None, **fields: Any) -> PluggedinSource:
    return PluggedinSource(type="pluggedin", api_key=Secret(API_KEY, "${PLUGGEDIN_API_KEY}"), prefix=prefix,  # type: ignore[arg-type]
                           policy=policy, **fields)


def read(records: Any, **fields: Any) -> RemoteCatalog:
    return servers_from_records(records, source(**fields), resolver=lambda host: ["93.184.216.34"])


def http_record(name: str, kind: str = "STREAMABLE_HTTP", **fields: Any) -> dict[str, Any]:
    return record(name, **({"type": kind, "command": None, "args": None, "env": None,
                            "url": "https://mcp.example.com/mcp"} | fields))


GITHUB = {  # the contract's example, field for field
    "uuid": "550e8400-e29b-41d4-a716-446655440000", "name": "GitHub", "description": None, "type": "STDIO",
    "command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"], "env": {"GITHUB_TOKEN": SECRET},
    "url": None, "streamableHTTPOptions": {"headers": {"Authorization": "Bearer x"}, "sessionId": "s-1"},
    "status": "ACTIVE", "slug": "github", "source": "PLUGGEDIN", "created_at": "2025-06-01T00:00:00Z",
    "profile_uuid": "00000000-0000-4000-8000-000000000001", "notes": None, "config": None, "external_id": None,
    "registry_data": {}, "repository_url": "https://github.com/x/y", "install_path": "/opt/x",
    "encryption_salt": "c2FsdA==",
    "customInstructions": [{"role": "user", "content": {"type": "text", "text": "Prefer small PRs."}}],
    "customInstructionsDescription": "Custom instructions for this server",
}


# --- the contract's record --------------------------------------------------------------------------

def test_the_contract_example_becomes_a_stdio_server() -> None:
    catalog = read([GITHUB])
    server = catalog.servers["github"]
    assert catalog.problems == ()
    assert (server.name, server.prefix, server.transport) == ("github", "github", "stdio")
    assert (server.command, server.args, server.url, dict(server.headers)) == (
        "npx", ("-y", "@modelcontextprotocol/server-github"), None, {})
    assert server.env["GITHUB_TOKEN"].reveal() == SECRET
    assert catalog.origins["github"].uuid == GITHUB["uuid"] and catalog.origins["github"].name == "GitHub"
    defaults = ServerConfig(name="github", transport="stdio", prefix="github")
    assert (server.timeout, server.retry, server.tools) == (defaults.timeout, defaults.retry, defaults.tools)


def test_secrets_are_masked_and_learned_by_the_redactor() -> None:
    server = read([GITHUB]).servers["github"]
    assert SECRET not in repr(server) and SECRET not in str(server.env)
    redact = Redactor()
    redact.learn(GatewayConfig(servers=MappingProxyType({"github": server})))
    assert redact(f"token={SECRET}") == "token=***"


def test_description_comes_from_the_record() -> None:
    assert read([record("Docs", description="Reads the docs")]).servers["docs"].description == "Reads the docs"


def test_a_missing_type_means_stdio_and_a_missing_status_means_active() -> None:
    old = {k: v for k, v in record("Old").items() if k not in ("type", "status")}
    assert read([old]).servers["old"].transport == "stdio"


def test_fields_that_do_not_define_the_connection_do_not_change_it() -> None:
    before = read([GITHUB]).servers["github"]
    after = read([GITHUB | {"notes": "edited", "created_at": "2026-01-01T00:00:00Z", "registry_data": {"x": 1}}])
    assert connection_fingerprint(after.servers["github"]) == connection_fingerprint(before)
    rotated = read([GITHUB | {"env": {"GITHUB_TOKEN": SECRET + "-rotated"}}]).servers["github"]
    assert connection_fingerprint(rotated) != connection_fingerprint(before)


# --- transports and headers -------------------------------------------------------------------------

def test_request_init_headers_win_over_headers() -> None:
    options = {"headers": {"Authorization": "Bearer old", "X-Team": "a"},
               "requestInit": {"headers": {"authorization": "Bearer fresh"}}}
    server = read([http_record("Linear", streamableHTTPOptions=options)]).servers["linear"]
    assert server.transport == "streamable-http" and server.url == "https://mcp.example.com/mcp"
    assert {k: v.reveal() for k, v in server.headers.items()} == {"authorization": "Bearer fresh", "X-Team": "a"}
    assert all(isinstance(v, Secret) for v in server.headers.values())


def test_sse_servers_get_the_headers_too() -> None:
    options = {"headers": {"X-Api-Key": SECRET}, "requestInit": {"headers": {"X-Extra": "1"}}}
    server = read([http_record("Events", kind="SSE", streamableHTTPOptions=options)]).servers["events"]
    assert server.transport == "sse"
    assert {k: v.reveal() for k, v in server.headers.items()} == {"X-Api-Key": SECRET, "X-Extra": "1"}


def test_request_init_headers_as_pairs_are_accepted() -> None:
    options = {"requestInit": {"headers": [["Authorization", "Bearer t"]]}}
    server = read([http_record("Pairs", streamableHTTPOptions=options)]).servers["pairs"]
    assert server.headers["Authorization"].reveal() == "Bearer t"


def test_legacy_env_transport_and_options_are_honoured_and_removed() -> None:
    legacy_env = {"__transport": "streamable_http", "API_MODE": "x",
                  "__streamableHTTPOptions": json.dumps({"headers": {"Authorization": f"Bearer {SECRET}"}})}
    old = http_record("Legacy", env=legacy_env)
    del old["type"]
    server = read([old]).servers["legacy"]
    assert server.transport == "streamable-http"
    assert server.headers["Authorization"].reveal() == f"Bearer {SECRET}"
    assert dict(server.env) == {}


def test_legacy_keys_never_reach_a_stdio_servers_env() -> None:
    env = {"__transport": "stdio", "__streamableHTTPOptions": "{}", "TOKEN": SECRET}
    server = read([record("Tool", env=env)]).servers["tool"]
    assert list(server.env) == ["TOKEN"]


def test_type_wins_over_the_legacy_transport() -> None:
    server = read([http_record("Both", kind="SSE", env={"__transport": "streamable_http"})]).servers["both"]
    assert server.transport == "sse"


def test_dedicated_options_win_over_legacy_ones() -> None:
    env = {"__streamableHTTPOptions": json.dumps({"headers": {"X-Old": "1"}})}
    server = read([http_record("Twice", env=env, streamableHTTPOptions={"headers": {"X-New": "1"}})]).servers["twice"]
    assert list(server.headers) == ["X-New"]


def test_a_url_carrying_credentials_is_masked_where_it_is_shown() -> None:
    url = f"https://user:{SECRET}@mcp.example.com/mcp?api_key={SECRET}"
    server = read([http_record("Keyed", url=url)]).servers["keyed"]
    assert server.url == url and isinstance(server.url, Expanded)
    assert SECRET not in repr(server)
    assert repr(server.url) == "'https://***@mcp.example.com/mcp?***'"


# --- names ------------------------------------------------------------------------------------------

def test_slug_prefix_falls_back_to_the_uuid() -> None:
    catalog = read([record("Has Slug", slug="has-slug"), record("No Slug", slug=None)])
    no_slug = record("No Slug", slug=None)["uuid"]
    assert set(catalog.servers) == {"has-slug", no_slug}
    assert catalog.servers[no_slug].prefix == no_slug


def test_uuid_prefix() -> None:
    one = record("One")
    assert list(read([one], prefix="uuid").servers) == [one["uuid"]]


@pytest.mark.parametrize(("display", "expected"), [
    ("GitHub", "github"), ("GitHub Tools!", "github_tools"), ("a  b", "a_b"), ("  Sp@ce  ", "sp_ce"),
    ("my-server_2", "my-server_2"), ("Ünïcode Server", "n_code_server"),
])
def test_name_prefix_makes_a_valid_server_name(display: str, expected: str) -> None:
    assert list(read([record(display, slug=None)], prefix="name").servers) == [expected]


def test_a_name_without_letters_or_digits_is_skipped() -> None:
    catalog = read([record("!!!", slug=None), record("Fine")], prefix="name")
    assert list(catalog.servers) == ["fine"]
    assert "record 0" in catalog.problems[0] and "cannot be made a server name" in catalog.problems[0]


def test_long_names_are_shortened_distinctly() -> None:
    long_a, long_b = "a" * 45 + "-bbbb", "a" * 45 + "-cccc"
    catalog = read([record("A", slug=long_a), record("B", slug=long_b)])
    names = list(catalog.servers)
    assert len(names) == 2 and len(set(names)) == 2 and all(len(n) == 48 and n.startswith("a" * 39) for n in names)


def test_duplicate_names_keep_the_first_record() -> None:
    first, second = record("GitHub", command="first"), record("github", command="second")
    catalog = read([first, second], prefix="name")
    assert catalog.servers["github"].command == "first"
    assert len(catalog.problems) == 1
    assert "record 1" in catalog.problems[0] and "taken by an earlier record" in catalog.problems[0]


def test_inactive_records_are_skipped() -> None:
    catalog = read([record("On"), record("Off", status="INACTIVE")])
    assert list(catalog.servers) == ["on"]
    assert catalog.problems == ("pluggedin: record 1 (slug `off`): its status is `INACTIVE`, not ACTIVE; skipped",)


# --- malformed records ------------------------------------------------------------------------------

MALFORMED: dict[str, Any] = {
    "not an object": "github",
    "a list": ["uuid"],
    "null": None,
    "no uuid": record("X") | {"uuid": None},
    "name not a string": record("X") | {"name": 42},
    "slug not a string": record("X") | {"slug": 7},
    "unknown type": record("X") | {"type": "WEBSOCKET"},
    "legacy transport unknown": {k: v for k, v in record("X", env={"__transport": "ws"}).items() if k != "type"},
    "no command": record("X") | {"command": None},
    "empty command": record("X") | {"command": "  "},
    "NUL in command": record("X") | {"command": "npx\0rm"},
    "args not a list": record("X") | {"args": "-y foo"},
    "args not strings": record("X") | {"args": ["-y", 3]},
    "NUL in an argument": record("X") | {"args": ["a\0b"]},
    "env not an object": record("X") | {"env": ["TOKEN"]},
    "env value not a string": record("X") | {"env": {"PORT": 8080}},
    "env name with =": record("X") | {"env": {"A=B": "x"}},
    "NUL in an env value": record("X") | {"env": {"TOKEN": SECRET + "\0"}},
    "no url": http_record("X") | {"url": None},
    "ftp url": http_record("X") | {"url": f"ftp://mcp.example.com/{SECRET}"},
    "file url": http_record("X", kind="SSE") | {"url": "file:///etc/passwd"},
    "url without host": http_record("X") | {"url": "https:///mcp"},
    "url with a space": http_record("X") | {"url": "https://mcp.example.com/a b"},
    "url with a bad port": http_record("X") | {"url": "https://mcp.example.com:99999/mcp"},
    "options not an object": http_record("X") | {"streamableHTTPOptions": "headers"},
    "headers not an object": http_record("X") | {"streamableHTTPOptions": {"headers": "Authorization"}},
    "requestInit not an object": http_record("X") | {"streamableHTTPOptions": {"requestInit": 1}},
    "header name not a token": http_record("X") | {"streamableHTTPOptions": {"headers": {"Bad Header": SECRET}}},
    "CRLF in a header value": http_record("X") | {
        "streamableHTTPOptions": {"headers": {"Authorization": f"Bearer {SECRET}\r\nX-Injected: 1"}}},
    "LF in a requestInit header": http_record("X") | {
        "streamableHTTPOptions": {"requestInit": {"headers": {"Authorization": f"{SECRET}\n"}}}},
    "NUL in a header value": http_record("X", kind="SSE") | {"streamableHTTPOptions": {"headers": {"X-K": f"{SECRET}\0"}}},
    "header value not a string": http_record("X") | {"streamableHTTPOptions": {"headers": {"X-K": 1}}},
    "Host header": http_record("X") | {"streamableHTTPOptions": {"headers": {"Host": "internal"}}},
    "Content-Length header": http_record("X") | {"streamableHTTPOptions": {"headers": {"content-length": "0"}}},
    "Mcp-Session-Id header": http_record("X") | {"streamableHTTPOptions": {"requestInit": {"headers": {"Mcp-Session-Id": "s"}}}},
    "Transfer-Encoding header": http_record("X", kind="SSE") | {"streamableHTTPOptions": {"headers": {"Transfer-Encoding": "chunked"}}},
    "huge header": http_record("X") | {"streamableHTTPOptions": {"headers": {"X-K": "k" * 10_000}}},
    "legacy options not JSON": http_record("X", env={"__streamableHTTPOptions": f"{{{SECRET}"}),
    "status not a string": record("X") | {"status": {"v": 1}},
}


@pytest.mark.parametrize("bad", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_record_is_skipped_and_the_rest_are_used(bad: Any) -> None:
    catalog = read([record("Before"), bad, record("After")])
    assert list(catalog.servers) == ["before", "after"]
    assert len(catalog.problems) == 1
    problem = catalog.problems[0]
    assert problem.startswith("pluggedin: record 1") and problem.endswith("skipped")
    assert SECRET not in problem and "\n" not in problem and "\r" not in problem


def test_problems_name_the_record_by_slug_then_uuid_then_name() -> None:
    bad = {"command": None}
    catalog = read([record("A") | bad, record("B", slug=None) | bad, record("C", slug=None) | bad | {"uuid": 5}])
    assert [p.split(":")[1].strip() for p in catalog.problems] == [
        "record 0 (slug `a`)", f"record 1 (uuid `{record('B')['uuid']}`)", "record 2 (name `C`)"]


def test_an_answer_that_is_not_a_list_gives_no_servers() -> None:
    catalog = read({"error": "nope"})
    assert dict(catalog.servers) == {} and "not a list" in catalog.problems[0]


def test_a_wrong_description_is_dropped_but_the_server_kept() -> None:
    catalog = read([record("Doc", description={"en": "x"})])
    assert catalog.servers["doc"].description is None
    assert catalog.problems == ("pluggedin: record 0 (slug `doc`): `description` is not a string; ignored",)


def test_remote_servers_pass_the_checks_local_servers_pass() -> None:
    options = {"headers": {"Authorization": "Bearer a"}, "requestInit": {"headers": {"X-Trace": "1"}}}
    catalog = read([GITHUB, http_record("Web", streamableHTTPOptions=options), http_record("Events", kind="SSE")])
    merged, _ = merge(GatewayConfig(sources=(source(),)), {"pluggedin": catalog})
    assert [f for f in run_checks(merged) if f.severity == "error"] == []


# --- policy -----------------------------------------------------------------------------------------

def test_the_policy_refuses_commands_and_private_urls() -> None:
    policy = SourcePolicy(allowed_commands=("npx",), block_private_networks=True)
    records = [record("Ok"), record("Shell", command="/bin/sh"), http_record("Public"),
               http_record("Meta", url="http://169.254.169.254/latest"), http_record("Lan", url="http://db.internal/mcp")]
    resolver = {"mcp.example.com": ["93.184.216.34"], "db.internal": ["10.0.0.5"]}
    catalog = servers_from_records(records, source(policy=policy), resolver=lambda host: resolver.get(host, []))
    assert list(catalog.servers) == ["ok", "public"]
    assert len(catalog.problems) == 3
    assert "`sh` is not among the policy's allowed_commands" in catalog.problems[0]
    assert "link-local" in catalog.problems[1] and "a private address" in catalog.problems[2]
    assert all("refused by the source's policy" in p and p.endswith("skipped") for p in catalog.problems)


def test_without_a_policy_nothing_is_refused() -> None:
    catalog = read([record("Shell", command="/bin/sh"), http_record("Lan", url="http://10.0.0.5/mcp")])
    assert list(catalog.servers) == ["shell", "lan"]


# --- custom instructions ----------------------------------------------------------------------------

def test_custom_instructions_become_prompt_messages() -> None:
    messages = [
        {"role": "user", "content": {"type": "text", "text": "object"}},
        {"role": "assistant", "content": "string"},
        {"role": "user", "content": [{"type": "text", "text": "one"}, "two",
                                     {"type": "image", "data": "aGk=", "mimeType": "image/png"}]},
    ]
    catalog = read([record("Guide", customInstructions=messages, customInstructionsDescription="How to use it")])
    found = catalog.instructions["guide"]
    assert found.description == "How to use it" and found.name == "system_context"
    assert list(found.messages) == [
        {"role": "user", "content": {"type": "text", "text": "object"}},
        {"role": "assistant", "content": {"type": "text", "text": "string"}},
        {"role": "user", "content": {"type": "text", "text": "one"}},
        {"role": "user", "content": {"type": "text", "text": "two"}},
        {"role": "user", "content": {"type": "image", "data": "aGk=", "mimeType": "image/png"}},
    ]


def test_a_plain_string_instruction_is_one_user_message() -> None:
    found = read([record("Plain", customInstructions="Be brief.")]).instructions["plain"]
    assert found.messages == ({"role": "user", "content": {"type": "text", "text": "Be brief."}},)


def test_unreadable_instructions_are_dropped_but_the_server_kept() -> None:
    catalog = read([record("Odd", customInstructions=[{"role": "system", "content": "x"}]),
                    record("Odder", customInstructions=[{"role": "user", "content": {"type": "video"}}])])
    assert list(catalog.servers) == ["odd", "odder"] and dict(catalog.instructions) == {}
    assert "role `system`" in catalog.problems[0] and catalog.problems[1].endswith("ignored")


def test_no_instructions_no_entry() -> None:
    assert dict(read([record("None")]).instructions) == {}


# --- merge ------------------------------------------------------------------------------------------

def local(*names: str, sources: tuple[PluggedinSource, ...] = (), **prefixes: str) -> GatewayConfig:
    servers = {n: ServerConfig(name=n, transport="stdio", prefix=prefixes.get(n, n), command="local") for n in names}
    return GatewayConfig(servers=MappingProxyType(servers), sources=sources,
                         namespaces=MappingProxyType({"team": NamespaceConfig("team", tuple(names))}))


def remote(*names: str, command: str = "remote") -> dict[str, ServerConfig]:
    return {n: ServerConfig(name=n, transport="stdio", prefix=n, command=command) for n in names}


def test_remote_servers_are_added_to_the_root_only() -> None:
    config = local("files", sources=(source(),))
    merged, problems = merge(config, {"pluggedin": remote("github")})
    assert problems == [] and list(merged.servers) == ["files", "github"]
    assert merged.namespaces == config.namespaces and merged.sources == config.sources


@pytest.mark.parametrize(("mode", "command", "says"), [
    ("prefer_local", "local", "the local one is used (on_conflict: prefer_local)"),
    ("prefer_remote", "remote", "the source's one is used (on_conflict: prefer_remote)"),
    ("reject", None, "neither is used (on_conflict: reject)"),
])
def test_a_name_also_declared_locally_follows_on_conflict(mode: str, command: str | None, says: str) -> None:
    merged, problems = merge(local("github", "files", sources=(source(on_conflict=mode),)),
                             {"pluggedin": remote("github", "docs")})
    assert (merged.servers["github"].command if "github" in merged.servers else None) == command
    assert "docs" in merged.servers and merged.servers["files"].command == "local"
    assert problems == [f"pluggedin: server `github` is also declared locally; {says}"]


def test_between_two_sources_the_first_declared_wins() -> None:
    first, second = source(name="team"), source(name="personal", on_conflict="prefer_remote")
    merged, problems = merge(local(sources=(first, second)),
                             {"personal": remote("github", command="personal"), "team": remote("github", command="team")})
    assert merged.servers["github"].command == "team"
    assert problems == ["personal: server `github` is also offered by source `team`, which is declared first; skipped"]


def test_a_name_the_first_source_rejected_is_not_taken_by_the_second() -> None:
    first, second = source(name="team", on_conflict="reject"), source(name="personal", on_conflict="prefer_remote")
    merged, problems = merge(local("github", sources=(first, second)),
                             {"team": remote("github"), "personal": remote("github")})
    assert "github" not in merged.servers and len(problems) == 2


def test_a_remote_server_cannot_take_a_prefix_a_local_server_uses() -> None:
    merged, problems = merge(local("gh", sources=(source(),), gh="github"), {"pluggedin": remote("github")})
    assert list(merged.servers) == ["gh"]
    assert problems == ["pluggedin: server `github`: its prefix `github` is already used by server `gh`; skipped"]


def test_a_remote_prefix_containing_the_separator_is_skipped() -> None:
    config = replace(local(sources=(source(),)), gateway=GatewaySettings(naming=NamingConfig(separator="-")))
    merged, problems = merge(config, {"pluggedin": remote("550e8400-e29b", "plain")})
    assert list(merged.servers) == ["plain"] and "separator `-`" in problems[0]


def test_an_undeclared_source_is_ignored() -> None:
    merged, problems = merge(local("files"), {"ghost": remote("github")})
    assert list(merged.servers) == ["files"] and "ghost: not a source declared" in problems[0]


def test_remote_servers_maps_served_servers_to_their_source() -> None:
    config = local("github", sources=(source(),))
    catalog = read([GITHUB, record("Docs")])
    merged, _ = merge(config, {"pluggedin": catalog})
    owners = remote_servers(merged, {"pluggedin": catalog})
    assert owners == {"docs": "pluggedin"}
    assert "github" in catalog.instructions and "github" not in owners


# --- fetching from the App --------------------------------------------------------------------------

async def fetch(app: FakePluggedinApp, key: str = API_KEY, timeout: float = 5.0) -> Any:
    src = replace(source(), base_url=app.base_url, api_key=Secret(key), timeout=timeout)
    async with httpx2.AsyncClient() as client:
        with anyio.fail_after(WAIT):
            return await fetch_records(src, client)


async def test_fetch_returns_the_records_and_sees_changes_between_polls() -> None:
    async with running_fake_app([GITHUB]) as app:
        first = await fetch(app)
        app.records.append(record("Docs"))
        app.records[0] = GITHUB | {"slug": "gh"}
        second = await fetch(app)
    assert first.ok and [r["slug"] for r in first.records] == ["github"]
    assert second.ok and [r["slug"] for r in second.records] == ["gh", "docs"]
    assert app.server_polls == 2 and all(r.bearer for r in app.requests)


async def test_an_unknown_key_is_unauthorized_with_the_apps_message() -> None:
    async with running_fake_app() as app:
        outcome = await fetch(app, key="pg_in_" + "f" * 64)
    assert (outcome.kind, outcome.status, outcome.message) == ("unauthorized", 401, "Invalid API key")
    assert outcome.unauthorized and outcome.records is None


async def test_an_empty_key_is_unauthorized_without_asking() -> None:
    async with running_fake_app() as app:
        outcome = await fetch(app, key="")
    assert (outcome.kind, outcome.status) == ("unauthorized", None) and app.requests == []


async def test_the_fake_app_wants_a_bearer_header() -> None:
    async with running_fake_app() as app, httpx2.AsyncClient(base_url=app.base_url) as client:
        with anyio.fail_after(WAIT):
            bare = await client.get("/api/mcp-servers")
            basic = await client.get("/api/mcp-servers", headers={"Authorization": f"Basic {API_KEY}"})
    for answer in (bare, basic):
        assert (answer.status_code, answer.json()) == (401, {"error": "Authorization header with Bearer token is required"})
    assert [(r.has_authorization, r.bearer) for r in app.requests] == [(False, False), (True, False)]


async def test_a_key_without_profile_is_unauthorized() -> None:
    async with running_fake_app() as app:
        app.keys_without_profile.add(API_KEY)
        outcome = await fetch(app)
    assert (outcome.kind, outcome.message) == ("unauthorized", "No active profile found for this API key")


async def test_a_500_is_unavailable() -> None:
    async with running_fake_app([GITHUB]) as app:
        app.fail = True
        outcome = await fetch(app)
    assert (outcome.kind, outcome.status, outcome.records) == ("unavailable", 500, None)
    assert outcome.unavailable and outcome.reason == "HTTP 500: Failed to fetch active MCP servers"


async def test_a_slow_app_is_unavailable_after_the_timeout() -> None:
    async with running_fake_app([GITHUB]) as app:
        app.slow()
        outcome = await fetch(app, timeout=1.5)  # long enough for the request to arrive on a loaded machine
        assert app.held.is_set()
        app.release()
        after = await fetch(app)
    assert outcome.kind == "unavailable" and "no answer" in outcome.message and "1.5 s" in outcome.message
    assert after.ok


@pytest.mark.parametrize(("body", "raw", "says"), [
    ({"servers": []}, None, "not a list of servers"),
    (None, b"<html>Bad gateway</html>", "not JSON"),
    (None, b'[{"uuid": ', "not JSON"),
])
async def test_an_answer_that_is_not_an_array_is_unavailable(body: Any, raw: bytes | None, says: str) -> None:
    async with running_fake_app() as app:
        app.body, app.raw_body = body, raw
        outcome = await fetch(app)
    assert outcome.kind == "unavailable" and says in outcome.message


async def test_malformed_records_still_arrive_for_the_reader_to_sort() -> None:
    async with running_fake_app([GITHUB, "junk", {"uuid": 1}]) as app:
        outcome = await fetch(app)
    catalog = read(outcome.records)
    assert outcome.ok and list(catalog.servers) == ["github"] and len(catalog.problems) == 2


async def test_a_refused_connection_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    src = replace(source(), base_url=f"http://127.0.0.1:{port}", timeout=5.0)
    async with httpx2.AsyncClient() as client:
        with anyio.fail_after(WAIT):
            outcome = await fetch_records(src, client)
    assert outcome.kind == "unavailable" and "cannot reach" in outcome.message


@pytest.mark.parametrize(("status", "kind"), [(401, "unauthorized"), (403, "unauthorized"), (502, "unavailable"),
                                               (302, "unavailable")])
async def test_the_key_never_appears_in_a_message(status: int, kind: str) -> None:
    def echo(request: httpx2.Request) -> httpx2.Response:
        key = request.headers["authorization"].removeprefix("Bearer ")
        return httpx2.Response(status, json={"error": f"bad key {key}\r\nforged line"},
                               headers={"location": f"https://x.example/?k={key}"})

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(echo)) as client:
        outcome = await fetch_records(source(), client)
    assert outcome.kind == kind and API_KEY not in outcome.message and "***" in outcome.message
    assert "\n" not in outcome.message


async def test_the_request_is_a_bearer_get_of_the_servers_path() -> None:
    seen: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=[])

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as client:
        outcome = await fetch_records(replace(source(), base_url="https://app.example/"), client)
    assert outcome.ok and outcome.records == []
    assert (seen[0].method, str(seen[0].url)) == ("GET", "https://app.example/api/mcp-servers")
    assert seen[0].headers["authorization"] == f"Bearer {API_KEY}"


# --- the fake App's activity log --------------------------------------------------------------------

async def test_the_fake_app_records_valid_activity_and_refuses_bad_bodies() -> None:
    good = {"action": "tool_call", "serverName": "GitHub", "serverUuid": GITHUB["uuid"], "itemName": "search",
            "success": True, "executionTime": 12}
    async with running_fake_app([GITHUB]) as app, httpx2.AsyncClient(base_url=app.base_url) as client:
        with anyio.fail_after(WAIT):
            auth = {"Authorization": f"Bearer {API_KEY}"}
            ok = await client.post("/api/notifications/mcp-activity", json=good, headers=auth)
            bad = await client.post("/api/notifications/mcp-activity", json={"action": "sing", "success": "yes"}, headers=auth)
            unknown = await client.post("/api/notifications/mcp-activity", headers=auth,
                                        json=good | {"serverUuid": "00000000-0000-4000-8000-00000000dead"})
            anonymous = await client.post("/api/notifications/mcp-activity", json=good)
    assert (ok.status_code, ok.json()) == (200, {"success": True}) and app.activity == [good]
    assert bad.status_code == 400 and bad.json()["error"] == "Invalid request data"
    assert {tuple(d["path"]) for d in bad.json()["details"]} == {("action",), ("serverName",), ("success",)}
    assert unknown.status_code == 404
    assert (anonymous.status_code, anonymous.json()) == (401, {"error": "Authorization header with Bearer token is required"})
    assert [r.has_authorization for r in app.requests] == [True, True, True, False]
