"""The routing table as clients see it: which names are listed, where each one goes, and what
happens when servers disagree. Configs are real ones, loaded through the config pipeline."""

from pathlib import Path
from textwrap import dedent

import mcp_types as types
import pytest

from gateway.config.loader import load_text
from gateway.routing import Catalog, Collision, Route, RoutingTable, build_routing_table


def load(yaml_text: str):
    result = load_text(dedent(yaml_text), "t.yaml", {}, Path("."))
    assert result.config is not None, result.problems
    return result.config


def build(yaml_text: str, catalogs: dict) -> RoutingTable:
    config = load(yaml_text)
    return build_routing_table(list(config.servers.values()), config.gateway.naming, catalogs)


def tool(name: str, **extra) -> types.Tool:
    return types.Tool(name=name, input_schema={"type": "object"}, **extra)


def prompt(name: str) -> types.Prompt:
    return types.Prompt(name=name)


def resource(uri: str) -> types.Resource:
    return types.Resource(uri=uri, name=uri.rsplit("/", 1)[-1])


def template(uri_template: str) -> types.ResourceTemplate:
    return types.ResourceTemplate(uri_template=uri_template, name="t")


def listed_tools(table: RoutingTable) -> list[str]:
    return [t.name for t in table.list_tools.tools]


TWO_SERVERS = """
    version: 1
    servers:
      github: {command: gh-mcp, prefix: gh}
      time: {command: time-mcp}
"""


# --- names and routes ----------------------------------------------------------------------------

def test_tools_are_prefixed_and_routed_back_to_their_server():
    table = build(TWO_SERVERS, {
        "github": Catalog(tools=(tool("search_issues"), tool("create_issue"))),
        "time": Catalog(tools=(tool("get_current_time"),)),
    })
    assert listed_tools(table) == ["gh__search_issues", "gh__create_issue", "time__get_current_time"]
    assert table.tools["gh__search_issues"] == Route("github", "search_issues")
    assert table.tools["time__get_current_time"] == Route("time", "get_current_time")
    assert table.collisions == () and table.renamed == ()


def test_empty_prefix_passes_names_through():
    table = build("""
        version: 1
        servers:
          time: {command: time-mcp, prefix: ""}
    """, {"time": Catalog(tools=(tool("get_current_time"),), prompts=(prompt("tz"),))})
    assert listed_tools(table) == ["get_current_time"]
    assert table.tools["get_current_time"] == Route("time", "get_current_time")
    assert table.prompts["tz"] == Route("time", "tz")
    assert table.prefixes == {}


def test_allow_deny_and_rename():
    table = build("""
        version: 1
        servers:
          github:
            command: gh-mcp
            prefix: gh
            tools:
              allow: ["search_*", "get_*", "delete_*"]
              deny: ["delete_*"]
              rename: {search_issues: find_issues}
    """, {"github": Catalog(tools=(tool("search_issues"), tool("get_me"), tool("delete_repo"), tool("push")))})
    assert listed_tools(table) == ["gh__find_issues", "gh__get_me"]
    assert table.tools["gh__find_issues"] == Route("github", "search_issues")  # the upstream's own name
    assert "gh__search_issues" not in table.tools
    assert "gh__delete_repo" not in table.tools and "gh__push" not in table.tools
    assert table.renamed == ()  # a rename the user asked for is not a "renamed" surprise


def test_prompt_filters_and_rename():
    table = build("""
        version: 1
        servers:
          docs:
            command: docs-mcp
            prompts: {deny: ["internal_*"], rename: {summarize: tldr}}
    """, {"docs": Catalog(prompts=(prompt("summarize"), prompt("internal_debug"), prompt("explain")))})
    assert [p.name for p in table.list_prompts.prompts] == ["docs__tldr", "docs__explain"]
    assert table.prompts["docs__tldr"] == Route("docs", "summarize")


def test_metadata_crosses_unchanged():
    original = tool(
        "search",
        title="Search issues",
        description="Find issues",
        annotations=types.ToolAnnotations(read_only_hint=True, open_world_hint=False),
        output_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
        icons=[types.Icon(src="https://example.com/i.png", mime_type="image/png")],
        meta={"vendor/x": 1},
    )
    table = build(TWO_SERVERS, {"github": Catalog(tools=(original,))})
    [exposed] = table.list_tools.tools
    assert exposed.name == "gh__search"
    assert exposed.model_dump(exclude={"name"}) == original.model_dump(exclude={"name"})
    wire = exposed.model_dump(by_alias=True, exclude_none=True)
    assert wire["_meta"] == {"vendor/x": 1}
    assert wire["annotations"] == {"readOnlyHint": True, "openWorldHint": False}
    assert original.name == "search"  # the catalog is not modified


def test_long_and_invalid_names_are_made_valid_routed_and_reported():
    long_name = "x" * 80
    table = build("""
        version: 1
        gateway: {naming: {max_tool_name_length: 40}}
        servers:
          files: {command: files-mcp}
    """, {"files": Catalog(tools=(tool(long_name), tool("read.file"), tool("read_file")),
                           prompts=(prompt("p/1"),))})
    names = listed_tools(table)
    assert len(names) == 3 and len(set(names)) == 3
    assert all(len(n) <= 40 for n in names)
    assert names[2] == "files__read_file"
    shortened, sanitized = names[0], names[1]
    assert len(shortened) == 40 and shortened.startswith("files__xxx")
    assert table.tools[shortened] == Route("files", long_name)
    assert table.tools[sanitized] == Route("files", "read.file")
    [prompt_name] = table.prompts
    assert set(table.renamed) == {("files", long_name, shortened), ("files", "read.file", sanitized),
                                  ("files", "p/1", prompt_name)}


# --- collisions ----------------------------------------------------------------------------------

COLLIDING = """
    version: 1
    gateway: {naming: {on_collision: %s}}
    servers:
      alpha: {command: a-mcp, prefix: ""}
      beta: {command: b-mcp, prefix: ""}
      gamma: {command: c-mcp, prefix: g}
"""
COLLIDING_CATALOGS = {
    "alpha": Catalog(tools=(tool("search", title="alpha's"), tool("only_alpha")),
                     resources=(resource("file:///shared.txt"),),
                     resource_templates=(template("file:///{+path}"),)),
    "beta": Catalog(tools=(tool("search", title="beta's"), tool("only_beta")),
                    prompts=(prompt("p"), prompt("p")),
                    resources=(resource("file:///shared.txt"),),
                    resource_templates=(template("file:///{+path}"),)),
    "gamma": Catalog(tools=(tool("search"),)),
}


def test_collision_first_keeps_the_server_declared_first():
    table = build(COLLIDING % "first", COLLIDING_CATALOGS)
    assert listed_tools(table) == ["search", "only_alpha", "only_beta", "g__search"]
    assert table.list_tools.tools[0].title == "alpha's"
    assert table.tools["search"] == Route("alpha", "search")
    assert table.resolve_resource("file:///shared.txt") == Route("alpha", "file:///shared.txt")
    assert table.resolve_resource("file:///other.txt") == Route("alpha", "file:///{+path}")
    assert [p.name for p in table.list_prompts.prompts] == ["p"]
    assert table.collisions == (
        Collision("tool", "search", ("alpha", "beta"), "alpha"),
        Collision("prompt", "p", ("beta", "beta"), "beta"),  # one server listing a name twice
        Collision("resource", "file:///shared.txt", ("alpha", "beta"), "alpha"),
        Collision("resource template", "file:///{+path}", ("alpha", "beta"), "alpha"),
    )
    assert len(set(table.collisions)) == 4  # hashable, so the runtime can report each one once


def test_collision_reject_exposes_none_of_them():
    table = build(COLLIDING % "reject", COLLIDING_CATALOGS)
    assert listed_tools(table) == ["only_alpha", "only_beta", "g__search"]
    assert "search" not in table.tools
    assert table.list_prompts.prompts == [] and table.prompts == {}
    assert table.list_resources.resources == [] and table.list_resource_templates.resource_templates == []
    assert table.resolve_resource("file:///shared.txt") is None
    assert [(c.kind, c.name, c.kept) for c in table.collisions] == [
        ("tool", "search", None), ("prompt", "p", None),
        ("resource", "file:///shared.txt", None), ("resource template", "file:///{+path}", None)]


def test_rename_onto_an_existing_name_is_a_collision():
    table = build("""
        version: 1
        servers:
          s: {command: s-mcp, tools: {rename: {old: new}}}
    """, {"s": Catalog(tools=(tool("old"), tool("new")))})
    assert table.tools == {"s__new": Route("s", "old")}
    assert table.collisions == (Collision("tool", "s__new", ("s", "s"), "s"),)


# --- resources -----------------------------------------------------------------------------------

RESOURCES = """
    version: 1
    servers:
      fixture: {command: f-mcp, resources: {deny: ["fixture://secret/*"]}}
      docs: {command: d-mcp}
"""


def resource_table() -> RoutingTable:
    return build(RESOURCES, {
        "fixture": Catalog(resources=(resource("fixture://items/static"), resource("fixture://secret/key")),
                           resource_templates=(template("fixture://items/{id}"), template("fixture://secret/{k}"))),
        "docs": Catalog(resources=(resource("docs://readme"),),
                        resource_templates=(template("docs://pages/{+path}"),)),
    })


def test_resources_keep_their_uris():
    table = resource_table()
    assert [r.uri for r in table.list_resources.resources] == ["fixture://items/static", "docs://readme"]
    assert [t.uri_template for t in table.list_resource_templates.resource_templates] == [
        "fixture://items/{id}", "docs://pages/{+path}"]
    assert table.templates == (("fixture://items/{id}", Route("fixture", "fixture://items/{id}")),
                               ("docs://pages/{+path}", Route("docs", "docs://pages/{+path}")))


def test_resolve_exact_uri():
    table = resource_table()
    assert table.resolve_resource("docs://readme") == Route("docs", "docs://readme")
    assert table.resolve_resource("fixture://items/static") == Route("fixture", "fixture://items/static")


def test_resolve_via_template():
    table = resource_table()
    assert table.resolve_resource("fixture://items/42") == Route("fixture", "fixture://items/{id}")
    assert table.resolve_resource("fixture://items/4/2") is None  # {id} is one path segment
    assert table.resolve_resource("docs://pages/a/b/c.md") == Route("docs", "docs://pages/{+path}")
    assert table.resolve_resource("nope://x") is None


def test_denied_resources_and_templates_are_not_routed():
    table = resource_table()
    assert table.resolve_resource("fixture://secret/key") is None
    assert table.template_route("fixture://secret/{k}") is None


def test_template_route_for_completions():
    table = resource_table()
    assert table.template_route("fixture://items/{id}") == Route("fixture", "fixture://items/{id}")
    assert table.template_route("fixture://items/42") is None


def test_template_the_sdk_cannot_match_is_listed_but_never_matches():
    table = build(RESOURCES, {"docs": Catalog(resource_templates=(template("x://{a}{b}"),))})
    assert table.template_route("x://{a}{b}") == Route("docs", "x://{a}{b}")
    assert table.resolve_resource("x://ab") is None


# --- servers that are down or disabled -----------------------------------------------------------

def test_server_without_catalog_keeps_its_prefix():
    table = build(TWO_SERVERS, {"time": Catalog(tools=(tool("now"),))})
    assert listed_tools(table) == ["time__now"]
    assert table.prefixes == {"gh__": "github", "time__": "time"}
    assert table.server_for_unknown("gh__search_issues") == "github"
    assert table.server_for_unknown("unknown_tool") is None


def test_server_for_unknown_picks_the_longest_prefix():
    # The separator may not occur in a prefix, but one prefix+separator can still start another:
    # "db__" starts "db___" (prefix "db_"). The longer, more specific one wins.
    table = build("""
        version: 1
        servers:
          db: {command: a}
          db_: {command: b}
          dbx: {command: c}
    """, {})
    assert table.prefixes == {"db__": "db", "db___": "db_", "dbx__": "dbx"}
    assert table.server_for_unknown("db___query") == "db_"
    assert table.server_for_unknown("db__query") == "db"
    assert table.server_for_unknown("dbx__query") == "dbx"


def test_disabled_servers_are_absent():
    table = build("""
        version: 1
        servers:
          on: {command: a}
          off: {command: b, enabled: false}
    """, {"on": Catalog(tools=(tool("t"),)), "off": Catalog(tools=(tool("t"),), resources=(resource("x://r"),))})
    assert listed_tools(table) == ["on__t"]
    assert "off__" not in table.prefixes
    assert table.resolve_resource("x://r") is None
    assert table.server_for_unknown("off__t") is None


# --- the empty table and immutability ------------------------------------------------------------

def test_empty_table():
    table = RoutingTable.empty()
    assert table.list_tools.tools == [] and table.list_prompts.prompts == []
    assert table.list_resources.resources == [] and table.list_resource_templates.resource_templates == []
    assert table.resolve_resource("x://y") is None
    assert table.server_for_unknown("a__b") is None
    assert table.template_route("x://{y}") is None


def test_table_is_immutable():
    table = build(TWO_SERVERS, {"time": Catalog(tools=(tool("now"),))})
    with pytest.raises(TypeError):
        table.tools["time__other"] = Route("time", "other")  # type: ignore[index]
    with pytest.raises(AttributeError):
        table.tools = {}  # type: ignore[misc]
