"""Where a process's CPU time goes, from a py-spy ``raw`` (collapsed stacks) profile.

    python bench/hotspots.py PROFILE.txt [--top 20]

``bench/run.py --profile`` records one with ``py-spy record --format raw --function`` on the gateway
during the 64-session phase and summarizes it here: the functions that spend the most time
themselves (self), the ones under which the most time is spent (inclusive, each counted once per
stack), gateway functions alone (inclusive), and self time by top-level package.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse(text: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def package(frame: str) -> str:
    found = _FRAME.match(frame)
    if not found:
        return "?"
    path = found.group("file").replace("\\", "/")
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    parts = [part for part in path.split("/") if part]
    if not parts:
        return "?"
    if len(parts) == 1:  # a top-level module (asyncio's files show as `asyncio/...`, a script as `x.py`)
        return parts[0].removesuffix(".py")
    return parts[0]


# Where a sample's time belongs: the first owner (in this order) with a frame in the stack, so
# shared utilities (anyio, pydantic, asyncio) count for the layer that called them, and a deeper
# layer wins over the one it runs under (the upstream leg over the handler that awaits it).
OWNERS: list[tuple[str, tuple[str, ...]]] = [
    ("upstream leg (SDK client session and transport, gateway upstreams)", ("(mcp/client/", "(gateway/upstreams/")),
    ("gateway handler (routing, records, forwarding)", ("(gateway/proxy.py", "(gateway/forwarding.py",
                                                        "(gateway/calls.py", "(gateway/caller.py",
                                                        "(gateway/sessions.py", "(gateway/observability.py",
                                                        "(gateway/security/arguments.py", "(gateway/security/limits.py")),
    ("SDK server dispatch (runner, middleware, server session)", ("(mcp/server/runner.py", "(mcp/server/_otel.py",
                                                                  "(mcp/server/lowlevel/", "(mcp/server/session.py",
                                                                  "(mcp/server/connection.py", "(mcp/server/context.py")),
    ("HTTP front (uvicorn, h11, starlette, SSE, SDK transport, front door)",
     ("(uvicorn/", "(h11/", "(starlette/", "(sse_starlette/", "(mcp/server/streamable_http",
      "(mcp/server/transport_security.py", "(gateway/http.py", "(gateway/security/", "(gateway/event_store.py")),
    ("stdio front (gateway's stdin thread, SDK stdio server)", ("(mcp/server/stdio.py", "(gateway/serve.py")),
    ("SDK JSON-RPC dispatcher loops and streams (mcp/shared, both sides)", ("(mcp/shared/",)),
    ("worker threads (anyio to_thread / from_thread)", ("WorkerThread.run", "(threading.py")),
]
OTHER = "event loop and other (asyncio scheduling, selectors, unattributed)"


def owner(frames: list[str]) -> str:
    for name, markers in OWNERS:
        if any(marker in frame for frame in frames for marker in markers):
            return name
    return OTHER


def summarize(text: str, top: int = 20) -> dict[str, Any]:
    stacks = parse(text)
    total = sum(count for _, count in stacks)
    if not total:
        return {"samples": 0}
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    by_owner: Counter[str] = Counter()
    for frames, count in stacks:
        by_owner[owner(frames)] += count
        leaf = frames[-1]
        own[leaf] += count
        by_package[package(leaf)] += count
        for frame in set(frames):
            under[frame] += count

    def share(counter: Counter[str], keep: Any = None) -> list[tuple[str, float]]:
        items = [(frame, count) for frame, count in counter.most_common() if keep is None or keep(frame)]
        return [(frame, round(100 * count / total, 1)) for frame, count in items[:top]]

    return {
        "samples": total,
        "by_owner_pct": share(by_owner),
        "self_pct": share(own),
        "inclusive_pct": share(under),
        "gateway_inclusive_pct": share(under, lambda frame: "(gateway/" in frame),
        "self_by_package_pct": share(by_package),
    }


def render(summary: dict[str, Any]) -> str:
    lines = [f"{summary.get('samples', 0)} samples"]
    for key, title in (("by_owner_pct", "time by layer"),
                       ("self_by_package_pct", "self time by package"), ("self_pct", "self time"),
                       ("inclusive_pct", "inclusive"), ("gateway_inclusive_pct", "gateway functions, inclusive")):
        lines.append(f"\n{title}:")
        lines += [f"  {pct:5.1f}%  {frame}" for frame, pct in summary.get(key, [])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    summary = summarize(args.profile.read_text(errors="replace"), args.top)
    print(json.dumps(summary, indent=2) if args.json else render(summary))


if __name__ == "__main__":
    main()
