"""The proxy benchmark: the floor and mcpgw, side by side, in one run.

    python -m bench.run [--quick] [--only NAME ...] [--rounds N] [--duel-blocks N] [--out bench/results/proxy.json]

(``python bench/run.py`` works too.) Starts bench/upstream.py and, one target at a time:

- ``floor-stdio``: the client talks to the upstream directly over stdio;
- ``floor-http``: the upstream serves Streamable HTTP itself;
- ``mcpgw-stdio-stdio``: ``mcpgw serve`` over stdio, the upstream a stdio child of it;
- ``mcpgw-http-stdio``: ``mcpgw serve --transport streamable-http``, stdio upstream;
- ``mcpgw-http-stdio-handshake``: the same with ``protocol: '2025-11-25'`` for the upstream, the
  wire the peers speak to it (mcpgw speaks 2026-07-28 to a server that can, which costs this
  Python upstream more per call: docs/benchmarks.md);
- ``mcpgw-http-http``: the same, the upstream serving Streamable HTTP;
- ``mcp-proxy-http-stdio`` and ``fastmcp-http-stdio``: the peers, ``mcp-proxy`` and the FastMCP
  proxy, each installed in a virtual environment of its own (``bench/.venvs/NAME``, made on demand:
  see bench/peers), serving Streamable HTTP in front of the same stdio upstream command;

and for each: sequential ``tools/call`` latency (p50/p99), throughput with 16 and 64 concurrent
sessions (over stdio: 16 and 64 requests in flight on the one connection), CPU time per call of
the process the client talks to (the gateway; for a floor, the upstream itself) and of the
upstream, peak RSS, and over HTTP memory per idle session (RSS before and after opening
``--idle-sessions`` sessions, in the proxy started afresh). Then ``tools/list`` with many tools:
``list-floor`` (one upstream listing N x M tools itself) and ``list-mcpgw-NxM`` (the gateway in front of N Streamable HTTP
servers of M tools each: N server entries, each its own upstream session, on one upstream process),
and the peers in front of 1,000 tools (``list-fastmcp-20x50``; ``list-mcp-proxy-1x1000``: it cannot
merge servers, so one upstream listing 1,000 tools).

``--rounds N`` measures every target N times, in turn (all targets, then all again): the table
holds each figure's median over the rounds, and each ratio below it is the median of the rounds'
own ratios. On a machine whose speed drifts by tens of percent within minutes, a single round can
put the peer in a slow phase and mcpgw in a fast one, or the reverse. So after the rounds comes a
head-to-head measurement (bench/duel.py; ``--duel-blocks N`` rounds of it, default 10, 0 or
``--quick`` for none): ``floor-http``, ``mcpgw-http-stdio`` and the best peer all running at once,
measured in short alternating blocks, each ratio the median of its rounds' own ratios
(``head_to_head`` in the JSON).

The peers are measured exactly like mcpgw, but their errors and mismatches are only reported: the
run exits non-zero for a floor's or mcpgw's, not for a peer's. ``--no-peers`` leaves them out, and
so does ``--quick`` (unless named in ``--only``). After the table come the ratios of
``mcpgw-http-stdio`` to the best peer (the lowest added p50 among the peers without errors), each
against the issue's goal.

Every reply is checked by bench/load.py (the echoed payload must be the one that session sent);
errors and mismatches are reported per target. Prints a table, writes JSON (and a PNG chart if
matplotlib happens to be installed: ``pip install matplotlib``, not a dependency; ``--chart-to
PATH`` writes a copy there). Everything is on 127.0.0.1, bounded in calls and in time, and every
process started is stopped (its process group killed if it does not stop).

Adding a target is one ``Target`` in ``targets()``: a name, how the client reaches it
(``stdio``/``http``) and an async ``start`` that launches it in front of the upstream
(``Bench.upstream_http`` / ``upstream_stdio_argv``) and returns a ``Running`` (see ``start_mcpgw``
and ``http_command``); a peer also names its entry in ``bench.peers.PEERS`` (its venv).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/run.py` as well as `python -m bench.run`
    sys.path.insert(0, str(ROOT))
if __name__ == "__main__":  # bench/duel.py's `from bench import run` is then this module, not a second copy
    sys.modules.setdefault("bench.run", sys.modules[__name__])

from bench import hotspots, load, peers  # noqa: E402

UPSTREAM = ROOT / "bench" / "upstream.py"
PYTHON = sys.executable
MCPGW = str(Path(sys.executable).with_name("mcpgw"))
TICKS = os.sysconf("SC_CLK_TCK")
FAILURES = (RuntimeError, TimeoutError, OSError, KeyError, asyncio.TimeoutError, load.Failure)  # a target failed
START_TIMEOUT = 60.0  # seconds for a target to come up (100 upstream sessions included)
STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class Settings:
    sequential: int = 2000
    sequential_seconds: float = 20.0
    throughput_calls: int = 6000
    throughput_seconds: float = 10.0
    idle_sessions: int = 1000
    list_servers: int = 100
    list_tools: int = 50
    list_requests: int = 30
    extra_list_servers: tuple[int, ...] = (20,)  # 20 x 50 = 1,000 tools as well
    peer_list_servers: int = 20  # the peers' tools/list: 20 x 50 = 1,000 tools, compared with mcpgw's 20 x 50

    @classmethod
    def quick(cls) -> "Settings":
        return cls(sequential=20, throughput_calls=100, throughput_seconds=0.5, idle_sessions=20, list_servers=3,
                   list_tools=5, list_requests=3, extra_list_servers=(), peer_list_servers=3)


# ------------------------------------------------------------------------------------ processes

_STARTED: list["Proc"] = []  # every process group we started, killed at exit whatever happened


def _kill_leftovers() -> None:
    for proc in _STARTED:
        proc.kill_group()


atexit.register(_kill_leftovers)


class Proc:
    """A process in a session (process group) of its own, stderr (and stdout unless piped) to files."""

    def __init__(self, process: asyncio.subprocess.Process, name: str, logs: Path) -> None:
        self.process, self.name, self.logs = process, name, logs
        self.pid = process.pid
        self.extra_pids: list[tuple[int, int]] = []  # (pid, start time) of children to reap after it
        _STARTED.append(self)

    @classmethod
    async def start(cls, argv: list[str], name: str, workdir: Path, *, pipes: bool = False) -> "Proc":
        out = (workdir / f"{name}.out").open("wb")
        err = (workdir / f"{name}.err").open("wb")
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if pipes else out, stderr=err, start_new_session=True,
                limit=64 * 1024 * 1024, cwd=str(workdir))
        finally:
            out.close()
            err.close()
        return cls(process, name, workdir)

    def output(self, stream: str) -> str:
        return (self.logs / f"{self.name}.{stream}").read_text(errors="replace")

    async def wait_for_line(self, pattern: str, stream: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.output(stream))
            if found:
                return found
            if self.process.returncode is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}): {self.output('err')[-2000:]}")
            await asyncio.sleep(0.02)
        raise TimeoutError(f"{self.name}: no {pattern!r} within {timeout:.0f} s: {self.output('err')[-2000:]}")

    def adopt_children(self) -> None:
        """Remember this process's children now (beside those already known), to reap them if they
        outlive it: a proxy's stdio upstream runs in a session of its own (the SDKs spawn it so)."""
        known = set(self.extra_pids)
        self.extra_pids += [entry for entry in ((pid, _start_time(pid)) for pid in descendants(self.pid))
                            if entry not in known]

    async def stop(self) -> None:
        if self.process.returncode is None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                self.process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
            except (ProcessLookupError, asyncio.TimeoutError):
                pass
        self.kill_group()
        if self.process.returncode is None:
            await self.process.wait()

    def kill_group(self) -> None:
        """SIGKILL whatever is left of this process's group and of the children it had."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid, started in self.extra_pids:
            if started and _start_time(pid) == started:  # still the same process, not a reused pid
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()


def _start_time(pid: int) -> int:
    try:
        return int(_stat(pid)[19])
    except (OSError, IndexError, ValueError):
        return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads, not its children)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as fh:
                    children = [int(c) for c in fh.read().split()]
            except OSError:
                continue
            found += children
            queue += children
    return found


def upstream_child(pid: int) -> int | None:
    """The bench upstream among a process's descendants (a stdio upstream a proxy started)."""
    for child in descendants(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as fh:
                if str(UPSTREAM).encode() in fh.read():
                    return child
        except OSError:
            continue
    return None


# ------------------------------------------------------------------------------------ targets

@dataclass
class Running:
    """A started target: how to reach it and which processes to watch."""

    transport: str  # "http" or "stdio"
    procs: list[Proc]  # stopped in reverse order
    front_pid: int  # the process the client talks to (a gateway, or a floor's upstream)
    upstream_pid: int | None = None  # the upstream behind a gateway
    url: str | None = None
    stdio: Proc | None = None  # the process to write JSON-RPC lines to

    async def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.adopt_children()  # whatever it spawned since (a peer starts its upstream lazily)
            await proc.stop()


@dataclass
class Target:
    name: str
    label: str
    transport: str  # how the client reaches it
    proxy: bool  # a proxy between client and upstream (its overhead is what is measured)
    start: Callable[["Bench"], Awaitable[Running]]
    floor: str | None = None  # the floor it is compared with (same client transport)
    peer: str | None = None  # a peer: its key in bench.peers.PEERS (its venv); its errors do not fail the run


class Bench:
    """Launches upstreams and targets into one work directory."""

    def __init__(self, workdir: Path, settings: Settings, mcpgw: str = MCPGW, profile: Path | None = None) -> None:
        self.workdir, self.settings, self.mcpgw = workdir, settings, mcpgw
        self.profile = profile  # a directory: py-spy profiles of proxies during the 64-session phase go there
        self.counter = 0

    def _name(self, stem: str) -> str:
        self.counter += 1
        return f"{self.counter:02d}-{stem}"

    def upstream_stdio_argv(self, tools: int = 1) -> list[str]:
        return [PYTHON, str(UPSTREAM), "--tools", str(tools)]

    async def upstream_http(self, tools: int = 1) -> tuple[Proc, str]:
        proc = await Proc.start([PYTHON, str(UPSTREAM), "--transport", "http", "--tools", str(tools)],
                                self._name("upstream-http"), self.workdir)
        try:
            found = await proc.wait_for_line(r"LISTENING (http://\S+)", "out")
        except BaseException:
            await proc.stop()
            raise
        return proc, found.group(1)

    async def upstream_stdio(self, tools: int = 1) -> Proc:
        return await Proc.start(self.upstream_stdio_argv(tools), self._name("upstream-stdio"), self.workdir,
                                pipes=True)

    def json_file(self, stem: str, data: dict[str, Any]) -> Path:
        """A JSON file (a peer's config) in a directory of its own, like ``mcpgw_config``."""
        directory = self.workdir / self._name(stem)
        directory.mkdir()
        path = directory / f"{stem}.json"
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")
        return path

    def mcpgw_config(self, servers: dict[str, dict[str, Any]], gateway: dict[str, Any] | None = None) -> Path:
        """A config in a directory of its own (the gateway watches the config's directory)."""
        directory = self.workdir / self._name("config")
        directory.mkdir()
        path = directory / "proxy.yaml"
        config = {"version": 1, **({"gateway": gateway} if gateway else {}), "servers": servers}
        path.write_text(json.dumps(config, indent=1), encoding="utf-8")  # JSON is YAML
        return path

    async def mcpgw_http(self, config: Path) -> tuple[Proc, str]:
        proc = await Proc.start([self.mcpgw, "serve", str(config), "--transport", "streamable-http", "--port", "0"],
                                self._name("mcpgw-http"), self.workdir)
        try:
            found = await proc.wait_for_line(r"listening on (http://\S+/mcp)", "err")
        except BaseException:
            await proc.stop()
            raise
        return proc, found.group(1)

    async def mcpgw_stdio(self, config: Path) -> Proc:
        return await Proc.start([self.mcpgw, "serve", str(config)], self._name("mcpgw-stdio"), self.workdir, pipes=True)


async def start_floor_stdio(bench: Bench) -> Running:
    proc = await bench.upstream_stdio()
    return Running("stdio", [proc], proc.pid, None, stdio=proc)


async def start_floor_http(bench: Bench) -> Running:
    proc, url = await bench.upstream_http()
    return Running("http", [proc], proc.pid, None, url=url)


async def start_mcpgw(bench: Bench, front: str, upstream: str, section: dict[str, Any] | None = None,
                      server: dict[str, Any] | None = None) -> Running:
    """mcpgw with one server ``up``: a stdio child, or a Streamable HTTP upstream started here;
    ``section``: the config's ``gateway`` section (default: none, every setting at its default);
    ``server``: more settings of ``up`` (default: none)."""
    procs: list[Proc] = []
    try:
        if upstream == "http":
            up, up_url = await bench.upstream_http()
            procs.append(up)
            config = bench.mcpgw_config({"up": {"url": up_url} | (server or {})}, section)
        else:
            argv = bench.upstream_stdio_argv()
            config = bench.mcpgw_config({"up": {"command": argv[0], "args": argv[1:]} | (server or {})}, section)
        if front == "http":
            gateway, url = await bench.mcpgw_http(config)
            procs.append(gateway)
        else:
            gateway, url = await bench.mcpgw_stdio(config), None
            procs.append(gateway)
    except BaseException:
        for proc in reversed(procs):
            await proc.stop()
        raise
    running = Running(front, procs, gateway.pid, procs[0].pid if upstream == "http" else None, url=url,
                      stdio=gateway if front == "stdio" else None)
    return running


def http_command(argv: Callable[[Bench], Awaitable[list[str]] | list[str]], ready: str, stream: str = "err",
                 path: str = "") -> Callable[[Bench], Awaitable[Running]]:
    """A proxy started by a command line (``argv(bench)``) in front of the upstream, serving
    Streamable HTTP at the URL its output announces (``ready``: a regex whose group 1 is the URL,
    ``path`` appended to it: a server that announces only its origin, as uvicorn does; ``stream``:
    "err" or "out"). The peers are started this way (``peer_targets()``)."""

    async def start(bench: Bench) -> Running:
        command = argv(bench)
        if not isinstance(command, list):
            command = await command
        proc = await Proc.start(command, bench._name("proxy"), bench.workdir)
        try:
            found = await proc.wait_for_line(ready, stream)
        except BaseException:
            await proc.stop()
            raise
        return Running("http", [proc], proc.pid, None, url=found.group(1).rstrip("/") + path)

    return start


UVICORN_READY = r"Uvicorn running on (http://[\w.:\[\]]+)"  # both peers serve with uvicorn, port 0


def mcp_proxy_argv(bench: Bench, tools: int = 1) -> list[str]:
    """``mcp-proxy`` in front of the stdio upstream: its default Streamable HTTP mode (stateful, JSON
    answers, at /mcp; SSE at /sse too) on an ephemeral port; it spawns the upstream as its child."""
    return [peers.PEERS["mcp-proxy"].bin("mcp-proxy"), "--host", "127.0.0.1", "--port", "0", "--",
            *bench.upstream_stdio_argv(tools)]


def fastmcp_argv(bench: Bench, servers: dict[str, dict[str, Any]]) -> list[str]:
    """The FastMCP proxy (``create_proxy`` of an ``mcpServers`` config, its default HTTP settings),
    run by bench/peers/fastmcp_proxy.py with the peer venv's Python."""
    config = bench.json_file("fastmcp", {"mcpServers": servers})
    return [peers.PEERS["fastmcp"].bin("python"), str(peers.FASTMCP_SCRIPT), str(config)]


def _stdio_server(bench: Bench, tools: int = 1) -> dict[str, Any]:
    argv = bench.upstream_stdio_argv(tools)
    return {"command": argv[0], "args": argv[1:]}


def targets() -> list[Target]:
    return [
        Target("floor-stdio", "floor: upstream over stdio", "stdio", False, start_floor_stdio),
        Target("floor-http", "floor: upstream serving Streamable HTTP", "http", False, start_floor_http),
        Target("mcpgw-stdio-stdio", "mcpgw stdio -> stdio upstream", "stdio", True,
               lambda b: start_mcpgw(b, "stdio", "stdio"), floor="floor-stdio"),
        Target("mcpgw-http-stdio", "mcpgw Streamable HTTP -> stdio upstream", "http", True,
               lambda b: start_mcpgw(b, "http", "stdio"), floor="floor-http"),
        Target("mcpgw-http-stdio-handshake", "mcpgw Streamable HTTP -> stdio upstream on the 2025-11-25 handshake",
               "http", True, lambda b: start_mcpgw(b, "http", "stdio", server={"protocol": "2025-11-25"}),
               floor="floor-http"),
        Target("mcpgw-http-http", "mcpgw Streamable HTTP -> Streamable HTTP upstream", "http", True,
               lambda b: start_mcpgw(b, "http", "http"), floor="floor-http"),
        *peer_targets(),
    ]


def peer_targets() -> list[Target]:
    """The peers, in front of the very same upstream command (mcpgw's Python runs it): stdio
    upstream, Streamable HTTP front, like ``mcpgw-http-stdio``."""
    return [
        Target("mcp-proxy-http-stdio", "mcp-proxy Streamable HTTP -> stdio upstream", "http", True,
               http_command(mcp_proxy_argv, UVICORN_READY, path="/mcp"), floor="floor-http", peer="mcp-proxy"),
        Target("fastmcp-http-stdio", "FastMCP proxy Streamable HTTP -> stdio upstream", "http", True,
               http_command(lambda b: fastmcp_argv(b, {"up": _stdio_server(b)}), UVICORN_READY, path="/mcp"),
               floor="floor-http", peer="fastmcp"),
    ]


def extra_targets() -> list[Target]:
    """Variants run only when named in ``--only`` (experiments, not part of the standard table)."""
    return [
        Target("mcpgw-http-stdio-json", "mcpgw Streamable HTTP -> stdio upstream, gateway.http.json_response: true",
               "http", True, lambda b: start_mcpgw(b, "http", "stdio", {"http": {"json_response": True}}),
               floor="floor-http"),
    ]


# ------------------------------------------------------------------------------------ measuring

class _CpuMeter:
    """CPU seconds of some processes (and of this one: the load client) between two readings; or,
    given to bench/load.py as the ``window`` of its phases, over their counted calls alone (not
    opening, warming up and closing sessions: 64 sessions' setup would add 13% to a 2,000-call
    block)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {role: pid for role, pid in pids.items() if pid}
        self.before = self._read()
        self.counted: dict[str, float] | None = None  # the windows' sum, once one has closed

    def start(self) -> None:
        self.before = self._read()

    def stop(self) -> None:
        spent = self._since_before()
        self.counted = {role: (self.counted or {}).get(role, 0.0) + value for role, value in spent.items()}

    def _read(self) -> dict[str, float]:
        values = {"client": time.process_time()}
        for role, pid in self.pids.items():
            try:
                values[role] = cpu_seconds(pid)
            except OSError:
                values[role] = float("nan")
        return values

    def spent(self) -> dict[str, float]:
        """Over the windows, if there were any; else since the meter was made."""
        return dict(self.counted) if self.counted is not None else self._since_before()

    def _since_before(self) -> dict[str, float]:
        after = self._read()
        return {role: after[role] - self.before[role] for role in after}


async def _openers(running: Running, client: str, httpx: Any) -> tuple[load.Opener, Any]:
    """How to open sessions on a running target; for stdio, the one connection (closed by the caller)."""
    if running.transport == "http":
        assert running.url is not None
        return load.http_opener(running.url, client, httpx), None
    assert running.stdio is not None
    connection = await load.StdioConnection(running.stdio.process).open()
    lane = load.StdioLane(connection)

    async def opener() -> load.Session:
        return lane

    return opener, connection


async def _echo_tool(session: load.Session) -> tuple[str, int]:
    reply = await session.request("tools/list", {})
    names = [tool["name"] for tool in reply["result"]["tools"]]
    echo = [name for name in names if name == "echo"] or [name for name in names if name.endswith("echo")]
    if not echo:
        raise RuntimeError(f"no echo tool among {names[:10]}")
    return echo[0], len(names)


@asynccontextmanager
async def _serving(bench: Bench, target: Target, client: str
                   ) -> AsyncIterator[tuple[Running, load.Opener, str, float]]:
    """``target`` started, a control session open on it and its echo tool found: (the running
    target, a session opener, the tool, the seconds it took to start); stopped at the end."""
    started = time.perf_counter()
    running = await target.start(bench)
    startup_s = time.perf_counter() - started
    connection = None
    try:
        async with load.httpx_client(80) as httpx:
            opener, connection = await _openers(running, client, httpx)
            control = await opener()
            tool, _ = await _echo_tool(control)
            yield running, opener, tool, startup_s
            await control.close()
    finally:
        if connection is not None:
            await connection.close()
        await running.stop()


async def measure_target(bench: Bench, target: Target, client: str) -> dict[str, Any]:
    """Start ``target``, measure it, stop it."""
    settings = bench.settings
    out: dict[str, Any] = {"label": target.label, "transport": target.transport, "proxy": target.proxy}
    if target.peer:
        out["peer"] = target.peer
    async with _serving(bench, target, client) as (running, opener, tool, startup_s):
        out["startup_s"] = round(startup_s, 2)
        if running.upstream_pid is None and target.proxy:
            running.upstream_pid = upstream_child(running.front_pid)
        for proc in running.procs:
            proc.adopt_children()
        out["tool"] = tool
        pids = {"front": running.front_pid, "upstream": running.upstream_pid if target.proxy else None}
        meter = _CpuMeter(pids)
        out["sequential"] = await load.sequential(opener, tool, settings.sequential,
                                                  max_seconds=settings.sequential_seconds, window=meter)
        out["throughput_16"] = await load.throughput(opener, tool, 16, settings.throughput_calls,
                                                     settings.throughput_seconds, window=meter)
        spy = await _start_spy(bench, target.name, running.front_pid) if target.proxy else None
        out["throughput_64"] = await load.throughput(opener, tool, 64, settings.throughput_calls,
                                                     settings.throughput_seconds, window=meter)
        spent = meter.spent()
        if spy is not None:
            out["profile"] = await _finish_spy(bench, f"{target.name} (64 sessions)", *spy)
        phases = [out["sequential"], out["throughput_16"], out["throughput_64"]]
        calls = sum(phase["calls"] for phase in phases)
        out["cpu_ms_per_call"] = {role: round(seconds * 1000 / calls, 3) for role, seconds in spent.items()}
        out["errors"] = sum(phase["errors"] for phase in phases)
        out["mismatched"] = sum(phase["mismatched"] for phase in phases)
        out["memory_kb"] = {"front": memory_kb(running.front_pid)}
        if running.upstream_pid:
            out["memory_kb"]["upstream"] = memory_kb(running.upstream_pid)
    if target.transport == "http":
        out["idle_sessions"] = await _fresh_idle_sessions(bench, target, client)
        out["errors"] += out["idle_sessions"]["failures"]
    return out


async def _fresh_idle_sessions(bench: Bench, target: Target, client: str) -> dict[str, Any]:
    """Memory per idle session, in a proxy started afresh (one session opened and its tools
    listed first, so what the first session loads is not counted). Measured after the load
    phases instead, the sessions would fill heap the load had freed, and the figure would say how
    much garbage the load left behind: 3 KB per session after 20,000 calls, 44 KB fresh, for the
    very same gateway (docs/benchmarks.md)."""
    async with _serving(bench, target, client) as (running, opener, _, _):
        return await _idle_sessions(opener, running.front_pid, bench.settings.idle_sessions)


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def _start_spy(bench: Bench, name: str, pid: int, seconds: float | None = None) -> tuple[Proc, Path] | None:
    """With ``--profile``: py-spy on ``pid`` for ``seconds`` (default: a throughput phase's limit),
    samples holding the GIL only (what the interpreter spends), by function."""
    spy = py_spy()
    if bench.profile is None or spy is None:
        return None
    bench.profile.mkdir(parents=True, exist_ok=True)
    path = bench.profile / f"profile-{name}.txt"
    seconds = max(1, int(seconds or bench.settings.throughput_seconds))
    proc = await Proc.start([spy, "record", "--pid", str(pid), "--format", "raw", "--function", "--gil",
                             "--rate", "200", "--duration", str(seconds), "--output", str(path)],
                            bench._name("py-spy"), bench.workdir)
    await asyncio.sleep(0.5)  # attached before the load starts
    return proc, path


async def _finish_spy(bench: Bench, what: str, proc: Proc, path: Path) -> dict[str, Any]:
    try:
        await asyncio.wait_for(proc.process.wait(), 60)
    except asyncio.TimeoutError:
        pass
    await proc.stop()
    if not path.exists():
        return {"error": proc.output("err")[-500:]}
    summary = hotspots.summarize(path.read_text(errors="replace"))
    print(f"\n{what}, py-spy ({path}):\n{hotspots.render(summary)}\n", file=sys.stderr)
    return {"file": str(path), **summary}


async def _idle_sessions(opener: load.Opener, pid: int, count: int) -> dict[str, Any]:
    """RSS of ``pid`` before and after opening ``count`` sessions that then stay idle."""
    await asyncio.sleep(0.2)
    before = memory_kb(pid)["VmRSS"]
    started = time.perf_counter()
    sessions, failures = await load.open_idle(opener, count)
    seconds = time.perf_counter() - started
    await asyncio.sleep(0.2)
    after = memory_kb(pid)
    opened = len(sessions)
    return {"sessions": opened, "failures": failures, "open_s": round(seconds, 2), "rss_before_kb": before,
            "rss_after_kb": after["VmRSS"], "peak_rss_kb": after["VmHWM"],
            "kb_per_session": round((after["VmRSS"] - before) / opened, 1) if opened else None}


async def measure_lists(bench: Bench, client: str, peer_names: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``tools/list`` of many tools: the upstream alone, mcpgw in front of N servers x M tools, and
    the peers (``peer_names``: those installed) in front of ``peer_list_servers`` x M tools."""
    settings = bench.settings
    out: dict[str, Any] = {}
    total = settings.list_servers * settings.list_tools
    floor, url = await bench.upstream_http(total)
    try:
        out["list-floor"] = {"label": f"floor: one upstream listing {total} tools",
                             **await _list_latency(url, client, settings.list_requests)}
    finally:
        await floor.stop()
    upstream, url = await bench.upstream_http(settings.list_tools)
    try:
        for servers in (settings.list_servers, *settings.extra_list_servers):
            config = bench.mcpgw_config({f"s{i:03d}": {"url": url} for i in range(servers)})
            out[f"list-mcpgw-{servers}x{settings.list_tools}"] = await _list_behind(
                bench, client, f"list-mcpgw-{servers}x{settings.list_tools}",
                f"mcpgw, {servers} servers x {settings.list_tools} tools", servers * settings.list_tools,
                lambda: _running_mcpgw_http(bench, config))
        if "fastmcp" in peer_names:
            out.update(await _list_fastmcp(bench, client, url))
    finally:
        await upstream.stop()
    if "mcp-proxy" in peer_names:
        out.update(await _list_mcp_proxy(bench, client))
    return out


async def _running_mcpgw_http(bench: Bench, config: Path) -> Running:
    gateway, url = await bench.mcpgw_http(config)
    return Running("http", [gateway], gateway.pid, url=url)


async def _list_fastmcp(bench: Bench, client: str, upstream_url: str) -> dict[str, Any]:
    """The FastMCP proxy merges servers (an ``mcpServers`` config, tools prefixed by server name):
    in front of the same N Streamable HTTP server entries on one upstream process as mcpgw."""
    servers, tools = bench.settings.peer_list_servers, bench.settings.list_tools
    key = f"list-fastmcp-{servers}x{tools}"
    start = http_command(lambda b: fastmcp_argv(b, {f"s{i:03d}": {"url": upstream_url} for i in range(servers)}),
                         UVICORN_READY, path="/mcp")
    return {key: await _peer_list(bench, client, key, f"FastMCP proxy, {servers} servers x {tools} tools",
                                  servers * tools, lambda: start(bench), "fastmcp")}


async def _list_mcp_proxy(bench: Bench, client: str) -> dict[str, Any]:
    """``mcp-proxy`` cannot merge servers (``--named-server`` serves each at /servers/NAME/ apart),
    so: in front of one stdio upstream listing the same number of tools."""
    total = bench.settings.peer_list_servers * bench.settings.list_tools
    key = f"list-mcp-proxy-1x{total}"
    start = http_command(lambda b: mcp_proxy_argv(b, total), UVICORN_READY, path="/mcp")
    return {key: await _peer_list(bench, client, key, f"mcp-proxy, one stdio upstream of {total} tools "
                                  "(it cannot merge servers)", total, lambda: start(bench), "mcp-proxy")}


async def _peer_list(bench: Bench, client: str, key: str, label: str, expected: int,
                     start: Callable[[], Awaitable[Running]], peer: str) -> dict[str, Any]:
    """A peer's ``tools/list``; a peer that fails is reported, not fatal."""
    try:
        return {"peer": peer, **await _list_behind(bench, client, key, label, expected, start)}
    except FAILURES as exc:
        return {"label": label, "peer": peer, "error": f"{type(exc).__name__}: {exc}", "errors": 1}


async def _list_behind(bench: Bench, client: str, key: str, label: str, expected: int,
                       start: Callable[[], Awaitable[Running]]) -> dict[str, Any]:
    """``tools/list`` latency through a proxy that ``start()`` launches (and that is stopped here);
    every answer must list ``expected`` tools."""
    started = time.perf_counter()
    running = await start()
    try:
        startup = round(time.perf_counter() - started, 2)
        spy = await _start_spy(bench, key, running.front_pid)
        assert running.url is not None
        figures = await _list_latency(running.url, client, bench.settings.list_requests)
        if spy is not None:
            figures["profile"] = await _finish_spy(bench, f"tools/list, {label}", *spy)
        entry = {"label": label, "startup_s": startup, "expected_tools": expected, **figures}
        if figures.get("tools") != [expected]:
            entry["errors"] += 1
        return entry
    finally:
        await running.stop()


async def _list_latency(url: str, client: str, requests: int) -> dict[str, Any]:
    async with load.httpx_client(4) as httpx:
        session = await load.http_opener(url, client, httpx)()
        try:
            await session.request("tools/list", {})  # warm
            return await load.list_tools(session, requests)
        finally:
            await session.close()


# ------------------------------------------------------------------------------------ report

def compare(results: dict[str, Any]) -> None:
    """Added latency against the floor with the same client transport."""
    floors = {t.name: t.floor for t in targets() + extra_targets()}
    for name, figures in results.items():
        floor = results.get(floors.get(name) or "")
        if not floor or "sequential" not in figures:
            continue
        for key in ("p50_ms", "p99_ms"):
            if key in figures["sequential"] and key in floor["sequential"]:
                figures[f"added_{key}"] = round(figures["sequential"][key] - floor["sequential"][key], 3)
        if "p50_ms" in figures.get("spread", {}) and "p50_ms" in floor.get("spread", {}):  # bench/duel.py
            figures["added_spread_p50_ms"] = round(figures["spread"]["p50_ms"] - floor["spread"]["p50_ms"], 3)
        figures["floor"] = floors[name]


def table(results: dict[str, Any], lists: dict[str, Any]) -> str:
    rows = [("target", "p50 ms", "+p50", "p99 ms", "+p99", "calls/s 16", "calls/s 64", "CPU/call front",
             "CPU/call upstr", "KB/idle sess", "peak RSS MB", "err", "mism")]
    notes: dict[str, str] = {}  # rows that failed: the reason, written across the row
    for name, f in results.items():
        if "error" in f and "sequential" not in f:
            notes[name] = "failed: " + f["error"][:160]
            rows.append((name, *[""] * 12))
            continue
        cpu = f.get("cpu_ms_per_call", {})
        idle = f.get("idle_sessions", {})
        peak = f.get("memory_kb", {}).get("front", {}).get("VmHWM")
        rows.append((
            name, _n(f["sequential"].get("p50_ms")), _n(f.get("added_p50_ms"), "+"), _n(f["sequential"].get("p99_ms")),
            _n(f.get("added_p99_ms"), "+"), _n(f["throughput_16"].get("calls_per_s"), digits=0),
            _n(f["throughput_64"].get("calls_per_s"), digits=0), _n(cpu.get("front")), _n(cpu.get("upstream")),
            _n(idle.get("kb_per_session"), digits=1), _n(peak / 1024 if peak else None, digits=1),
            str(f["errors"]), str(f["mismatched"])))
    for name, f in lists.items():
        if "error" in f:
            notes[name] = "failed: " + f["error"][:160]
            rows.append((name, *[""] * 12))
            continue
        rows.append((name, _n(f.get("p50_ms")), "", _n(f.get("p99_ms")), "", "", "", "", "",
                     f"tools {f.get('tools')}", "", str(f.get("errors", "")), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() if row[0] not in notes
              else row[0].ljust(widths[0]) + "  " + notes[row[0]]) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ ratios

GATEWAY = "mcpgw-http-stdio"  # the mcpgw target held against the peers (the same setup as theirs)
SAME_WIRE = "mcpgw-http-stdio-handshake"  # the same, on the wire the peers speak to the upstream
IDLE_SESSION_GOAL_KB = 50.0


def ratios(results: dict[str, Any], lists: dict[str, Any], rounds: list[dict[str, Any]] | None = None,
           gateway: str = GATEWAY) -> dict[str, Any]:
    """The issue's comparison: ``gateway`` (``mcpgw-http-stdio``) against the best peer (the
    lowest added p50 among the peers measured without an error or a mismatch: a fast peer that
    mixes sessions up is not a standard to meet), each figure with its goal, met or missed; and
    against every clean peer (``by_peer``), since the best by latency need not be the best at
    everything.

    With several ``rounds`` (``--rounds``), ``results`` holds the medians, and each ratio is the
    median of the ratios of the rounds: within a round mcpgw and the peer ran minutes apart at
    most, while the machine's speed drifts between rounds; the per-round ratios are kept."""
    mine = results.get(gateway)
    measured = {name: f for name, f in results.items() if f.get("peer") and "sequential" in f}
    if not mine or "sequential" not in mine or not measured:
        return {}
    clean = {name: f for name, f in measured.items()
             if f["errors"] == 0 and f["mismatched"] == 0 and f.get("added_p50_ms") is not None}
    out: dict[str, Any] = {"gateway": gateway, "best_peer": None,
                           "rule": "best peer: the lowest added p50 among the peers with no errors and no mismatches",
                           "left_out": sorted(set(measured) - set(clean)),
                           "why_left_out": {name: "errors or mismatches" if f["errors"] or f["mismatched"]
                                            else "no floor measured, so no added latency"
                                            for name, f in measured.items() if name not in clean}}
    if not clean:
        return out
    best = min(clean, key=lambda name: clean[name]["added_p50_ms"])
    out["best_peer"] = best
    out["checks"] = _checks(mine, clean[best], lists)
    out["by_peer"] = {name: _checks(mine, f, lists) for name, f in clean.items()}
    if rounds and len(rounds) > 1:
        per_round = [_checks(r[gateway], r[best], lists) for r in rounds
                     if "sequential" in r.get(gateway, {}) and "sequential" in r.get(best, {})]
        for i, check in enumerate(out["checks"]):
            found = [checks[i]["ratio"] for checks in per_round if i < len(checks) and checks[i]["ratio"] is not None]
            if check["ratio"] is not None and found:
                check["ratio"] = round(statistics.median(found), 3)
                check["rounds"] = found
                check["met"] = _meets(check["ratio"], check["limit"], check["at_most"])
        out["rule"] += f"; each ratio the median of {len(per_round)} rounds' ratios"
    return out


def _checks(mine: dict[str, Any], peer: dict[str, Any], lists: dict[str, Any]) -> list[dict[str, Any]]:
    checks = [
        _ratio("added p50", "ms", mine.get("added_p50_ms"), peer.get("added_p50_ms"), 0.5),
        _ratio("p99", "ms", mine["sequential"].get("p99_ms"), peer["sequential"].get("p99_ms"), 1.0),
        _ratio("calls/s, 16 sessions", "/s", mine["throughput_16"].get("calls_per_s"),
               peer["throughput_16"].get("calls_per_s"), 1.2, at_most=False),
        _ratio("calls/s, 64 sessions", "/s", mine["throughput_64"].get("calls_per_s"),
               peer["throughput_64"].get("calls_per_s"), 1.2, at_most=False),
        _ratio("proxy CPU per call", "ms", mine.get("cpu_ms_per_call", {}).get("front"),
               peer.get("cpu_ms_per_call", {}).get("front"), 0.5),
    ]
    if "added_spread_p50_ms" in mine and "added_spread_p50_ms" in peer:  # measured head to head only
        checks.append(_ratio("added p50, calls spread out", "ms", mine["added_spread_p50_ms"],
                             peer["added_spread_p50_ms"], 0.5))
    if "idle_sessions" in mine:  # not measured by the head-to-head blocks (bench/duel.py)
        kb = mine["idle_sessions"].get("kb_per_session")
        checks.append({"what": f"memory per idle session ({mine['idle_sessions'].get('sessions')} sessions)",
                       "unit": "KB", "mcpgw": kb, "peer": peer.get("idle_sessions", {}).get("kb_per_session"),
                       "ratio": None, "goal": f"<= {IDLE_SESSION_GOAL_KB:.0f} KB",
                       "met": None if kb is None else kb <= IDLE_SESSION_GOAL_KB})
    theirs = next((f for f in lists.values() if f.get("peer") == peer["peer"] and "p50_ms" in f), None)
    ours = next((f for name, f in lists.items() if name.startswith("list-mcpgw-") and theirs
                 and f.get("expected_tools") == theirs.get("expected_tools")), None)
    if theirs and ours:
        checks.append(_ratio(f"tools/list of {theirs['expected_tools']} tools, p50", "ms", ours.get("p50_ms"),
                             theirs.get("p50_ms"), 0.5))
        checks[-1]["peer_setup"] = theirs["label"]
    return checks


def _ratio(what: str, unit: str, mine: float | None, theirs: float | None, goal: float, at_most: bool = True
           ) -> dict[str, Any]:
    """mcpgw's figure over the peer's, against a goal (``at_most``: lower is better). No ratio when
    the peer's figure is missing or not positive (an added latency at or under the floor's)."""
    ratio = mine / theirs if mine is not None and theirs is not None and theirs > 0 else None
    return {"what": what, "unit": unit, "mcpgw": mine, "peer": theirs,
            "ratio": None if ratio is None else round(ratio, 3), "goal": f"{'<=' if at_most else '>='} {goal}x",
            "limit": goal, "at_most": at_most, "met": None if ratio is None else _meets(ratio, goal, at_most)}


def _meets(ratio: float, limit: float, at_most: bool) -> bool:
    return ratio <= limit if at_most else ratio >= limit


def render_ratios(found: dict[str, Any]) -> str:
    if not found.get("best_peer"):
        why = found.get("why_left_out", {})
        return (f"{found['gateway']} against the peers: no peer to compare with ("
                + (", ".join(f"{name}: {why.get(name, 'left out')}" for name in found["left_out"]) or "none measured")
                + "), so no ratios")
    head = (f"{found['gateway']} against the best peer, {found['best_peer']} ({found['rule']}"
            + (f"; left out: {', '.join(found['left_out'])}" if found["left_out"] else "") + "):")
    rows = [("", "mcpgw", "peer", "ratio", "goal", "")]
    for check in found["checks"]:
        digits = 0 if check["unit"] == "/s" else 1 if check["unit"] == "KB" else 3
        rows.append((check["what"], _n(check["mcpgw"], digits=digits) + " " + check["unit"],
                     _n(check["peer"], digits=digits) + " " + check["unit"],
                     "-" if check["ratio"] is None else f"{check['ratio']:.2f}x", check["goal"],
                     {True: "met", False: "MISSED", None: "n/a"}[check["met"]]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    notes = [f"  (peer's tools/list: {check['peer_setup']})" for check in found["checks"] if "peer_setup" in check]
    return "\n".join([head, *lines, *notes])


def render_head_to_head(found: dict[str, Any]) -> str:
    """bench/duel.py's report: its heading, the ratios as ``render_ratios`` prints them, and each
    ratio's rounds."""
    head = ("Head to head, in the same phase: all targets running at once, measured in alternating blocks, "
            "each ratio the median of the rounds' own ratios")
    if "not_run" in found or "error" in found:
        return f"{head}: " + (f"not run: {found['not_run']}" if "not_run" in found else f"failed: {found['error']}")
    rounds = [f"  {check['what']}, by round: " + ", ".join(f"{ratio:.2f}" for ratio in check["rounds"])
              for check in found.get("checks", []) if check.get("rounds")]
    return "\n".join([f"{head}:", render_ratios(found), *rounds])


def _n(value: Any, sign: str = "", digits: int = 3) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return ("+" + text) if sign and value >= 0 else text


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    from importlib.metadata import version

    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version(), "mcp": version("mcp"), "mcpgw": version("mcpgw")}


CHART_COLORS = {"floor": ("#9e9e9e", "#d0d0d0"), "mcpgw": ("#1f5fa8", "#8fb4e0"), "peer": ("#d9731a", "#f3bf8e")}


def _kind(name: str, figures: dict[str, Any]) -> str:
    return "peer" if figures.get("peer") else "floor" if not figures.get("proxy") else "mcpgw"


def chart(results: dict[str, Any], path: Path, machine_info: dict[str, Any] | None = None,
          head_to_head: dict[str, Any] | None = None) -> bool:
    """A PNG of what the table says first: the latency each proxy adds to its floor (p50, p99) and
    calls/s with 16 and 64 sessions, mcpgw and the peers in their own colours; with a head-to-head
    report, a third panel of its ratios against their goals, the figures the goals are judged by
    (the first two panels are the rounds' medians, measured minutes apart). Only when matplotlib is
    installed (``pip install matplotlib``; it is not a dependency)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [name for name, f in results.items() if "sequential" in f]
    added = [name for name in names if results[name].get("added_p50_ms") is not None]
    checks = [check for check in (head_to_head or {}).get("checks", []) if check.get("ratio") is not None]
    figure, axes = plt.subplots(1, 3 if checks else 2, figsize=(18 if checks else 12, 7), dpi=100)
    left, right = axes[0], axes[1]
    if checks:
        _goal_bars(axes[2], checks, head_to_head or {})
        for axis in (left, right):
            axis.set_title("each target's median over the rounds", fontsize=10)
    latency = [[results[n]["added_p50_ms"] for n in added], [results[n].get("added_p99_ms", 0) for n in added]]
    _bars(left, added, latency, ["p50", "p99"], [_kind(n, results[n]) for n in added], "{:.2f}")
    left.set_xlabel("latency added to the floor, sequential tools/call (ms; lower is better)")
    _bars(right, names, [[results[n][f"throughput_{k}"].get("calls_per_s", 0) for n in names] for k in (16, 64)],
          ["16 sessions", "64 sessions"], [_kind(n, results[n]) for n in names], "{:.0f}")
    right.set_xlabel("tools/call per second (higher is better)")
    title = "mcpgw and its peers in front of the same upstream"
    if machine_info:
        title += (f" ({machine_info.get('cpus')} CPUs, {str(machine_info.get('date', ''))[:10]}, "
                  f"mcpgw {machine_info.get('mcpgw')})")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _goal_bars(axis: Any, checks: list[dict[str, Any]], report: dict[str, Any]) -> None:
    """One bar per head-to-head check: its ratio, green where the goal is met, red where not, the
    goal marked on the bar's row."""
    names = [f"{check['what']} ({check['goal']})" for check in checks]
    rows = range(len(checks))
    bars = axis.barh(list(rows), [check["ratio"] for check in checks], height=0.6,
                     color=["#2e8b57" if check["met"] else "#c0392b" for check in checks])
    axis.bar_label(bars, labels=[f"{check['ratio']:.2f}x" for check in checks], label_type="center",
                   color="white", fontsize=8)
    axis.scatter([check["limit"] for check in checks], list(rows), marker="|", s=500, color="black", zorder=3)
    axis.set_yticks(list(rows), names, fontsize=8)
    axis.invert_yaxis()
    axis.margins(x=0.1)
    axis.grid(axis="x", alpha=0.3)
    peer = (report.get("targets") or {}).get("peer", report.get("best_peer", "the peer"))
    axis.set_xlabel(f"mcpgw / {peer} (| marks the goal)")
    axis.set_title(f"head to head: medians of {len(report.get('rounds', []))} rounds' ratios", fontsize=10)


def _bars(axis: Any, names: list[str], series: list[list[float]], labels: list[str], kinds: list[str],
          fmt: str) -> None:
    """Grouped horizontal bars, one group per target (first target on top), values written at their ends."""
    height = 0.8 / len(series)
    for i, (values, label) in enumerate(zip(series, labels)):
        ys = [row + i * height for row in range(len(names))]
        colors = [CHART_COLORS[kind][min(i, 1)] for kind in kinds]
        bars = axis.barh(ys, values, height=height, color=colors, label=label)
        axis.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2, fontsize=8)
    axis.set_yticks([row + height * (len(series) - 1) / 2 for row in range(len(names))], names)
    axis.invert_yaxis()
    axis.margins(x=0.15)
    axis.grid(axis="x", alpha=0.3)
    handles = [matplotlib_patch(CHART_COLORS[kind][i], f"{kind}, {label}")
               for kind in ("floor", "mcpgw", "peer") if kind in kinds for i, label in enumerate(labels)]
    axis.legend(handles=handles, fontsize=8, loc="best")


def matplotlib_patch(color: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=color, label=label)


# ------------------------------------------------------------------------------------ main

async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.quick() if args.quick else Settings()
    if args.idle_sessions is not None:
        settings = Settings(**{**settings.__dict__, "idle_sessions": args.idle_sessions})
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):  # stop cleanly: every `finally` stops its processes
        asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
    chosen = choose(args)
    with_lists = not args.only or "lists" in args.only
    installed = await prepare_peers(wanted_peers(args, chosen, with_lists))
    started = time.perf_counter()  # the measuring, an install excluded
    ready = frozenset(name for name, peer in installed.items() if "error" not in peer)
    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-bench-"))
    bench = Bench(workdir, settings, args.mcpgw, args.out.parent if args.profile else None)
    results: dict[str, Any] = {}
    lists: dict[str, Any] = {}

    async def one(target: Target) -> None:
        began = time.perf_counter()
        if target.peer and target.peer not in ready:
            results[target.name] = failed(target.label, f"not installed: {installed[target.peer]['error']}",
                                          target.peer)
            return
        try:
            results[target.name] = await measure_target(bench, target, args.client)
        except FAILURES as exc:
            results[target.name] = failed(target.label, f"{type(exc).__name__}: {exc}", target.peer)
        print(f"{target.name}: {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)

    async def listing() -> None:
        nonlocal lists
        began = time.perf_counter()
        try:
            lists = await measure_lists(bench, args.client, ready)
        except FAILURES as exc:
            lists = {"lists": failed("tools/list", f"{type(exc).__name__}: {exc}")}
        for name in sorted(set(installed) - ready):
            lists[f"list-{name}"] = failed(f"{name}, tools/list", f"not installed: {installed[name]['error']}", name)
        print(f"tools/list: {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)

    rounds: list[dict[str, Any]] = []  # each round's results (one round unless --rounds)
    jobs: list[Any] = []
    head_to_head: dict[str, Any] | None = None
    try:
        for round_number in range(args.rounds):
            if round_number:
                rounds.append(results)
                results = {}  # `one` fills the current round's
            last = round_number == args.rounds - 1
            batch = [one(target) for target in chosen] + ([listing()] if with_lists and last else [])
            jobs += batch
            if args.quick:
                # Everything at once: --quick figures are not meant to be read, only that everything
                # works (every reply checked). A full run measures one target at a time, alone.
                await asyncio.gather(*batch)
            else:
                for job in batch:
                    await job
        rounds.append(results)
        for found in rounds:
            compare(found)
        ordered = [{target.name: found[target.name] for target in chosen if target.name in found}
                   for found in rounds]
        results = ordered[0] if len(ordered) == 1 else median_of_rounds(ordered)
        against_peers = ratios(results, lists, ordered)
        if args.duel_blocks:
            head_to_head = await measure_head_to_head(bench, args.client, chosen, against_peers, args.duel_blocks)
    finally:
        for job in jobs:
            job.close()  # the ones never awaited (an interrupted run)
        for proc in _STARTED:
            if proc.process.returncode is None:
                await proc.stop()
        # A failure under load can be rare (once in many runs): its logs are kept for the asking.
        troubled = problems({"targets": {f"{n}/{name}": found for n, measured in enumerate(rounds)
                                         for name, found in measured.items()},
                             "tools_list": lists, "head_to_head": head_to_head or {}})
        if args.keep_logs or troubled:
            print(f"logs: {workdir}" + ("" if args.keep_logs else " (kept: errors or mismatches of a floor or mcpgw)"),
                  file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {"machine": machine(), "settings": settings.__dict__ | {"client": args.client, "quick": args.quick,
                                                                     "mcpgw": args.mcpgw, "rounds": len(ordered)},
              "elapsed_s": round(time.perf_counter() - started, 1), "peers": installed, "targets": results,
              "tools_list": lists, "ratios": against_peers,
              "ratios_same_wire": ratios(results, lists, ordered, SAME_WIRE)}
    if len(ordered) > 1:
        report["rounds"] = ordered
    if head_to_head is not None:
        report["head_to_head"] = head_to_head
    return report


async def measure_head_to_head(bench: Bench, client: str, chosen: list[Target], against_peers: dict[str, Any],
                               blocks: int) -> dict[str, Any]:
    """bench/duel.py after the rounds: ``mcpgw-http-stdio``, its floor and the best peer of the
    rounds (as ``ratios`` picked it) all running at once, ``blocks`` rounds of alternating blocks.
    Not run (and said why) when one of them was not chosen or no peer was measured cleanly; a
    target that fails there is reported like a failed target (a peer's failure is not fatal)."""
    from bench import duel  # here, not at the top: bench/duel.py imports this module

    by_name = {target.name: target for target in chosen}
    gateway = by_name.get(GATEWAY)
    floor = by_name.get(gateway.floor or "") if gateway else None
    peer = by_name.get(against_peers.get("best_peer") or "")
    if not (gateway and floor and peer):
        why = f"needs {GATEWAY}, its floor and a peer measured without errors among this run's targets"
        print(f"head to head: not run: {why}", file=sys.stderr, flush=True)
        return {"not_run": why}
    try:
        return await duel.duel(bench, client, floor, gateway, peer, duel.Blocks(rounds=blocks))
    except duel.DuelFailed as exc:
        return failed("head to head", str(exc), exc.target.peer)


def median_of_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each target's figures over the rounds: every number the median of its rounds, errors and
    mismatches summed (one in any round counts), a target that failed in any round failed."""
    merged: dict[str, Any] = {}
    for name in rounds[0]:
        found = [r[name] for r in rounds if name in r]
        failure = next((f for f in found if "error" in f and "sequential" not in f), None)
        merged[name] = failure if failure is not None else _median_figures(found)
        if failure is None:
            merged[name]["errors"] = sum(f.get("errors", 0) for f in found)
            merged[name]["mismatched"] = sum(f.get("mismatched", 0) for f in found)
    return merged


def _median_figures(found: list[Any]) -> Any:
    first = found[0]
    if isinstance(first, dict):
        return {key: _median_figures([f[key] for f in found if isinstance(f, dict) and key in f]) for key in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool) and \
            all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in found):
        middle = statistics.median(found)
        return round(middle, 3) if isinstance(middle, float) else middle
    return first


def failed(label: str, error: str, peer: str | None = None) -> dict[str, Any]:
    """The entry of a target (or tools/list scenario) that could not be measured."""
    return {"label": label, **({"peer": peer} if peer else {}), "error": error, "errors": 1, "mismatched": 0}


def choose(args: argparse.Namespace) -> list[Target]:
    """This run's targets: the standard ones, or those named in ``--only`` (extra targets included).
    Peers are left out by ``--no-peers``, and by ``--quick`` unless named: installing them takes
    a network and a minute, a quick run takes seconds."""
    if args.only:
        chosen = [target for target in targets() + extra_targets() if target.name in args.only]
    else:
        chosen = [target for target in targets() if not (target.peer and args.quick)]
    return [target for target in chosen if not (target.peer and args.no_peers)]


def wanted_peers(args: argparse.Namespace, chosen: list[Target], with_lists: bool) -> list[str]:
    """The peers this run needs installed: those of the chosen targets, and all of them for the
    tools/list part of a full run."""
    if args.no_peers:
        return []
    names = {target.peer for target in chosen if target.peer}
    if with_lists and not args.quick:
        names |= set(peers.PEERS)
    return [name for name in peers.PEERS if name in names]


async def prepare_peers(names: list[str]) -> dict[str, dict[str, Any]]:
    """Each peer's venv, made when missing (before anything is measured, so an install is not timed):
    per peer its requirement and the versions installed, or why it could not be had (the run then
    goes on without it)."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        peer = peers.PEERS[name]
        entry: dict[str, Any] = {"requirement": peer.requirement, "venv": str(peer.venv)}
        if not peer.ready():
            print(f"peer {name}: installing {peer.requirement} into {peer.venv} ...", file=sys.stderr, flush=True)
        try:
            entry["versions"] = await peers.ensure(peer)
        except (RuntimeError, OSError, ValueError, asyncio.TimeoutError) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            print(f"peer {name}: left out: {entry['error']}", file=sys.stderr, flush=True)
        out[name] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few seconds: checks that everything works")
    parser.add_argument("--only", nargs="*", help="run only these targets (and `lists` for tools/list)")
    parser.add_argument("--client", choices=["raw", "httpx2"], default="raw", help="the HTTP load client")
    parser.add_argument("--idle-sessions", type=int, default=None, help="sessions opened to measure memory")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default: bench/results/proxy.json, or proxy-quick.json with --quick)")
    parser.add_argument("--mcpgw", default=MCPGW, help="the mcpgw executable (default: the one beside this Python)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the proxies during the 64-session phase (profile-TARGET.txt beside --out)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (path on stderr)")
    parser.add_argument("--no-peers", action="store_true",
                        help="leave the peers out (else their venvs under bench/.venvs are made when missing)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every target this many times, in turn; medians (ratios: of each round's)")
    parser.add_argument("--duel-blocks", type=int, default=None,
                        help="after the rounds, this many rounds of mcpgw, its floor and the best peer all "
                             "running at once in alternating blocks (bench/duel.py; default 10, 0 or --quick: none)")
    parser.add_argument("--chart-to", type=Path, default=None,
                        help="write the chart there too (e.g. docs/img/benchmarks.png; needs matplotlib)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.duel_blocks is None:
        args.duel_blocks = 0 if args.quick else 10
    if args.duel_blocks < 0:
        parser.error("--duel-blocks must be 0 or more")
    if os.sep in args.mcpgw:  # the processes run in a work directory of their own
        args.mcpgw = str(Path(args.mcpgw).resolve())
    args.out = out = args.out or ROOT / "bench" / "results" / ("proxy-quick.json" if args.quick else "proxy.json")

    try:
        report = asyncio.run(run(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report["targets"], report["tools_list"]))
    if report["ratios"]:
        print("\n" + render_ratios(report["ratios"]))
    if report["ratios_same_wire"].get("best_peer"):
        print("\nThe same on the wire the peers speak to the upstream (2025-11-25 handshake), for comparison:\n"
              + render_ratios(report["ratios_same_wire"]))
    if "head_to_head" in report:
        print("\n" + render_head_to_head(report["head_to_head"]))
    print(f"\n{report['machine']['cpus']} CPUs ({report['machine']['cpu_model']}), {report['elapsed_s']} s; "
          f"JSON: {out}")
    write_charts(report, [out.with_suffix(".png"), *([args.chart_to] if args.chart_to else [])])
    return 1 if problems(report) else 0


def problems(report: dict[str, Any]) -> int:
    """Errors and mismatches that fail the run: the floors' and mcpgw's. A peer's are reported in
    the table and the JSON only: a peer misbehaving is a finding about the peer, not a broken run."""
    duel = report.get("head_to_head") or {}
    entries = [*report["targets"].values(), *report["tools_list"].values(), *duel.get("medians", {}).values(),
               *([duel] if "error" in duel else [])]
    return sum(f.get("errors", 0) + f.get("mismatched", 0) for f in entries if not f.get("peer"))


def write_charts(report: dict[str, Any], paths: list[Path]) -> None:
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not chart(report["targets"], path, report["machine"], report.get("head_to_head")):
                print("no chart: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
                return
            print(f"chart: {path}")
    except Exception as exc:  # noqa: BLE001 - an optional extra: the figures are already written
        print(f"no chart: {type(exc).__name__}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
