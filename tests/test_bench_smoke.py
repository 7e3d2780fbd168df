"""The benchmarks run (figures are measured by `bench/`, never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_reload_benchmark_runs_and_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "reload.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "reload.py"), "--rounds", "1", "--only", "small",
                    "--out", str(out)], check=True, timeout=120, capture_output=True)
    figures = json.loads(out.read_text())["reload"]["small"]
    assert len(figures["samples_ms"]) == 1 and figures["median_ms"] > 0


def test_proxy_benchmark_quick_run_checks_every_reply(tmp_path: Path) -> None:
    """`python -m bench.run --quick`: every target and the tools/list scenarios run, every reply is
    the one its session asked for, nothing fails (how fast is for bench/, not for tests)."""
    out = tmp_path / "proxy.json"
    run = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(out)], cwd=ROOT,
                         timeout=110, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    targets = report["targets"]
    assert set(targets) == {"floor-stdio", "floor-http", "mcpgw-stdio-stdio", "mcpgw-http-stdio", "mcpgw-http-http"}
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
