"""The benchmarks run (figures are measured by `bench/`, never asserted here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_reload_benchmark_runs_and_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "reload.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "reload.py"), "--rounds", "1", "--only", "small",
                    "--out", str(out)], check=True, timeout=120, capture_output=True)
    figures = json.loads(out.read_text())["reload"]["small"]
    assert len(figures["samples_ms"]) == 1 and figures["median_ms"] > 0


def test_ab_comparison_runs_both_checkouts_in_turn() -> None:
    """`python -m bench.ab OTHER`: here against itself, one short round each; both sides measured,
    every answer checked (a wrong or failed one stops the run)."""
    run = subprocess.run([sys.executable, "-m", "bench.ab", str(ROOT), "--rounds", "1", "--calls", "60",
                          "--sessions", "4"], cwd=ROOT, timeout=110, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["a", "b"], run.stdout
    assert all("gateway CPU/call" in line and "calls/s" in line for line in lines)


@pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind is not installed")
def test_ab_instruction_count_runs_both_checkouts_under_callgrind() -> None:
    """`python -m bench.ab OTHER --instructions`: each side's gateway counted under callgrind, the
    count taken after the warm-up, every answer checked."""
    run = subprocess.run([sys.executable, "-m", "bench.ab", str(ROOT), "--instructions", "--calls", "20",
                          "--sessions", "2"], cwd=ROOT, timeout=170, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["a", "b", "b"], run.stdout
    counts = [float(line.split("): ")[1].split(" M ")[0]) for line in lines[:2]]
    assert all(count > 0.1 for count in counts), run.stdout  # a gateway's call is millions, not nothing


def test_proxy_benchmark_quick_run_checks_every_reply(tmp_path: Path) -> None:
    """`python -m bench.run --quick`: every target and the tools/list scenarios run, every reply is
    the one its session asked for, nothing fails (how fast is for bench/, not for tests)."""
    out = tmp_path / "proxy.json"
    run = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(out)], cwd=ROOT,
                         timeout=110, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    targets = report["targets"]
    assert set(targets) == {"floor-stdio", "floor-http", "mcpgw-stdio-stdio", "mcpgw-http-stdio",
                            "mcpgw-http-stdio-handshake", "mcpgw-http-http"}
    for name, figures in targets.items():
        assert "error" not in figures, (name, figures)
        assert (figures["errors"], figures["mismatched"]) == (0, 0), (name, figures)
        for phase in ("sequential", "throughput_16", "throughput_64"):
            assert figures[phase]["ok"] > 0 and figures[phase]["ok"] == figures[phase]["calls"], (name, phase)
        assert figures["cpu_ms_per_call"]["front"] >= 0
    assert targets["mcpgw-http-stdio"]["idle_sessions"]["sessions"] == report["settings"]["idle_sessions"]
    lists = report["tools_list"]
    assert len(lists) == 2 and all(f["errors"] == 0 and f["ok"] > 0 for f in lists.values()), lists
    assert lists["list-mcpgw-3x5"]["tools"] == [15]
    assert "mcpgw-http-stdio" in run.stdout  # the table was printed
    assert report["peers"] == {} and report["ratios"] == report["ratios_same_wire"] == {}  # --quick: no peers


def test_load_client_catches_a_reply_meant_for_another_session() -> None:
    """A proxy that hands one session another's answer is counted as mismatched, not as success."""
    import asyncio

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench import load

    class CrossedWires:
        """Answers each call with the previous call's payload (as a proxy mixing sessions up would)."""

        def __init__(self) -> None:
            self.last = "nobody's"

        async def request(self, method: str, params: dict | None = None) -> dict:
            text, self.last = self.last, params["arguments"]["text"]  # type: ignore[index]
            return {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": text}]}}

        def disconnect(self) -> None:
            pass

        async def close(self) -> None:
            pass

    async def opener() -> CrossedWires:
        return CrossedWires()

    figures = asyncio.run(load.sequential(opener, "echo", 5, warmup=0))  # type: ignore[arg-type]
    assert (figures["ok"], figures["mismatched"], figures["errors"]) == (0, 5, 0)

    class Failing(CrossedWires):
        """Answers each call with the proxy's own error result (an upstream that went away)."""

        async def request(self, method: str, params: dict | None = None) -> dict:
            return {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "server 'up' closed "
                                                                       "the connection"}], "isError": True}}

    async def failing() -> Failing:
        return Failing()

    figures = asyncio.run(load.sequential(failing, "echo", 3, warmup=0))  # type: ignore[arg-type]
    assert (figures["ok"], figures["mismatched"], figures["errors"]) == (0, 0, 3)  # failures, not crossed wires


def _bench_run():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench import run

    return run


def test_peers_are_in_a_full_run_only() -> None:
    """A full run has the peers (and installs what it needs for them); --quick and --no-peers do not."""
    run = _bench_run()

    def plan(*argv: str) -> tuple[list[str], list[str]]:
        args = run.argparse.Namespace(only=None, quick=False, no_peers=False)
        for flag in argv:
            setattr(args, flag, True)
        chosen = run.choose(args)
        return [t.name for t in chosen if t.peer], run.wanted_peers(args, chosen, with_lists=True)

    assert plan() == (["mcp-proxy-http-stdio", "fastmcp-http-stdio"], ["mcp-proxy", "fastmcp"])
    assert plan("quick") == ([], [])
    assert plan("no_peers") == ([], [])


def test_a_peer_that_cannot_be_installed_is_reported_and_does_not_fail_the_run(tmp_path: Path, monkeypatch,
                                                                               capsys) -> None:
    run = _bench_run()

    async def no_network(peer):
        raise RuntimeError("pip: no network")

    monkeypatch.setattr(run.peers, "ensure", no_network)
    out = tmp_path / "proxy.json"
    code = run.main(["--quick", "--only", "floor-http", "mcp-proxy-http-stdio", "--idle-sessions", "5",
                     "--out", str(out)])
    report = json.loads(out.read_text())
    assert code == 0, report
    assert report["peers"]["mcp-proxy"]["error"] == "RuntimeError: pip: no network"
    assert report["targets"]["mcp-proxy-http-stdio"]["error"] == "not installed: RuntimeError: pip: no network"
    assert report["targets"]["floor-http"]["errors"] == 0
    assert "failed: not installed: RuntimeError: pip: no network" in capsys.readouterr().out


def _figures(added_p50: float, calls: float, cpu: float, errors: int = 0, mismatched: int = 0,
             peer: str | None = None) -> dict:
    figures = {"proxy": True, "errors": errors, "mismatched": mismatched, "added_p50_ms": added_p50,
               "sequential": {"p99_ms": added_p50 + 1}, "throughput_16": {"calls_per_s": calls},
               "throughput_64": {"calls_per_s": calls}, "cpu_ms_per_call": {"front": cpu},
               "idle_sessions": {"sessions": 1000, "kb_per_session": 30.0}}
    return {**figures, "peer": peer} if peer else figures


def test_peer_errors_are_reported_but_only_mcpgw_and_floors_fail_the_run() -> None:
    run = _bench_run()
    report = {"targets": {"mcp-proxy-http-stdio": _figures(1, 100, 1, errors=3, mismatched=2, peer="mcp-proxy")},
              "tools_list": {"list-mcp-proxy-1x1000": {"peer": "mcp-proxy", "errors": 1}}}
    assert run.problems(report) == 0
    report["targets"]["mcpgw-http-stdio"] = _figures(1, 100, 1, mismatched=1)
    assert run.problems(report) == 1


def test_ratios_hold_mcpgw_against_the_fastest_peer_without_errors() -> None:
    run = _bench_run()
    results = {
        "mcpgw-http-stdio": _figures(1.0, 600, 0.4),
        "fast-but-mixing": _figures(0.1, 900, 0.1, mismatched=1, peer="a"),  # never the standard to meet
        "mcp-proxy-http-stdio": _figures(2.0, 500, 1.0, peer="mcp-proxy"),
        "fastmcp-http-stdio": _figures(4.0, 200, 5.0, peer="fastmcp"),
    }
    lists = {"list-mcpgw-20x50": {"p50_ms": 10.0, "expected_tools": 1000},
             "list-mcp-proxy-1x1000": {"peer": "mcp-proxy", "p50_ms": 30.0, "expected_tools": 1000, "label": "x"}}
    found = run.ratios(results, lists)
    assert found["best_peer"] == "mcp-proxy-http-stdio" and found["left_out"] == ["fast-but-mixing"]
    verdicts = {check["what"].split(" (")[0]: (check["ratio"], check["met"]) for check in found["checks"]}
    assert verdicts["added p50"] == (0.5, True)
    assert verdicts["calls/s, 16 sessions"] == (1.2, True)
    assert verdicts["proxy CPU per call"] == (0.4, True)
    assert verdicts["p99"] == (round(2 / 3, 3), True)
    assert verdicts["memory per idle session"] == (None, True)
    assert verdicts["tools/list of 1000 tools, p50"] == (round(1 / 3, 3), True)
    assert set(found["by_peer"]) == {"mcp-proxy-http-stdio", "fastmcp-http-stdio"}
    assert "MISSED" not in run.render_ratios(found)
    results["mcpgw-http-stdio"]["cpu_ms_per_call"]["front"] = 0.8
    assert "MISSED" in run.render_ratios(run.ratios(results, lists))


def test_rounds_give_medians_and_each_ratio_is_the_median_of_the_rounds_ratios() -> None:
    """`--rounds N`: the machine's speed drifts between rounds, so mcpgw is held against the peer
    round by round (they ran minutes apart at most) and the ratios' median decides."""
    run = _bench_run()
    rounds = [{"mcpgw-http-stdio": _figures(1.0, 600, 0.4), "mcp-proxy-http-stdio": _figures(2.0, 500, 1.0, peer="p")},
              {"mcpgw-http-stdio": _figures(2.0, 300, 0.8), "mcp-proxy-http-stdio": _figures(4.0, 250, 2.0, peer="p")},
              {"mcpgw-http-stdio": _figures(1.5, 500, 0.9, mismatched=1),
               "mcp-proxy-http-stdio": _figures(1.0, 600, 0.6, peer="p")}]
    merged = run.median_of_rounds(rounds)
    mine = merged["mcpgw-http-stdio"]
    assert (mine["added_p50_ms"], mine["throughput_16"]["calls_per_s"], mine["cpu_ms_per_call"]["front"]) == \
        (1.5, 500, 0.8)
    assert mine["mismatched"] == 1  # one in any round counts
    found = run.ratios(merged, {}, rounds)
    verdicts = {check["what"]: check for check in found["checks"]}
    cpu = verdicts["proxy CPU per call"]
    assert cpu["rounds"] == [0.4, 0.4, 1.5] and cpu["ratio"] == 0.4 and cpu["met"]  # not 0.8 / 1.0 of the medians
    assert verdicts["added p50"]["ratio"] == 0.5 and verdicts["added p50"]["met"]
    failed = [{**rounds[0], "mcpgw-http-stdio": run.failed("mcpgw", "boom")}, rounds[1]]
    assert run.median_of_rounds(failed)["mcpgw-http-stdio"]["error"] == "boom"


def test_chart_shows_the_head_to_head_ratios_beside_the_rounds(tmp_path: Path) -> None:
    """The goals are judged head to head: with that report, the chart has a third panel for it."""
    pytest.importorskip("matplotlib")
    run = _bench_run()
    results = {"mcpgw-http-stdio": _figures(1.0, 600, 0.4), "mcp-proxy-http-stdio": _figures(2.0, 500, 1.0, peer="p")}
    for figures in results.values():
        figures["added_p99_ms"] = 2.0
    head_to_head = {**run.ratios(results, {}), "rounds": [results], "targets": {"peer": "mcp-proxy-http-stdio"}}
    widths = {}
    for name, report in (("rounds", None), ("both", head_to_head)):
        assert run.chart(results, tmp_path / f"{name}.png", {"cpus": 2}, report)
        widths[name] = int.from_bytes((tmp_path / f"{name}.png").read_bytes()[16:20], "big")  # PNG IHDR width
    assert widths == {"rounds": 1200, "both": 1800}


def test_head_to_head_runs_all_targets_at_once_and_gives_median_ratios(tmp_path: Path) -> None:
    """bench/duel.py: the floor, mcpgw and a peer running at once, measured in alternating blocks;
    the report is `ratios`' shape (so `render_ratios` prints it) with every round's figures. The
    2025-11-25-handshake mcpgw stands in for the peer (no venv needed); tiny blocks, no speed asserted."""
    import asyncio
    import math

    run = _bench_run()
    from bench import duel

    by_name = {target.name: target for target in run.targets()}
    floor, gateway, stand_in = (by_name[name] for name in ("floor-http", "mcpgw-http-stdio",
                                                           "mcpgw-http-stdio-handshake"))
    blocks = duel.Blocks(rounds=2, sequential=20, spread=20, calls_16=50, calls_64=50, warmup=20, max_seconds=10)
    bench = run.Bench(tmp_path, run.Settings.quick())
    report = asyncio.run(duel.duel(bench, "raw", floor, gateway, stand_in, blocks))

    assert (report["gateway"], report["best_peer"]) == ("mcpgw-http-stdio", "mcpgw-http-stdio-handshake")
    assert report["targets"] == {"floor": "floor-http", "gateway": "mcpgw-http-stdio",
                                 "peer": "mcpgw-http-stdio-handshake"}
    assert len(report["rounds"]) == 2 and report["blocks"]["rounds"] == 2
    for found in report["rounds"]:
        assert set(found) == {"floor-http", "mcpgw-http-stdio", "mcpgw-http-stdio-handshake"}
        assert "throughput_16" not in found["floor-http"]  # the floor takes part in the sequential blocks only
        for name, figures in found.items():
            assert (figures["errors"], figures["mismatched"]) == (0, 0), (name, figures)
            assert figures["spread"]["ok"] == 20, (name, figures)
    medians = report["medians"]
    assert all(medians[name]["cpu_ms_per_call"]["front"] > 0 for name in ("mcpgw-http-stdio",
                                                                          "mcpgw-http-stdio-handshake"))
    checks = {check["what"]: check for check in report["checks"]}
    assert list(checks) == ["added p50", "p99", "calls/s, 16 sessions", "calls/s, 64 sessions", "proxy CPU per call",
                            "added p50, calls spread out"]
    for what, check in checks.items():
        if what.startswith("added p50"):
            # In blocks this small, on a machine this busy, a median can fall to the floor's or under
            # it. The gateway's is then a negative figure; the peer's leaves no ratio to take, in a
            # round or over all, and the report says so (n/a) in place of inventing one.
            assert len(check.get("rounds", [])) <= 2, check
            assert (check["ratio"] is None) == (check["peer"] <= 0) == (check["met"] is None), check
            continue
        assert math.isfinite(check["ratio"]) and check["ratio"] > 0, (what, check)
        assert len(check["rounds"]) == 2 and check["met"] in (True, False), (what, check)
    assert run.problems({"targets": {}, "tools_list": {}, "head_to_head": report}) == 0
    printed = run.render_head_to_head(report)
    assert printed.startswith("Head to head, in the same phase") and "proxy CPU per call, by round: " in printed


def test_spread_out_calls_give_each_target_every_other_as_predecessor() -> None:
    """bench/load.py ``spread_out``: the calls go one on each target in turn, each target's
    answers checked; the order is shuffled every turn, so each target's calls follow every
    other target's (a fixed order would always put the same neighbour before it)."""
    import asyncio

    from bench import load

    made: list[int] = []

    class Echo:
        def __init__(self, number: int) -> None:
            self.number = number

        async def request(self, method: str, params: dict) -> dict:
            made.append(self.number)
            text = params["arguments"]["text"] if self.number != 2 else "someone else's"
            return {"result": {"content": [{"type": "text", "text": text}]}}

    found = asyncio.run(load.spread_out([(Echo(n), "echo") for n in range(4)], calls=60))
    assert [f["calls"] for f in found] == [60] * 4 and [f["mismatched"] for f in found] == [0, 0, 60, 0]
    assert all(sorted(made[4 * i:4 * i + 4]) == [0, 1, 2, 3] for i in range(60))
    followed = {(a, b) for a, b in zip(made, made[1:]) if a != b}
    assert followed == {(a, b) for a in range(4) for b in range(4) if a != b}


def test_stages_stamp_every_call_of_each_gateway_at_every_stage(tmp_path: Path) -> None:
    """bench/stages.py: the gateways (on both wires) run under the probe, and every call of a
    round, spread out among the targets, is stamped at each stage in order, so each stretch has a
    median; the peer left out (no venv needed), a tiny round, no speed asserted."""
    import asyncio

    _bench_run()
    from bench import stages

    (report,) = asyncio.run(stages.measure(calls=10, rounds=1, peer=False, warmup=20))
    assert set(report["added_p50_ms"]) == set(stages.PROBED)
    assert not any(report["errors"].values()), report["errors"]
    for name in stages.PROBED:
        parts = report[name]
        assert parts.pop("calls") == 10, (name, parts)
        assert list(parts) == [f"{a}>{b}" for a, b in zip(stages.STAMPS, stages.STAMPS[1:])] + ["total"]
        assert all(value >= 0 for value in parts.values()) and parts["total"] > 0, (name, parts)
