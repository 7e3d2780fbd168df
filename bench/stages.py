"""Where a call's time goes inside the gateway, stage by stage, with calls spread out.

    python -m bench.stages [--calls 300] [--rounds 3] [--no-peer]

The head-to-head duel (bench/duel.py) says how much latency mcpgw adds when calls are spread out;
this says where, inside the gateway, that time is spent. It starts the floor (``floor-http``),
mcpgw in front of a stdio upstream on each wire (``mcpgw-http-stdio``: the 2026-07-28 wire the
gateway picks by default; ``mcpgw-http-stdio-handshake``: the 2025-11-25 handshake the peers speak)
and, unless ``--no-peer``, ``mcp-proxy``, and spreads their calls out exactly as the duel does
(``load.spread_out``). Each gateway runs under a probe (``python -m bench.stages probe``, the
gateway's own ``__main__`` behind a few wrapped functions) that stamps each call as it passes:

- ``arrived``: the request's bytes reach uvicorn's protocol (``serve._HttpTools.data_received``);
- ``admitted``: the app's front door starts on it (``FrontDoor.__call__``);
- ``handled``: the gateway's ``tools/call`` handler starts (``proxy._Handlers.call_tool``);
- ``sent``: the request is written to the upstream's stdin (``pipes.Writes.send``);
- ``returned``: the upstream's answer reaches the protocol of the child's stdout pipe;
- ``answered``: the handler is done (its ``Answer`` raised);
- ``written``: the HTTP answer is written to the socket (``serve._OneWritePerStep.flush``).

For each round it prints every target's added p50 (against the floor's, as the duel counts it) and,
per gateway, the median of each stretch between two stamps. ``sent`` to ``returned`` is the
upstream's time (and the pipes'), the rest is the gateway's. The stamps cost a few microseconds
per call; compare stretches with each other and across wires, not with the duel's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # `python bench/stages.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import duel  # noqa: E402
from bench import run as bench_run  # noqa: E402

STAMPS = ("arrived", "admitted", "handled", "sent", "returned", "answered", "written")
OUT_ENV = "MCPGW_STAGES_OUT"  # where the probe writes its stamps (one file per gateway process)
PROBED = ("mcpgw-http-stdio", "mcpgw-http-stdio-handshake")
SETTLE_SECONDS = 10.0  # for a probe to write its stamps once told to


# ------------------------------------------------------------------------------------ the probe

def probe(argv: list[str]) -> None:
    """Run the gateway (``mcpgw ARGV``) with its calls stamped: SIGUSR1 starts a recording afresh,
    SIGUSR2 ends it and writes the stamps, as JSON ``[[stamp, nanoseconds], ...]``, to ``$OUT_ENV``."""
    import runpy
    import time

    from gateway import proxy, serve
    from gateway.security import front_door
    from gateway.upstreams import pipes

    if serve._HttpTools is None:
        raise SystemExit("bench.stages needs httptools (the gateway's HTTP protocol is stamped)")
    stamps: list[tuple[str, int]] = []
    recording = [False]

    def toggle(signum: int, frame: Any) -> None:
        recording[0] = signum == signal.SIGUSR1
        if recording[0]:
            stamps.clear()
        else:
            out = Path(os.environ[OUT_ENV])
            out.with_suffix(".part").write_text(json.dumps(stamps))
            out.with_suffix(".part").replace(out)  # whole or not there: the driver reads it when it appears

    def stamp(name: str) -> None:
        if recording[0]:
            stamps.append((name, time.perf_counter_ns()))

    def on_entry(owner: type, attr: str, name: str, when: Callable[..., bool] = lambda *a: True) -> None:
        original = getattr(owner, attr)

        def wrapped(self: Any, *args: Any) -> Any:
            if when(self, *args):
                stamp(name)
            return original(self, *args)
        setattr(owner, attr, wrapped)

    on_entry(serve._HttpTools, "data_received", "arrived")
    on_entry(serve._OneWritePerStep, "flush", "written", lambda self: self._held is not None)
    # the child's stdout (gateway/upstreams/spawn.py): the only stream of this gateway read through an
    # asyncio StreamReaderProtocol (uvicorn's and anyio's sockets have protocols of their own)
    on_entry(asyncio.StreamReaderProtocol, "data_received", "returned")
    door = front_door.FrontDoor.__call__

    async def admitted(self: Any, scope: Any, receive: Any, send: Any) -> None:  # an ASGI app's own signature
        stamp("admitted")
        await door(self, scope, receive, send)
    front_door.FrontDoor.__call__ = admitted
    call_tool, send_upstream = proxy._Handlers.call_tool, pipes.Writes.send

    async def handled(self: Any, ctx: Any, params: Any) -> Any:
        stamp("handled")
        try:
            return await call_tool(self, ctx, params)
        finally:
            stamp("answered")
    proxy._Handlers.call_tool = handled

    async def sent(self: Any, item: Any) -> None:
        stamp("sent")
        await send_upstream(self, item)
    pipes.Writes.send = sent

    signal.signal(signal.SIGUSR1, toggle)
    signal.signal(signal.SIGUSR2, toggle)
    sys.argv = ["mcpgw", *argv]
    runpy.run_module("gateway", run_name="__main__", alter_sys=True)


# ------------------------------------------------------------------------------------ reading stamps

def stretches(stamps: list[tuple[str, int]]) -> dict[str, float]:
    """The median of each stretch between consecutive stamps, in microseconds, over the calls that
    have every stamp once, in order (one call at a time per gateway: its stamps do not interleave);
    ``calls``: how many did."""
    calls, current = [], None
    for name, ns in stamps:
        if name == STAMPS[0]:
            current = {}
        if current is not None and name not in current:
            current[name] = ns
            if name == STAMPS[-1]:
                calls.append(current)
                current = None
    whole = [c for c in calls if list(c) == list(STAMPS)]
    out: dict[str, float] = {"calls": len(whole)}
    for a, b in zip(STAMPS, STAMPS[1:]):
        out[f"{a}>{b}"] = statistics.median(c[b] - c[a] for c in whole) / 1000 if whole else math.nan
    out["total"] = statistics.median(c[STAMPS[-1]] - c[STAMPS[0]] for c in whole) / 1000 if whole else math.nan
    return out


async def _stamps_of(pid: int, path: Path) -> list[tuple[str, int]]:
    os.kill(pid, signal.SIGUSR2)
    deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
    while not path.exists():
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"the probe of gateway {pid} wrote no stamps to {path}")
        await asyncio.sleep(0.05)
    stamps = [(name, ns) for name, ns in json.loads(path.read_text())]
    path.unlink()
    return stamps


# ------------------------------------------------------------------------------------ the run

async def measure(calls: int, rounds: int, peer: bool, warmup: int = 300) -> list[dict[str, Any]]:
    """Every round's added p50 per target and each probed gateway's stretches (see the docstring)."""
    by_name = {t.name: t for t in bench_run.targets()}
    names = ["floor-http", *PROBED, *(["mcp-proxy-http-stdio"] if peer else [])]
    if peer and "error" in (prepared := (await bench_run.prepare_peers(["mcp-proxy"]))["mcp-proxy"]):
        raise RuntimeError(f"mcp-proxy: {prepared['error']} (--no-peer leaves it out)")
    found = []
    with tempfile.TemporaryDirectory() as workdir:
        launcher = Path(workdir) / "mcpgw-probed"
        launcher.write_text(f'#!/bin/sh\n{OUT_ENV}="{workdir}/stamps-$$.json" PYTHONPATH="{bench_run.ROOT}" '
                            f'exec "{sys.executable}" -m bench.stages probe "$@"\n', encoding="utf-8")
        launcher.chmod(0o755)
        bench = bench_run.Bench(Path(workdir), bench_run.Settings(), mcpgw=str(launcher))
        blocks = duel.Blocks(warmup=warmup, spread=calls, max_seconds=300)
        async with AsyncExitStack() as stack:
            contenders = await duel._start_all(stack, bench, [by_name[n] for n in names], "raw", blocks)
            probed = {c.target.name: c.pids["front"] for c in contenders if c.target.name in PROBED}
            for number in range(rounds):
                for pid in probed.values():
                    os.kill(pid, signal.SIGUSR1)
                figures = await duel._spread(contenders, blocks)  # as the duel does it, sessions included
                floor = figures[0].get("p50_ms", math.nan)  # none: every call failed, counted in errors
                report: dict[str, Any] = {"added_p50_ms": {n: f.get("p50_ms", math.nan) - floor
                                                           for n, f in zip(names[1:], figures[1:])},
                                          "errors": {n: f["errors"] + f["mismatched"] for n, f in zip(names, figures)}}
                for name, pid in probed.items():
                    report[name] = stretches(await _stamps_of(pid, Path(workdir) / f"stamps-{pid}.json"))
                found.append(report)
                _print(number, report)
    return found


def _print(number: int, report: dict[str, Any]) -> None:
    added = report["added_p50_ms"]
    print(f"round {number + 1}: added p50 " + ", ".join(f"{n} +{v:.3f} ms" for n, v in added.items())
          + (f"; errors {report['errors']}" if any(report["errors"].values()) else ""))
    for name in PROBED:
        parts = report[name]
        print(f"  {name} ({parts['calls']} calls), microseconds: "
              + " ".join(f"{k} {v:.0f}" for k, v in parts.items() if k != "calls"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe"]:
        probe(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="calls on each target per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-peer", action="store_true", help="leave mcp-proxy out (no venv needed)")
    args = parser.parse_args(argv)
    asyncio.run(measure(args.calls, args.rounds, not args.no_peer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
