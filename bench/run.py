"""The proxy benchmark: the floor and mcpgw, side by side, in one run.

    python -m bench.run [--quick] [--only NAME ...] [--out bench/results/proxy.json]

(``python bench/run.py`` works too.) Starts bench/upstream.py and, one target at a time:

- ``floor-stdio``: the client talks to the upstream directly over stdio;
- ``floor-http``: the upstream serves Streamable HTTP itself;
- ``mcpgw-stdio-stdio``: ``mcpgw serve`` over stdio, the upstream a stdio child of it;
- ``mcpgw-http-stdio``: ``mcpgw serve --transport streamable-http``, stdio upstream;
- ``mcpgw-http-http``: the same, the upstream serving Streamable HTTP;

and for each: sequential ``tools/call`` latency (p50/p99), throughput with 16 and 64 concurrent
sessions (over stdio: 16 and 64 requests in flight on the one connection), CPU time per call of
the process the client talks to (the gateway; for a floor, the upstream itself) and of the
upstream, peak RSS, and over HTTP memory per idle session (RSS before and after opening
``--idle-sessions`` sessions). Then ``tools/list`` with many tools: ``list-floor`` (one upstream
listing N x M tools itself) and ``list-mcpgw-NxM`` (the gateway in front of N Streamable HTTP
servers of M tools each: N server entries, each its own upstream session, on one upstream process).

Every reply is checked by bench/load.py (the echoed payload must be the one that session sent);
errors and mismatches are reported per target. Prints a table, writes JSON (and a PNG chart if
matplotlib happens to be installed). Everything is on 127.0.0.1, bounded in calls and in time, and
every process started is stopped (its process group killed if it does not stop).

Adding a target (a peer proxy in its own virtual environment, say) is one ``Target`` in
``targets()``: a name, how the client reaches it (``stdio``/``http``) and an async ``start``
that launches it in front of the upstream (``Bench.upstream_http`` / ``upstream_stdio_argv``)
and returns a ``Running`` (see ``start_mcpgw`` and ``http_command``).
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
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/run.py` as well as `python -m bench.run`
    sys.path.insert(0, str(ROOT))

from bench import hotspots, load  # noqa: E402

UPSTREAM = ROOT / "bench" / "upstream.py"
PYTHON = sys.executable
MCPGW = str(Path(sys.executable).with_name("mcpgw"))
TICKS = os.sysconf("SC_CLK_TCK")
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

    @classmethod
    def quick(cls) -> "Settings":
        return cls(sequential=20, throughput_calls=100, throughput_seconds=0.5, idle_sessions=20, list_servers=3,
                   list_tools=5, list_requests=3, extra_list_servers=())


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
        """Remember this process's children now, to reap them if they outlive it."""
        self.extra_pids = [(pid, _start_time(pid)) for pid in descendants(self.pid)]

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
            await proc.stop()


@dataclass
class Target:
    name: str
    label: str
    transport: str  # how the client reaches it
    proxy: bool  # a proxy between client and upstream (its overhead is what is measured)
    start: Callable[["Bench"], Awaitable[Running]]
    floor: str | None = None  # the floor it is compared with (same client transport)


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


async def start_mcpgw(bench: Bench, front: str, upstream: str, section: dict[str, Any] | None = None) -> Running:
    """mcpgw with one server ``up``: a stdio child, or a Streamable HTTP upstream started here;
    ``section``: the config's ``gateway`` section (default: none, every setting at its default)."""
    procs: list[Proc] = []
    try:
        if upstream == "http":
            up, up_url = await bench.upstream_http()
            procs.append(up)
            config = bench.mcpgw_config({"up": {"url": up_url}}, section)
        else:
            argv = bench.upstream_stdio_argv()
            config = bench.mcpgw_config({"up": {"command": argv[0], "args": argv[1:]}}, section)
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


def http_command(argv: Callable[[Bench], Awaitable[list[str]] | list[str]], ready: str, stream: str = "err"
                 ) -> Callable[[Bench], Awaitable[Running]]:
    """A proxy started by a command line (``argv(bench)``) in front of the upstream, serving
    Streamable HTTP at the URL its output announces (``ready``: a regex whose group 1 is the full
    endpoint URL; ``stream``: "err" or "out"). For a peer installed in its own virtual environment:
    ``Target("peer-http-stdio", ..., "http", True, http_command(lambda b: [PEER_BIN, *PEER_FLAGS,
    *b.upstream_stdio_argv()], r"...(http://\\S+)"), floor="floor-http")``."""

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
        return Running("http", [proc], proc.pid, None, url=found.group(1))

    return start


def targets() -> list[Target]:
    return [
        Target("floor-stdio", "floor: upstream over stdio", "stdio", False, start_floor_stdio),
        Target("floor-http", "floor: upstream serving Streamable HTTP", "http", False, start_floor_http),
        Target("mcpgw-stdio-stdio", "mcpgw stdio -> stdio upstream", "stdio", True,
               lambda b: start_mcpgw(b, "stdio", "stdio"), floor="floor-stdio"),
        Target("mcpgw-http-stdio", "mcpgw Streamable HTTP -> stdio upstream", "http", True,
               lambda b: start_mcpgw(b, "http", "stdio"), floor="floor-http"),
        Target("mcpgw-http-http", "mcpgw Streamable HTTP -> Streamable HTTP upstream", "http", True,
               lambda b: start_mcpgw(b, "http", "http"), floor="floor-http"),
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
    """CPU seconds of some processes (and of this one: the load client) between two readings."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {role: pid for role, pid in pids.items() if pid}
        self.before = self._read()

    def _read(self) -> dict[str, float]:
        values = {"client": time.process_time()}
        for role, pid in self.pids.items():
            try:
                values[role] = cpu_seconds(pid)
            except OSError:
                values[role] = float("nan")
        return values

    def spent(self) -> dict[str, float]:
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


async def measure_target(bench: Bench, target: Target, client: str) -> dict[str, Any]:
    """Start ``target``, measure it, stop it."""
    settings = bench.settings
    started = time.perf_counter()
    running = await target.start(bench)
    out: dict[str, Any] = {"label": target.label, "transport": target.transport, "proxy": target.proxy}
    connection = None
    try:
        out["startup_s"] = round(time.perf_counter() - started, 2)
        async with load.httpx_client(80) as httpx:
            opener, connection = await _openers(running, client, httpx)
            control = await opener()
            tool, _ = await _echo_tool(control)
            if running.upstream_pid is None and target.proxy:
                running.upstream_pid = upstream_child(running.front_pid)
            for proc in running.procs:
                proc.adopt_children()
            out["tool"] = tool
            pids = {"front": running.front_pid, "upstream": running.upstream_pid if target.proxy else None}
            meter = _CpuMeter(pids)
            out["sequential"] = await load.sequential(opener, tool, settings.sequential,
                                                      max_seconds=settings.sequential_seconds)
            out["throughput_16"] = await load.throughput(opener, tool, 16, settings.throughput_calls,
                                                         settings.throughput_seconds)
            spy = await _start_spy(bench, target.name, running.front_pid) if target.proxy else None
            out["throughput_64"] = await load.throughput(opener, tool, 64, settings.throughput_calls,
                                                         settings.throughput_seconds)
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
                out["idle_sessions"] = await _idle_sessions(opener, running.front_pid, settings.idle_sessions)
                out["errors"] += out["idle_sessions"]["failures"]
            await control.close()
    finally:
        if connection is not None:
            await connection.close()
        await running.stop()
    return out


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


async def measure_lists(bench: Bench, client: str) -> dict[str, Any]:
    """``tools/list`` of many tools: the upstream alone, then mcpgw in front of N servers x M tools."""
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
            started = time.perf_counter()
            gateway, gateway_url = await bench.mcpgw_http(config)
            try:
                startup = round(time.perf_counter() - started, 2)
                spy = await _start_spy(bench, f"list-mcpgw-{servers}x{settings.list_tools}", gateway.pid)
                figures = await _list_latency(gateway_url, client, settings.list_requests)
                if spy is not None:
                    figures["profile"] = await _finish_spy(bench, f"tools/list, {servers} servers", *spy)
                out[f"list-mcpgw-{servers}x{settings.list_tools}"] = {
                    "label": f"mcpgw, {servers} servers x {settings.list_tools} tools", "startup_s": startup,
                    "expected_tools": servers * settings.list_tools, **figures}
                if figures.get("tools") != [servers * settings.list_tools]:
                    out[f"list-mcpgw-{servers}x{settings.list_tools}"]["errors"] += 1
            finally:
                await gateway.stop()
    finally:
        await upstream.stop()
    return out


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
        figures["floor"] = floors[name]


def table(results: dict[str, Any], lists: dict[str, Any]) -> str:
    rows = [("target", "p50 ms", "+p50", "p99 ms", "+p99", "calls/s 16", "calls/s 64", "CPU/call front",
             "CPU/call upstr", "KB/idle sess", "peak RSS MB", "err", "mism")]
    for name, f in results.items():
        if "error" in f and "sequential" not in f:
            rows.append((name, "failed: " + f["error"][:60], *[""] * 11))
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
        rows.append((name, _n(f.get("p50_ms")), "", _n(f.get("p99_ms")), "", "", "", "", "",
                     f"tools {f.get('tools')}", "", str(f.get("errors", "")), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


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


def chart(results: dict[str, Any], path: Path) -> bool:
    """A PNG of latency and throughput, when matplotlib is installed (it is not a dependency)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [name for name, f in results.items() if "sequential" in f]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.barh(names, [results[n]["sequential"].get("p50_ms", 0) for n in names], label="p50")
    left.barh(names, [results[n]["sequential"].get("p99_ms", 0) for n in names], alpha=0.3, label="p99")
    left.set_xlabel("sequential tools/call, ms")
    left.legend()
    for sessions, alpha in ((16, 1.0), (64, 0.5)):
        right.barh(names, [results[n][f"throughput_{sessions}"].get("calls_per_s", 0) for n in names], alpha=alpha,
                   label=f"{sessions} sessions")
    right.set_xlabel("calls/s")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


# ------------------------------------------------------------------------------------ main

async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.quick() if args.quick else Settings()
    if args.idle_sessions is not None:
        settings = Settings(**{**settings.__dict__, "idle_sessions": args.idle_sessions})
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):  # stop cleanly: every `finally` stops its processes
        asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-bench-"))
    bench = Bench(workdir, settings, args.mcpgw, args.out.parent if args.profile else None)
    results: dict[str, Any] = {}
    lists: dict[str, Any] = {}
    started = time.perf_counter()
    chosen = [target for target in targets() if not args.only or target.name in args.only]
    chosen += [target for target in extra_targets() if args.only and target.name in args.only]
    with_lists = not args.only or "lists" in args.only
    failures = (RuntimeError, TimeoutError, OSError, load.Failure, KeyError, asyncio.TimeoutError)

    async def one(target: Target) -> None:
        began = time.perf_counter()
        try:
            results[target.name] = await measure_target(bench, target, args.client)
        except failures as exc:
            results[target.name] = {"label": target.label, "error": f"{type(exc).__name__}: {exc}", "errors": 1,
                                    "mismatched": 0}
        print(f"{target.name}: {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)

    async def listing() -> None:
        nonlocal lists
        began = time.perf_counter()
        try:
            lists = await measure_lists(bench, args.client)
        except failures as exc:
            lists = {"lists": {"error": f"{type(exc).__name__}: {exc}", "errors": 1}}
        print(f"tools/list: {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)

    jobs = [one(target) for target in chosen] + ([listing()] if with_lists else [])
    try:
        if args.quick:
            # Everything at once: --quick figures are not meant to be read, only that everything
            # works (every reply checked). A full run measures one target at a time, alone.
            await asyncio.gather(*jobs)
        else:
            for job in jobs:
                await job
    finally:
        for job in jobs:
            job.close()  # the ones never awaited (an interrupted run)
        for proc in _STARTED:
            if proc.process.returncode is None:
                await proc.stop()
        if args.keep_logs:
            print(f"logs: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results = {target.name: results[target.name] for target in chosen if target.name in results}  # table order
    compare(results)
    return {"machine": machine(), "settings": settings.__dict__ | {"client": args.client, "quick": args.quick,
                                                                   "mcpgw": args.mcpgw},
            "elapsed_s": round(time.perf_counter() - started, 1), "targets": results, "tools_list": lists}


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
    args = parser.parse_args(argv)
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
    print(f"\n{report['machine']['cpus']} CPUs ({report['machine']['cpu_model']}), {report['elapsed_s']} s; "
          f"JSON: {out}")
    try:
        if chart(report["targets"], out.with_suffix(".png")):
            print(f"chart: {out.with_suffix('.png')}")
    except Exception as exc:  # noqa: BLE001 - an optional extra: the figures are already written
        print(f"no chart: {type(exc).__name__}: {exc}", file=sys.stderr)
    problems = sum(f.get("errors", 0) + f.get("mismatched", 0) for f in
                   [*report["targets"].values(), *report["tools_list"].values()])
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
