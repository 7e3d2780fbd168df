"""The ``mcpgw`` command. Thin on purpose: parse arguments, call the library, map outcomes to exit codes.

Exit codes: 0 success · 1 invalid configuration, or the gateway could not serve (a port in use) ·
2 usage error (bad arguments, a file that cannot be read).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import anyio
import typer

from gateway import __version__
from gateway.config.loader import LoadResult, check_file, load_text
from gateway.config.problems import Problem
from gateway.config.schema import schema_text
from gateway.errors import ConfigFileError
from gateway.logs import configure_logging
from gateway.serve import ServeOptions
from gateway.sources.remote import RemoteSources
from gateway.upstreams.login import login as run_login
from gateway.status import StatusUnavailable, fetch_status, render_status
from gateway.serve import serve as run_gateway

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2

app = typer.Typer(
    name="mcpgw",
    help="A declarative MCP gateway: many upstream MCP servers served as one, configured by one YAML file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


class SchemaFormat(str, Enum):
    json = "json"
    markdown = "markdown"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mcpgw {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """A declarative MCP gateway."""


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Config files to check, each on its own.", show_default=False,
                                                metavar="FILE")],
    output: Annotated[OutputFormat, typer.Option("--format", help="`json` for CI tooling.")] = OutputFormat.text,
    connect: Annotated[bool, typer.Option("--connect", help="Also fetch each remote source once: a source that "
                                                          "refuses the credentials makes the file invalid.")] = False,
) -> None:
    """Check config files exactly as `serve` would load them, reporting every problem.

    Each problem is printed as FILE:LINE:COL: /json/pointer: message. Secrets are never printed: an interpolated value is shown as the ${NAME} reference it was written as.

    Exit code 0: valid (warnings allowed), 1: invalid, 2: a file could not be read.
    """
    reports = [_check(path, connect) for path in files]
    if output is OutputFormat.json:
        typer.echo(json.dumps({"valid": all(r["valid"] for r in reports), "files": reports}, indent=2))
        for report in reports:
            if "error" in report:
                typer.echo(f"mcpgw: {report['file']}: {report['error']}", err=True)
    else:
        for report in reports:
            _print_text(report)
    if any("error" in r for r in reports):
        raise typer.Exit(EXIT_USAGE)
    raise typer.Exit(EXIT_OK if all(r["valid"] for r in reports) else EXIT_INVALID)


def _check(path: Path, connect: bool = False) -> dict:
    try:
        result = check_file(path)
    except ConfigFileError as exc:
        return {"file": str(path), "valid": False, "error": exc.reason, "problems": []}
    report = {"file": result.file, "valid": result.valid, "summary": _summary(result),
              "problems": [p.to_json() for p in result.problems]}
    if connect and result.config is not None and result.config.sources:
        sources = RemoteSources()
        anyio.run(sources.refresh_all, result.config)
        report["sources"] = [status.report() for status in sources.status.values()]
        report["valid"] = report["valid"] and all(s["state"] != "unauthorized" for s in report["sources"])
    return report


def _loop_options() -> dict[str, bool]:
    """uvloop where it is installed (Linux and macOS: a dependency there): the event loop is a
    sixth of the gateway's CPU per call on the standard one. ``MCPGW_UVLOOP=0`` opts out."""
    if os.environ.get("MCPGW_UVLOOP", "1") == "0":
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def _summary(result: LoadResult) -> str:
    errors = sum(p.is_error for p in result.problems)
    warnings = len(result.problems) - errors
    if result.config is None:
        return f"invalid: {_count(errors, 'error')}" + (f", {_count(warnings, 'warning')}" if warnings else "")
    config = result.config
    parts = [_count(len(config.servers), "server"), _count(len(config.namespaces), "namespace")]
    if config.sources:
        parts.append(_count(len(config.sources), "source"))
    if warnings:
        parts.append(_count(warnings, "warning"))
    return "valid: " + ", ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _print_text(report: dict) -> None:
    if "error" in report:
        typer.echo(f"mcpgw: {report['file']}: {report['error']}", err=True)
        return
    for problem in report["problems"]:
        typer.echo(Problem(**problem).render())
    for source in report.get("sources", ()):
        detail = source["error"] if source["error"] else f"{_count(source['servers'], 'server')}"
        typer.echo(f"{report['file']}: source {source['name']}: {source['state']}: {detail}")
        for problem in source["problems"]:
            typer.echo(f"{report['file']}: source {source['name']}: {problem}")
    typer.echo(f"{report['file']}: {report['summary']}")


@app.command()
def schema(
    output: Annotated[SchemaFormat, typer.Option("--format", help="`markdown` prints the config reference.")] = SchemaFormat.json,
) -> None:
    """Print the JSON Schema (Draft 2020-12) of the config file, for editors and CI."""
    if output is SchemaFormat.markdown:
        from gateway.config.reference import render_reference

        typer.echo(render_reference(), nl=False)
    else:
        typer.echo(schema_text(), nl=False)


class Transport(str, Enum):
    stdio = "stdio"
    streamable_http = "streamable-http"


DROP_IN = """\
# What `mcpgw serve` serves with no file: the servers of a plugged.in App, over stdio, like the
# reference proxy (`npx -y @pluggedin/mcp-proxy@latest`) with the same environment.
version: 1
gateway:
  name: mcpgw-pluggedin
sources:
  - type: pluggedin
    api_key: ${PLUGGEDIN_API_KEY}
    base_url: ${PLUGGEDIN_API_BASE_URL:-https://plugged.in}
"""
NO_KEY = """\
version: 1
gateway:
  name: mcpgw-pluggedin
  instructions: >-
    No plugged.in API key is set: this gateway has no servers yet. Set PLUGGEDIN_API_KEY (or pass
    --pluggedin-api-key) to serve the servers of your plugged.in workspace.
"""


def _drop_in(api_key: str | None, base_url: str | None) -> Callable[[], LoadResult]:
    """The configuration of the plugged.in drop-in: the App's servers from the key's workspace."""
    env = dict(os.environ)
    if api_key:
        env["PLUGGEDIN_API_KEY"] = api_key
    if base_url:
        env["PLUGGEDIN_API_BASE_URL"] = base_url
    text = DROP_IN if env.get("PLUGGEDIN_API_KEY") else NO_KEY
    return lambda: load_text(text, "<plugged.in drop-in>", env, Path.cwd())


@app.command()
def serve(
    config: Annotated[Optional[Path], typer.Argument(
        help="The config file to serve. Without one, the servers of a plugged.in App (PLUGGEDIN_API_KEY).",
        show_default=False, metavar="[CONFIG]")] = None,
    transport: Annotated[Optional[Transport], typer.Option(help="How clients connect (overrides gateway.transport).")] = None,
    host: Annotated[Optional[str], typer.Option(help="HTTP: interface to bind (overrides gateway.http.host).")] = None,
    port: Annotated[Optional[int], typer.Option(help="HTTP: port, 0 for any free one (overrides gateway.http.port).")] = None,
    stateless: Annotated[Optional[bool], typer.Option("--stateless", help="HTTP: serve without sessions.")] = None,
    log_format: Annotated[Optional[OutputFormat], typer.Option("--log-format", help="Log as `text` or `json` (stderr).")] = None,
    watch: Annotated[bool, typer.Option("--watch/--no-watch", help="Reload when CONFIG changes (SIGHUP always reloads).")] = True,
    pluggedin_api_key: Annotated[Optional[str], typer.Option(
        "--pluggedin-api-key", envvar="PLUGGEDIN_API_KEY", show_envvar=True, show_default=False,
        help="Without CONFIG: the plugged.in API key whose workspace's servers are served.")] = None,
    pluggedin_api_base_url: Annotated[Optional[str], typer.Option(
        "--pluggedin-api-base-url", envvar="PLUGGEDIN_API_BASE_URL", show_envvar=True,
        help="Without CONFIG: the plugged.in App's address (default https://plugged.in).")] = None,
) -> None:
    """Serve the upstream servers of CONFIG to clients as one MCP server.

    Over stdio by default (logs go to stderr), or Streamable HTTP with --transport streamable-http. Stops cleanly on SIGINT/SIGTERM, or when the stdio client closes stdin.
    """
    load = _drop_in(pluggedin_api_key, pluggedin_api_base_url) if config is None else None
    try:
        loaded = load() if load is not None else check_file(config)  # type: ignore[arg-type]
    except ConfigFileError as exc:
        typer.echo(f"mcpgw: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from exc
    for problem in loaded.problems:  # stderr: in stdio mode stdout is the MCP channel
        typer.echo(problem.render(), err=True)
    if loaded.config is None:
        typer.echo(f"mcpgw: {loaded.file}: {_summary(loaded)}", err=True)
        raise typer.Exit(EXIT_INVALID)
    observability = loaded.config.observability
    configure_logging(observability.log.level, log_format.value if log_format else observability.log.format)
    options = ServeOptions(transport.value if transport else None, host, port, stateless, watch)
    try:
        anyio.run(run_gateway, config, loaded.config, options, load, backend_options=_loop_options())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        typer.echo(f"mcpgw: cannot serve: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from exc


@app.command()
def login(
    server: Annotated[str, typer.Argument(help="The server (its name in CONFIG) to authorize.", show_default=False)],
    config: Annotated[Path, typer.Argument(help="The config file naming it.", show_default=False, metavar="CONFIG")],
    browser: Annotated[bool, typer.Option("--browser/--no-browser", help="Open the address in a browser "
                                          "(else it is only printed).")] = True,
) -> None:
    """Authorize the gateway once for SERVER (auth.type: oauth_refresh_token), in the browser: the
    tokens go to its token_file, from which `mcpgw serve` refreshes them."""
    loaded = check_file(config)
    found = loaded.config.servers.get(server) if loaded.config else None
    auth = found.auth if found else None
    if found is None or auth is None or auth.type != "oauth_refresh_token" or not found.url or not auth.token_file:
        typer.echo(f"mcpgw: {config}: no server '{server}' with `auth.type: oauth_refresh_token`, a `url` and a "
                   f"`token_file`", err=True)
        raise typer.Exit(EXIT_USAGE)
    configure_logging("warning", "text")
    try:
        anyio.run(run_login, found, browser)
    except Exception as exc:  # noqa: BLE001 - the one place a failed login is explained
        typer.echo(f"mcpgw: login to '{server}' failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from exc
    typer.echo(f"authorized: the tokens of '{server}' are in {auth.token_file}", err=True)


@app.command()
def status(
    url: Annotated[str, typer.Option(help="Where the gateway serves its status: its HTTP address, or "
                                          "observability.status_port in stdio mode.")] = "http://127.0.0.1:12006",
    output: Annotated[OutputFormat, typer.Option("--format", help="`json` for scripts.")] = OutputFormat.text,
) -> None:
    """Show a running gateway's health and each upstream's state. Exit 0 healthy, 1 degraded or unhealthy, 2 unreachable."""
    try:
        health, servers = fetch_status(url)
    except StatusUnavailable as exc:
        typer.echo(f"mcpgw: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from exc
    if output is OutputFormat.json:
        typer.echo(json.dumps({"health": health, **servers}, indent=2))
    else:
        typer.echo(render_status(health, servers))
    raise typer.Exit(EXIT_OK if health.get("status") == "healthy" else EXIT_INVALID)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
