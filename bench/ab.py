"""Two checkouts of mcpgw against each other, in alternating rounds: the gateway's CPU per call,
the upstream's, and calls/s (HTTP front, 16 sessions by default).

    python -m bench.ab OTHER_CHECKOUT [--rounds 4] [--calls 4000] [--sessions 16] [--upstream stdio|http]

(`git worktree add /tmp/base HEAD~3` makes one.) This checkout is "b", the other "a". On a noisy
machine one run says little: the very same build moves by up to ±30% between runs here
(docs/benchmarks.md). Rounds alternate a, b, a, b..., each a fresh gateway and upstream warmed up
before the clock starts, and the medians are compared: how every fix in docs/benchmarks.md was
measured. Each checkout runs with this environment's Python and packages.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/ab.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import load  # noqa: E402
from bench import run as bench_run  # noqa: E402

WARMUP_CALLS = 300


def launcher(checkout: Path, directory: Path) -> str:
    """An ``mcpgw`` command that runs the gateway package of ``checkout``."""
    script = directory / f"mcpgw-{checkout.name or 'checkout'}"
    script.write_text(f'#!/bin/sh\nPYTHONPATH="{checkout}${{PYTHONPATH:+:$PYTHONPATH}}" '
                      f'exec "{sys.executable}" -m gateway "$@"\n', encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


async def one_round(mcpgw: str, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as workdir:
        bench = bench_run.Bench(Path(workdir), bench_run.Settings.quick(), mcpgw=mcpgw)
        running = await bench_run.start_mcpgw(bench, "http", args.upstream)
        try:
            opener, _ = await bench_run._openers(running, "raw", None)
            control = await opener()
            tool, _ = await bench_run._echo_tool(control)
            upstream = running.upstream_pid or bench_run.upstream_child(running.front_pid)
            await load.throughput(opener, tool, args.sessions, WARMUP_CALLS, 30)
            meter = bench_run._CpuMeter({"front": running.front_pid, "upstream": upstream})
            done = await load.throughput(opener, tool, args.sessions, args.calls, 120)
            spent = meter.spent()
            await control.close()
        finally:
            await running.stop()
    if done["errors"] or done["mismatched"]:
        raise RuntimeError(f"{mcpgw}: {done['errors']} errors, {done['mismatched']} mismatched answers")
    calls = done["calls"]
    return {"front_cpu_ms": spent["front"] * 1000 / calls, "upstream_cpu_ms": spent["upstream"] * 1000 / calls,
            "calls_per_s": done["calls_per_s"]}


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
    parser.add_argument("other", help="the checkout to compare this one with (a)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--upstream", choices=["stdio", "http"], default="stdio")
    args = parser.parse_args(argv)
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
