"""Head to head: mcpgw and the peer measured in the same phase of the machine.

``python -m bench.run`` runs this after its ordinary rounds (``--duel-blocks N``, default 10; 0 or
``--quick`` leaves it out). The ordinary rounds measure one target after another, minutes apart:
on a machine whose speed drifts by ±30% within seconds to minutes, mcpgw and the peer land in
different phases, and their ratios swing from run to run with the same code. Here the floor, mcpgw
and the peer are all started at once and kept running, and each round measures them side by side:

- first, the three's calls spread out (``load.spread_out``): one call on each in turn, in an
  order shuffled every turn, so that each process sleeps between its calls as it does between an
  assistant's, and all three meet the machine in the same phase, to the call. The added p50 of
  this colder regime ("calls spread out") is its own check: it holds to within a few hundredths
  from round to round, where the blocks' moves by tenths;
- the floor: a block of sequential calls (its p50 is what the others' added p50 is counted from);
- mcpgw and the peer, in turn (which one goes first alternates from round to round, so neither
  always runs right after the floor or right after the other's load): a block of sequential calls
  (p50, p99), a block with 16 sessions and one with 64 (calls/s), with the CPU time of the proxy
  and of the upstream behind it read from /proc before and after each block.

Every round gives its own ratios, mcpgw over the peer (the CPU per call of the 16- and 64-session
blocks taken together: their CPU over their calls); the report holds the median of each ratio
over the rounds, judged by ``bench.run.ratios`` against the issue's goals, like the ordinary
ratios, with every round's figures. Every answer is checked by bench/load.py: errors and
mismatches are counted per target, and ``bench.run.problems`` fails the run for the floor's or
mcpgw's, never for the peer's.
"""

from __future__ import annotations

import asyncio
import sys
import time
from contextlib import AsyncExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Callable, Iterator

from bench import load
from bench import run  # under `python -m bench.run` this is that module itself (see bench/run.py)


@dataclass(frozen=True)
class Blocks:
    """How many rounds, and how big each block of a round is (calls; each block also stops by
    itself after ``max_seconds``)."""

    rounds: int = 10
    sequential: int = 300
    spread: int = 300  # calls on each target, spread out (load.spread_out)
    calls_16: int = 1500
    calls_64: int = 2000
    warmup: int = 1000  # calls with 16 sessions per target before the first round
    max_seconds: float = 20.0


class DuelFailed(RuntimeError):
    """A target that could not be started or measured, and which one: a peer's failure is
    reported, a floor's or mcpgw's fails the run."""

    def __init__(self, target: run.Target, cause: BaseException) -> None:
        super().__init__(f"{target.name}: {type(cause).__name__}: {cause}")
        self.target = target


@dataclass
class Contender:
    """A target running for the whole duel: how to open sessions on it and whose CPU to read."""

    target: run.Target
    opener: load.Opener
    tool: str
    pids: dict[str, int | None]  # "front": the process the client talks to; "upstream": the one behind it


async def duel(bench: run.Bench, client: str, floor: run.Target, gateway: run.Target, peer: run.Target,
               blocks: Blocks = Blocks()) -> dict[str, Any]:
    """The floor, ``gateway`` (mcpgw) and ``peer`` all running at once, measured in alternating
    blocks for ``blocks.rounds`` rounds: the report (``bench.run.ratios``' shape: ``gateway``,
    ``best_peer``, ``checks``... each ratio the median of the rounds' own ratios) with the rounds'
    figures (``rounds``), their medians (``medians``) and the block sizes."""
    if {gateway.floor, peer.floor} != {floor.name}:
        raise ValueError(f"{gateway.name} and {peer.name} are not both compared with {floor.name}")
    started = time.perf_counter()
    async with AsyncExitStack() as stack:
        base, *pair = await _start_all(stack, bench, [floor, gateway, peer], client, blocks)
        rounds = []
        for number in range(blocks.rounds):
            began = time.perf_counter()
            order = pair if number % 2 == 0 else pair[::-1]
            found = await _round(base, order, blocks)
            run.compare(found)  # added latency, against this round's floor
            rounds.append(found)
            _log_round(number, blocks.rounds, found, gateway.name, peer.name, time.perf_counter() - began)
    report = _summarize(rounds, gateway.name, peer.name)
    report.update(targets={"floor": floor.name, "gateway": gateway.name, "peer": peer.name}, blocks=asdict(blocks),
                  elapsed_s=round(time.perf_counter() - started, 1))
    return report


@contextmanager
def _blaming(target: run.Target) -> Iterator[None]:
    """A failure inside, told as ``target``'s."""
    try:
        yield
    except run.FAILURES as exc:
        raise DuelFailed(target, exc) from exc


async def _start_all(stack: AsyncExitStack, bench: run.Bench, targets: list[run.Target], client: str,
                     blocks: Blocks) -> list[Contender]:
    """Every target started and warmed up together (starting one after the other takes twice as
    long); if one fails, the others are cancelled, what was started is stopped with ``stack``, and
    the failure (a ``DuelFailed``) is raised as it is, not in an exception group."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_start(stack, bench, target, client, blocks)) for target in targets]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0]
    return [task.result() for task in tasks]


async def _start(stack: AsyncExitStack, bench: run.Bench, target: run.Target, client: str, blocks: Blocks
                 ) -> Contender:
    """``target`` started (stopped when ``stack`` closes), its upstream found, warmed up."""
    with _blaming(target):
        running, opener, tool, _ = await stack.enter_async_context(run._serving(bench, target, client))
        if running.upstream_pid is None and target.proxy:
            running.upstream_pid = run.upstream_child(running.front_pid)
        for proc in running.procs:
            proc.adopt_children()
        await load.throughput(opener, tool, 16, blocks.warmup, blocks.max_seconds)
    return Contender(target, opener, tool,
                     {"front": running.front_pid, "upstream": running.upstream_pid if target.proxy else None})


async def _round(base: Contender, order: list[Contender], blocks: Blocks) -> dict[str, Any]:
    """One round: the calls of all three spread out, the floor's sequential block, then each of
    ``order`` in full. Figures per target, shaped like ``bench.run.measure_target``'s (added
    latency left to ``bench.run.compare``), with the spread-out calls' as ``spread``."""
    spread = await _spread([base, *order], blocks)
    found = {base.target.name: _figures(base.target, {**await _sequential(base, blocks), "spread": spread[0]})}
    for contender, spread_out in zip(order, spread[1:]):
        phases = await _sequential(contender, blocks)
        phases["spread"] = spread_out
        for sessions, calls in ((16, blocks.calls_16), (64, blocks.calls_64)):
            phases[f"throughput_{sessions}"] = await _loaded(contender, sessions, calls, blocks)
        found[contender.target.name] = _figures(contender.target, phases)
    return found


async def _spread(contenders: list[Contender], blocks: Blocks) -> list[dict[str, Any]]:
    """The contenders' sequential calls spread out, one on each in turn (``load.spread_out``)."""
    async with AsyncExitStack() as stack:
        sessions = []
        for contender in contenders:
            with _blaming(contender.target):
                session = await contender.opener()
            stack.push_async_callback(session.close)
            sessions.append((session, contender.tool))
        return await load.spread_out(sessions, blocks.spread, max_seconds=blocks.max_seconds)


async def _loaded(contender: Contender, sessions: int, calls: int, blocks: Blocks) -> dict[str, Any]:
    return await _metered(contender, lambda meter: load.throughput(
        contender.opener, contender.tool, sessions, calls, blocks.max_seconds, window=meter))


async def _sequential(contender: Contender, blocks: Blocks) -> dict[str, Any]:
    return {"sequential": await _metered(contender, lambda meter: load.sequential(
        contender.opener, contender.tool, blocks.sequential, max_seconds=blocks.max_seconds, window=meter))}


async def _metered(contender: Contender, block: Callable[[run._CpuMeter], Awaitable[dict[str, Any]]]
                   ) -> dict[str, Any]:
    """A block (``block(meter)``: ``bench.load``'s figures, its counted calls metered) with the CPU
    seconds its processes spent on those calls (``cpu_s``: the proxy's, the upstream's, this load
    client's) and per call."""
    with _blaming(contender.target):
        meter = run._CpuMeter(contender.pids)
        figures = await block(meter)
        spent = meter.spent()
    figures["cpu_s"] = {role: round(seconds, 4) for role, seconds in spent.items()}
    figures["cpu_ms_per_call"] = _per_call(spent, figures["calls"])
    return figures


def _per_call(seconds: dict[str, float], calls: int) -> dict[str, float | None]:
    return {role: round(spent * 1000 / calls, 3) if calls else None for role, spent in seconds.items()}


def _figures(target: run.Target, phases: dict[str, Any]) -> dict[str, Any]:
    """A target's figures in one round: its blocks, errors and mismatches summed over them, and
    (with throughput blocks) its CPU per call over the 16- and 64-session blocks together."""
    out: dict[str, Any] = {"label": target.label, "transport": target.transport, "proxy": target.proxy}
    if target.peer:
        out["peer"] = target.peer
    out.update(phases)
    loaded = [phases[key] for key in ("throughput_16", "throughput_64") if key in phases]
    if loaded:
        roles = loaded[0]["cpu_s"].keys()
        out["cpu_ms_per_call"] = _per_call({role: sum(block["cpu_s"][role] for block in loaded) for role in roles},
                                           sum(block["calls"] for block in loaded))
    out["errors"] = sum(phase["errors"] for phase in phases.values())
    out["mismatched"] = sum(phase["mismatched"] for phase in phases.values())
    return out


def _summarize(rounds: list[dict[str, Any]], gateway: str, peer: str) -> dict[str, Any]:
    """The rounds (their added latency already counted from their own floor) judged by
    ``bench.run.ratios``, each ratio the median of the rounds' ratios."""
    for found in rounds:
        found[peer].setdefault("peer", peer)  # what `ratios` holds mcpgw against (a stand-in too)
    medians = run.median_of_rounds(rounds)
    report = run.ratios(medians, {}, rounds, gateway)
    report.pop("by_peer", None)  # one peer: the same as `checks`
    report["rule"] = f"the same phase: {len(rounds)} rounds of alternating blocks, the median of their ratios"
    return {**report, "rounds": rounds, "medians": medians}


def _log_round(number: int, total: int, found: dict[str, Any], gateway: str, peer: str, seconds: float) -> None:
    """A line on stderr per round: its ratios, so a long duel shows how it goes."""
    checks = run._checks(found[gateway], found[peer], {})
    ratios = ", ".join(f"{check['what']} {check['ratio']:.2f}x" for check in checks if check["ratio"] is not None)
    print(f"head to head, round {number + 1}/{total} ({seconds:.1f} s): {ratios}", file=sys.stderr, flush=True)

