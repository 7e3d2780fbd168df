"""The routing table: which upstream serves each name and URI clients see, built once per change.

The table is a pure function of the config and of what each upstream listed
(:func:`build_routing_table`). It is immutable, so a request handler reads one table from start to
finish while a reload or a reconnect builds the next one beside it and swaps a single reference:
no locks, and no request ever sees half a reload. The list results clients ask for are built here,
once, so ``tools/list`` costs nothing however often clients poll it; their wire form too, once per
protocol version (:mod:`gateway.prepared`).

Naming follows DESIGN.md §3: tools and prompts appear as ``<prefix><separator><name>`` (made valid
by :func:`gateway.names.expose_name`), resources and resource templates keep their URIs. When two
offers would be exposed under the same name or URI the configured rule decides
(``naming.on_collision``): ``first`` keeps the server declared first, ``reject`` exposes none of
them. Either way a :class:`Collision` is recorded for ``validate --connect`` and the logs; the
table never lets the last one win silently.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import mcp_types as types
from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate

from gateway.config.model import NamingConfig, ServerConfig
from gateway.names import expose_name, join_name, matches
from gateway.prepared import PreparedLists

__all__ = ["Catalog", "Route", "Collision", "RoutingTable", "build_routing_table"]



def _frozen_map() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Catalog:
    """What one upstream offered when it was last listed (its own names, unfiltered)."""

    tools: tuple[types.Tool, ...] = ()
    prompts: tuple[types.Prompt, ...] = ()
    resources: tuple[types.Resource, ...] = ()
    resource_templates: tuple[types.ResourceTemplate, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: the server, and the name (or URI / URI template) it knows the item by.
    ``repeatable``: the upstream annotated the tool read-only or idempotent, so a call that failed
    in transit may be sent again."""

    server: str
    upstream_name: str
    repeatable: bool = False
    definition: Any = field(default=None, compare=False, repr=False)  # the upstream's Tool (to check arguments)


@dataclass(frozen=True, slots=True)
class Collision:
    """Several offers wanted one exposed name or URI; ``kept`` is the server that got it, if any."""

    kind: str  # "tool", "prompt", "resource", "resource template"
    name: str
    servers: tuple[str, ...]  # every offer, in declaration order (a server listing it twice appears twice)
    kept: Optional[str]


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Exposed names and URIs -> routes, plus the list results clients are given."""

    tools: Mapping[str, Route] = field(default_factory=_frozen_map)
    prompts: Mapping[str, Route] = field(default_factory=_frozen_map)
    resources: Mapping[str, Route] = field(default_factory=_frozen_map)
    templates: tuple[tuple[str, Route], ...] = ()
    prefixes: Mapping[str, str] = field(default_factory=_frozen_map)
    list_tools: types.ListToolsResult = field(default_factory=lambda: types.ListToolsResult(tools=[]))
    list_prompts: types.ListPromptsResult = field(default_factory=lambda: types.ListPromptsResult(prompts=[]))
    list_resources: types.ListResourcesResult = field(
        default_factory=lambda: types.ListResourcesResult(resources=[]))
    list_resource_templates: types.ListResourceTemplatesResult = field(
        default_factory=lambda: types.ListResourceTemplatesResult(resource_templates=[]))
    collisions: tuple[Collision, ...] = ()
    renamed: tuple[tuple[str, str, str], ...] = ()
    _matchers: tuple[Optional[UriTemplate], ...] = field(init=False, repr=False, compare=False)
    prepared: PreparedLists = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Parsed once here rather than per resources/read; a template the SDK cannot parse gets None
        # and is never matched (it is still listed, and still found by template_route).
        object.__setattr__(self, "_matchers", tuple(_parse_template(t) for t, _ in self.templates))
        # The list results in wire form belong to this table: a new table starts afresh.
        object.__setattr__(self, "prepared", PreparedLists({
            "tools/list": self.list_tools, "prompts/list": self.list_prompts,
            "resources/list": self.list_resources, "resources/templates/list": self.list_resource_templates}))

    @classmethod
    def empty(cls) -> "RoutingTable":
        """The table before any upstream has been listed: nothing to route, every list empty."""
        return cls()

    def resolve_resource(self, uri: str) -> Optional[Route]:
        """The route for a ``resources/read`` (or subscribe) URI: an exact URI first, because a
        listed resource is the more specific claim, then the first template that matches, in
        declaration order."""
        route = self.resources.get(uri)
        if route is not None:
            return route
        for (_, template_route), matcher in zip(self.templates, self._matchers):
            if matcher is not None and matcher.match(uri) is not None:
                return template_route
        return None

    def template_route(self, uri_template: str) -> Optional[Route]:
        """The route for a completion request, which names the template itself, not a URI."""
        for template, route in self.templates:
            if template == uri_template:
                return route
        return None

    def server_for_unknown(self, name: str) -> Optional[str]:
        """The server a name not in the table would belong to, judged by its prefix.

        Lets the proxy answer "server X is unavailable" instead of "unknown tool" for a server that
        is down and never listed. Longest prefix first, so ``gh__`` and ``gh__ent__`` both work.
        """
        for prefix in sorted(self.prefixes, key=len, reverse=True):
            if name.startswith(prefix):
                return self.prefixes[prefix]
        return None


@dataclass(frozen=True, slots=True)
class _Offer:
    """One item one server offers, under the key it would be exposed as."""

    key: str  # exposed name, URI or URI template
    route: Route
    item: Any  # the wire object clients would see
    plain: str  # the key before shortening/sanitizing (== key for resources)


def build_routing_table(servers: Sequence[ServerConfig], naming: NamingConfig,
                        catalogs: Mapping[str, Catalog]) -> RoutingTable:
    """The table for ``servers`` (in declaration order) given the latest catalogs by server name.

    Disabled servers are left out entirely. An enabled server without a catalog (down, or not
    listed yet) offers nothing but keeps its prefix, so its names are still recognised as its own.
    """
    enabled = [server for server in servers if server.enabled]
    rule = naming.on_collision
    tools, tool_collisions = _settle("tool", _tool_offers(enabled, naming, catalogs), rule)
    prompts, prompt_collisions = _settle("prompt", _prompt_offers(enabled, naming, catalogs), rule)
    resources, resource_collisions = _settle("resource", _resource_offers(enabled, catalogs), rule)
    templates, template_collisions = _settle("resource template", _template_offers(enabled, catalogs), rule)
    return RoutingTable(
        tools=_route_map(tools),
        prompts=_route_map(prompts),
        resources=_route_map(resources),
        templates=tuple((offer.key, offer.route) for offer in templates),
        prefixes=_prefix_map(enabled, naming.separator),
        list_tools=types.ListToolsResult(tools=[offer.item for offer in tools]),
        list_prompts=types.ListPromptsResult(prompts=[offer.item for offer in prompts]),
        list_resources=types.ListResourcesResult(resources=[offer.item for offer in resources]),
        list_resource_templates=types.ListResourceTemplatesResult(
            resource_templates=[offer.item for offer in templates]),
        collisions=(*tool_collisions, *prompt_collisions, *resource_collisions, *template_collisions),
        renamed=tuple((o.route.server, o.route.upstream_name, o.key) for o in (*tools, *prompts) if o.key != o.plain),
    )


def _tool_offers(servers: Sequence[ServerConfig], naming: NamingConfig,
                 catalogs: Mapping[str, Catalog]) -> Iterator[_Offer]:
    for server in servers:
        yield from _named_offers(server, naming, _catalog(catalogs, server).tools, server.tools)


def _prompt_offers(servers: Sequence[ServerConfig], naming: NamingConfig,
                   catalogs: Mapping[str, Catalog]) -> Iterator[_Offer]:
    for server in servers:
        yield from _named_offers(server, naming, _catalog(catalogs, server).prompts, server.prompts)


def _named_offers(server: ServerConfig, naming: NamingConfig, items: Iterable[Any], rules: Any) -> Iterator[_Offer]:
    """Tools or prompts: filter on the upstream's own name (what the user sees in the upstream's
    docs), rename, then prefix and make valid. ``model_copy`` changes the name and nothing else,
    so title, annotations, schemas, icons and ``_meta`` reach clients as the upstream sent them."""
    for item in items:
        if not matches(item.name, rules.allow, rules.deny):
            continue
        local = rules.rename.get(item.name, item.name)
        exposed = expose_name(server.prefix, naming.separator, local, naming.max_tool_name_length)
        yield _Offer(exposed, Route(server.name, item.name, _repeatable(item), item), item.model_copy(update={"name": exposed}),
                     join_name(server.prefix, naming.separator, local))


def _repeatable(item: Any) -> bool:
    hints = getattr(item, "annotations", None)
    return bool(hints and (hints.read_only_hint or hints.idempotent_hint))


def _resource_offers(servers: Sequence[ServerConfig], catalogs: Mapping[str, Catalog]) -> Iterator[_Offer]:
    """Resources keep their URIs (clients and links inside content refer to them), filtered by URI."""
    for server in servers:
        for resource in _catalog(catalogs, server).resources:
            uri = str(resource.uri)
            if matches(uri, server.resources.allow, server.resources.deny):
                yield _Offer(uri, Route(server.name, uri), resource, uri)


def _template_offers(servers: Sequence[ServerConfig], catalogs: Mapping[str, Catalog]) -> Iterator[_Offer]:
    """Resource templates keep their template strings, filtered by the same globs as resources."""
    for server in servers:
        for template in _catalog(catalogs, server).resource_templates:
            text = template.uri_template
            if matches(text, server.resources.allow, server.resources.deny):
                yield _Offer(text, Route(server.name, text), template, text)


def _catalog(catalogs: Mapping[str, Catalog], server: ServerConfig) -> Catalog:
    return catalogs.get(server.name) or Catalog()


def _settle(kind: str, offers: Iterable[_Offer], rule: str) -> tuple[list[_Offer], list[Collision]]:
    """Apply the collision rule: the exposed offers in declaration order, and every collision.

    Offers are grouped by key in order of first appearance, so the kept offer of each group sits
    where its server's declaration puts it. ``first`` keeps the earliest offer; ``reject`` drops the
    whole group, because guessing which server a user meant is worse than showing neither.
    """
    groups: dict[str, list[_Offer]] = {}
    for offer in offers:
        groups.setdefault(offer.key, []).append(offer)
    kept: list[_Offer] = []
    collisions: list[Collision] = []
    for key, group in groups.items():
        winner = group[0] if len(group) == 1 or rule == "first" else None
        if winner is not None:
            kept.append(winner)
        if len(group) > 1:
            collisions.append(Collision(kind, key, tuple(o.route.server for o in group),
                                        winner.route.server if winner else None))
    return kept, collisions


def _route_map(offers: Iterable[_Offer]) -> Mapping[str, Route]:
    return MappingProxyType({offer.key: offer.route for offer in offers})


def _prefix_map(servers: Sequence[ServerConfig], separator: str) -> Mapping[str, str]:
    """``prefix + separator`` -> server, for every server with a prefix (config checks forbid
    duplicates; should one slip through, the first declared keeps it, as with names)."""
    prefixes: dict[str, str] = {}
    for server in servers:
        if server.prefix:
            prefixes.setdefault(server.prefix + separator, server.name)
    return MappingProxyType(prefixes)


def _parse_template(template: str) -> Optional[UriTemplate]:
    """The SDK's RFC 6570 matcher (levels 1-3, linear-time, no backtracking), or None for a
    template it refuses (e.g. ``{a}{b}`` or ``{var:3}``): such a template cannot be routed by URI."""
    try:
        return UriTemplate.parse(template)
    except InvalidUriTemplate:
        return None
