"""Reload latency: from the config file being replaced to the new routing table serving.

    python bench/reload.py [--rounds 5] [--out bench/results/reload.json]

Runs the real gateway (``mcpgw serve --transport streamable-http``) on 127.0.0.1 and measures, for
each scenario, the time from ``os.replace`` of the file to ``/health`` reporting the next config
version (polled every 2 ms). The watcher's debounce is part of what is measured, because users
wait for it too. Scenarios:

- small: 2 stdio servers; an edit that keeps every connection (a prefix change);
- small-restart: 2 stdio servers; an edit that restarts one (its arguments change);
- 100-servers: 100 Streamable HTTP servers (sessions on one local upstream process); one prefix changes;
- 100-servers-restart: the same; one server's headers change, so that one reconnects.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "upstream.py"
MCPGW = str(Path(sys.executable).with_name("mcpgw"))


def stdio(name: str, *extra: str) -> dict:
    return {"command": sys.executable, "args": [str(FIXTURE), "--name", name, *extra]}


def write(path: Path, servers: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"version": 1, "servers": servers}), encoding="utf-8")
    os.replace(tmp, path)


def wait_for(predicate, timeout: float = 120.0, poll: float = 0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError("gave up waiting")


class Gateway:
    def __init__(self, config: Path) -> None:
        self.log = config.with_suffix(".log")
        self.process = subprocess.Popen([MCPGW, "serve", str(config), "--transport", "streamable-http", "--port", "0"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))
        found = wait_for(lambda: re.search(r"listening on (http://\S+)/mcp", self.log.read_text()), poll=0.05)
        self.health = found.group(1) + "/health"
        self.http = httpx2.Client()

    def version(self) -> int:
        return self.http.get(self.health).json()["config"]["version"]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def measure(config: Path, variants: list[dict], rounds: int) -> list[float]:
    """Alternate between two server sets; each replace is one measured reload."""
    write(config, variants[0])
    gateway = Gateway(config)
    try:
        samples = []
        for i in range(rounds):
            before = gateway.version()
            started = time.perf_counter()
            write(config, variants[(i + 1) % 2])
            wait_for(lambda: gateway.version() > before)
            samples.append((time.perf_counter() - started) * 1000)
        return samples
    finally:
        gateway.close()


def http_upstream() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, str(FIXTURE), "--name", "remote", "--transport", "http"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()  # type: ignore[union-attr]
    return process, line.split()[1]


def scenarios(url: str) -> dict[str, list[dict]]:
    many = {f"s{i:03d}": {"url": url} for i in range(100)}
    return {
        "small": [{"a": stdio("a"), "b": stdio("b")}, {"a": stdio("a"), "b": {**stdio("b"), "prefix": "bb"}}],
        "small-restart": [{"a": stdio("a"), "b": stdio("b")}, {"a": stdio("a"), "b": stdio("b", "--tool-set", "tricky")}],
        "100-servers": [many, {**many, "s042": {"url": url, "prefix": "changed"}}],
        "100-servers-restart": [many, {**many, "s042": {"url": url, "headers": {"X-Variant": "2"}}}],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reload.json")
    parser.add_argument("--only", nargs="*", help="run only these scenarios")
    args = parser.parse_args()
    upstream, url = http_upstream()
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, variants in scenarios(url).items():
                if args.only and name not in args.only:
                    continue
                samples = measure(Path(tmp) / f"{name}.yaml", variants, args.rounds)
                results[name] = {"median_ms": round(statistics.median(samples), 1), "max_ms": round(max(samples), 1),
                                 "samples_ms": [round(s, 1) for s in samples]}
                print(f"{name:22} median {results[name]['median_ms']:8.1f} ms   max {results[name]['max_ms']:8.1f} ms")
    finally:
        upstream.terminate()
        upstream.wait(timeout=30)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"reload": results, "rounds": args.rounds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
