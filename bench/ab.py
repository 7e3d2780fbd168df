"""Two checkouts of mcpgw against each other, in alternating rounds: the gateway's CPU per call,
the upstream's, and calls/s (HTTP front, 16 sessions by default).

    python -m bench.ab OTHER_CHECKOUT [--rounds 4] [--calls 4000] [--sessions 16] [--upstream stdio|http]
    python -m bench.ab OTHER_CHECKOUT --instructions [--calls 1000]
    python -m bench.ab mcp-proxy --instructions [--sessions 1]

(`git worktree add /tmp/base HEAD~3` makes one.) This checkout is "b", the other "a". On a noisy
machine one run says little: the very same build moves by up to ±30% between runs here
(docs/benchmarks.md). Rounds alternate a, b, a, b..., each a fresh gateway and upstream warmed up
before the clock starts, and the medians are compared: how every fix in docs/benchmarks.md was
measured. Each checkout runs with this environment's Python and packages.

``--instructions`` counts instead of timing: the gateway runs under valgrind's callgrind
(instrumentation switched on only after the warm-up, with ``callgrind_control``), and the figure is
the instructions it executed per call, its own process only (not the kernel's work for its system
calls, nor the upstream's). The count repeats to about 0.1% from run to run where CPU time moves by
30%, so one round each settles a change of 1%; it sees what a change does to the gateway's own
work, not to cache misses or system calls, which CPU time still has to confirm. Needs ``valgrind``.
With ``mcp-proxy`` in place of a checkout, "a" is the peer (its venv from ``bench.peers``, made
when missing), counted the same way in front of the same upstream: a ratio that does not drift
with the machine's speed, as ratios of CPU time measured a minute apart do.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

if __package__ in (None, ""):  # `python bench/ab.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import load  # noqa: E402
from bench import peers as bench_peers  # noqa: E402
from bench import run as bench_run  # noqa: E402

WARMUP_CALLS = 300
PEERS_COUNTED = ("mcp-proxy",)  # peers --instructions can count in place of a checkout


def launcher(checkout: Path, directory: Path, wrapper: str = "") -> str:
    """An ``mcpgw`` command that runs the gateway package of ``checkout`` (under ``wrapper``, a
    command prefix, if any)."""
    script = directory / f"mcpgw-{checkout.name or 'checkout'}"
    script.write_text(f'#!/bin/sh\nPYTHONPATH="{checkout}${{PYTHONPATH:+:$PYTHONPATH}}" '
                      f'exec {wrapper}"{sys.executable}" -m gateway "$@"\n', encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@asynccontextmanager
async def warmed(workdir: Path, start: Any, args: argparse.Namespace, warmup_seconds: float,
                 mcpgw: str | None = None) -> AsyncIterator[tuple[Any, load.Opener, str]]:
    """A proxy (``start(bench)``: a gateway, ``mcpgw`` when given, or a peer) in front of a fresh
    upstream, warmed up by ``WARMUP_CALLS`` calls: (the running processes, a session opener, the
    echo tool); stopped at the end."""
    bench = bench_run.Bench(workdir, bench_run.Settings.quick(), **({"mcpgw": mcpgw} if mcpgw else {}))
    running = await start(bench)
    try:
        opener, _ = await bench_run._openers(running, "raw", None)
        control = await opener()
        tool, _ = await bench_run._echo_tool(control)
        await load.throughput(opener, tool, args.sessions, WARMUP_CALLS, warmup_seconds)
        yield running, opener, tool
        await control.close()
    finally:
        await running.stop()


async def one_round(mcpgw: str, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as workdir:
        async with warmed(Path(workdir), _gateway(args), args, 30, mcpgw) as (running, opener, tool):
            upstream = running.upstream_pid or bench_run.upstream_child(running.front_pid)
            meter = bench_run._CpuMeter({"front": running.front_pid, "upstream": upstream})
            done = await load.throughput(opener, tool, args.sessions, args.calls, 120, window=meter)
            spent = meter.spent()
    if done["errors"] or done["mismatched"]:
        raise RuntimeError(f"{mcpgw}: {done['errors']} errors, {done['mismatched']} mismatched answers")
    calls = done["calls"]
    return {"front_cpu_ms": spent["front"] * 1000 / calls, "upstream_cpu_ms": spent["upstream"] * 1000 / calls,
            "calls_per_s": done["calls_per_s"]}


def _gateway(args: argparse.Namespace) -> Any:
    return lambda bench: bench_run.start_mcpgw(bench, "http", args.upstream)


async def _count(workdir: Path, start: Any, args: argparse.Namespace, mcpgw: str | None = None) -> dict[str, float]:
    """A proxy (``start(bench)``, under callgrind writing to ``workdir``) warmed up, then its
    instructions per call counted over ``args.calls`` calls."""
    async with warmed(workdir, start, args, 120, mcpgw) as (running, opener, tool):
        _callgrind_control("--instr=on", running.front_pid)
        done = await load.throughput(opener, tool, args.sessions, args.calls, 600)
        _callgrind_control("--dump", running.front_pid)
        _callgrind_control("--instr=off", running.front_pid)
    dumps = [path.read_text(errors="replace") for path in workdir.glob("callgrind.out*")]
    totals = [int(found.group(1)) for text in dumps if "Trigger: dump" in text
              for found in [re.search(r"^totals: (\d+)", text, re.M)] if found]
    if done["errors"] or done["mismatched"] or len(totals) != 1:
        raise RuntimeError(f"{done['errors']} errors, {done['mismatched']} mismatched, {len(totals)} dumps")
    calls = done["calls"] + args.sessions  # each session's first call is inside the count too
    return {"instructions_m": totals[0] / calls / 1e6, "calls": calls}


def _callgrind(workdir: str) -> str:
    return f"valgrind -q --tool=callgrind --instr-atstart=no --callgrind-out-file={Path(workdir) / 'callgrind.out'} "


async def counted_round(checkout: Path, args: argparse.Namespace) -> dict[str, float]:
    """One round under callgrind: the gateway's instructions per call (see the module docstring)."""
    with tempfile.TemporaryDirectory() as workdir:
        mcpgw = launcher(checkout, Path(workdir), _callgrind(workdir))
        return await _count(Path(workdir), _gateway(args), args, mcpgw)


async def counted_peer_round(name: str, args: argparse.Namespace) -> dict[str, float]:
    """The same count for a peer (``mcp-proxy``) in front of the stdio upstream."""
    peer = bench_peers.PEERS[name]
    await bench_peers.ensure(peer)
    with tempfile.TemporaryDirectory() as workdir:
        prefix = _callgrind(workdir).split()
        start = bench_run.http_command(lambda bench: [*prefix, peer.bin("python"), *bench_run.mcp_proxy_argv(bench)],
                                       bench_run.UVICORN_READY, path="/mcp")
        return await _count(Path(workdir), start, args)


def _callgrind_control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True, timeout=60)


async def count(args: argparse.Namespace) -> dict[str, Any]:
    here = Path(__file__).resolve().parent.parent
    other = (counted_peer_round(args.other, args) if args.other in PEERS_COUNTED
             else counted_round(Path(args.other).resolve(), args))
    return {"a": await other, "b": await counted_round(here, args)}


async def compare(args: argparse.Namespace) -> dict[str, Any]:
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as scripts:
        builds = {"a": launcher(Path(args.other).resolve(), Path(scripts)), "b": launcher(here, Path(scripts))}
        rounds: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
        for _ in range(args.rounds):
            for name, mcpgw in builds.items():
                rounds[name].append(await one_round(mcpgw, args))
    return {name: {key: statistics.median(r[key] for r in found) for key in found[0]} | {"rounds": found}
            for name, found in rounds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", help="the checkout to compare this one with (a); with --instructions, "
                                      "or mcp-proxy")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--upstream", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--instructions", action="store_true",
                        help="count the gateway's instructions per call under callgrind (one round each)")
    args = parser.parse_args(argv)
    if args.instructions:
        if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
            parser.error("--instructions needs valgrind (callgrind_control included)")
        args.calls = min(args.calls, 1000)  # about 50x slower under callgrind; 1,000 calls repeat to ~0.1%
        counted = asyncio.run(count(args))
        for name, label in (("a", args.other), ("b", "this checkout")):
            print(f"{name} ({label}): {counted[name]['instructions_m']:.3f} M instructions per call "
                  f"(proxy process, {counted[name]['calls']} calls)")
        change = counted["b"]["instructions_m"] / counted["a"]["instructions_m"] - 1
        print(f"b - a: {change:+.1%}")
        return 0
    found = asyncio.run(compare(args))
    for name, label in (("a", args.other), ("b", "this checkout")):
        figures = found[name]
        per_round = ", ".join(f"{r['front_cpu_ms']:.3f}" for r in figures["rounds"])
        print(f"{name} ({label}): gateway CPU/call {figures['front_cpu_ms']:.3f} ms, upstream "
              f"{figures['upstream_cpu_ms']:.3f} ms, {figures['calls_per_s']:.0f} calls/s (medians of {args.rounds}; "
              f"gateway per round: {per_round})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
