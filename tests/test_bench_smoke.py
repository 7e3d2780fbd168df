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
