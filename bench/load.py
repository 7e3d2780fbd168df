"""The benchmark's load client: JSON-RPC spoken directly, every reply checked, little CPU spent.

    python bench/load.py --url http://127.0.0.1:PORT/mcp [--tool echo] [--quick] [--client raw|httpx2]
    python bench/load.py --tool echo -- python bench/upstream.py      # a stdio server, started here

Over Streamable HTTP each session has a keep-alive HTTP/1.1 connection of its own: one
``initialize`` and ``notifications/initialized`` on the 2025-11-25 handshake, then requests
carrying its ``Mcp-Session-Id``; answers may be JSON or an SSE stream (the message answering the
request's id is the answer; one with another id is an error). Over stdio, JSON-RPC lines are written to the process's stdin and read from its
stdout; one process is one connection, so "sessions" there are lanes of concurrent requests on it.

Every ``tools/call`` of the echo tool carries a payload unique in the run (the session's tag and a
sequence number), and the answer must echo exactly that payload: an answer with another payload
(another session's, say) is counted as ``mismatched``; a transport failure, an HTTP status other
than 200, a JSON-RPC error or a result with ``isError`` as ``errors``. Every phase is bounded in
calls and in time and stops by itself.

The SDK's own client costs about 1 ms of CPU per call, which would dominate what a gateway adds on
a small machine, and so does httpx2 (about 1.1 ms per request here, headers and body in two
writes): the HTTP client here is a small asyncio protocol, one write per request, about 0.2 ms of
CPU per call. ``--client httpx2`` runs the same sessions over httpx2, to cross-check it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol, Sequence
from urllib.parse import urlsplit

import httpx2

PROTOCOL_VERSION = "2025-11-25"
REQUEST_TIMEOUT = 15.0  # seconds: one request; phases are bounded on top of that
CLIENT_INFO = {"name": "mcpgw-bench", "version": "1"}
_INITIALIZE = {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO}
_SESSION_TAGS = itertools.count(1)

OK, ERROR, MISMATCHED = "ok", "error", "mismatched"


class Failure(Exception):
    """A request that did not get a proper answer."""


class Session(Protocol):
    """What the phases need of a session, whatever carries it."""

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]: ...

    def disconnect(self) -> None: ...

    async def close(self) -> None: ...


# ------------------------------------------------------------------------------------ checking

@dataclass
class Tally:
    """Outcomes and latencies (seconds) of a phase."""

    calls: int = 0
    errors: int = 0
    mismatched: int = 0
    latencies: list[float] = field(default_factory=list)
    first_problems: list[str] = field(default_factory=list)

    def count(self, outcome: str, seconds: float, problem: str | None = None) -> None:
        self.calls += 1
        if outcome == OK:
            self.latencies.append(seconds)
        elif outcome == MISMATCHED:
            self.mismatched += 1
        else:
            self.errors += 1
        if problem and len(self.first_problems) < 5:
            self.first_problems.append(problem)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"calls": self.calls, "ok": len(self.latencies), "errors": self.errors,
                               "mismatched": self.mismatched}
        if self.latencies:
            ms = sorted(x * 1000 for x in self.latencies)
            out.update(p50_ms=round(percentile(ms, 50), 3), p90_ms=round(percentile(ms, 90), 3),
                       p99_ms=round(percentile(ms, 99), 3), mean_ms=round(statistics.fmean(ms), 3),
                       max_ms=round(ms[-1], 3))
        if self.first_problems:
            out["first_problems"] = self.first_problems
        return out


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def echo(session: Session, tool: str, text: str) -> tuple[str, str | None]:
    """One echo call: (outcome, problem)."""
    try:
        reply = await session.request("tools/call", {"name": tool, "arguments": {"text": text}})
    except Failure as exc:
        return ERROR, str(exc)
    except (httpx2.HTTPError, OSError, asyncio.TimeoutError, ValueError) as exc:
        return ERROR, f"{type(exc).__name__}: {exc}"
    result = reply.get("result")
    if not isinstance(result, dict):
        return ERROR, f"no result: {str(reply.get('error'))[:200]}"
    try:
        got = result["content"][0]["text"]
    except (KeyError, IndexError, TypeError):
        return ERROR, f"malformed result: {str(result)[:200]}"
    if result.get("isError"):  # the proxy's (or the tool's) own failure, not someone else's answer
        return ERROR, f"isError: {str(got)[:200]}"
    if got != text:
        # Someone else's payload (or garbage) in our answer: the worst thing a proxy can do.
        return MISMATCHED, f"sent {text!r}, got {str(got)[:80]!r}"
    return OK, None


# ------------------------------------------------------------------------------------ Streamable HTTP

class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: a request is one write, its response parsed as it arrives."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, dict[str, str], bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            try:
                response = _parse_response(self.buffer)
            except ValueError as exc:
                self.waiter.set_exception(Failure(f"bad HTTP response: {exc}"))
                return
            if response is not None:
                self.waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(Failure("connection closed by the server"))

    async def exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send one request, wait for its response. Any failure closes the connection, so a late
        answer can never be read as the answer to the next request."""
        assert self.transport is not None
        if self.closed:
            raise Failure("connection closed by the server")
        self.buffer.clear()  # nothing is owed to us between requests
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(request)
            response = await asyncio.wait_for(self.waiter, REQUEST_TIMEOUT)
        except BaseException:
            self.close()
            raise
        finally:
            self.waiter = None
        if response[1].get("connection", "").lower() == "close":
            self.close()
        return response

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _parse_response(buffer: bytearray) -> tuple[int, dict[str, str], bytes] | None:
    """A complete response at the start of ``buffer`` (removed from it), or None for "not yet"."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    start = end + 4
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, position = bytearray(), start
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    return None
                del buffer[:trailer_end + 4]
                return status, headers, bytes(body)
            if len(buffer) < line_end + 2 + size + 2:
                return None
            body += buffer[line_end + 2:line_end + 2 + size]
            position = line_end + 2 + size + 2
    length = int(headers.get("content-length", "0"))
    if len(buffer) < start + length:
        return None
    body = bytes(buffer[start:start + length])
    del buffer[:start + length]
    return status, headers, body


class HttpSession:
    """One Streamable HTTP session (2025-11-25 handshake) on a keep-alive connection of its own.

    The client is a few dozen lines over an asyncio protocol rather than httpx2: httpx2 spends
    about 1.1 ms of CPU per request on this kind of machine (and writes headers and body in two
    sends), five times what this does; ``HttpxSession`` keeps it available to cross-check.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"need an http:// URL, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = parts.path or "/"
        self.head = (f"POST {self.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                     "Accept: application/json, text/event-stream\r\n")
        self.ids = itertools.count(1)
        self.session_id: str | None = None
        self.connection: _Connection | None = None

    async def _connection(self) -> _Connection:
        if self.connection is None or self.connection.closed:
            _, self.connection = await asyncio.wait_for(
                asyncio.get_running_loop().create_connection(_Connection, self.host, self.port), REQUEST_TIMEOUT)
        return self.connection

    async def _post(self, message: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        body = json.dumps(message, separators=(",", ":")).encode()
        request = f"{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        return await (await self._connection()).exchange(request)

    async def open(self) -> "HttpSession":
        status, headers, body = await self._post({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                                  "params": _INITIALIZE})
        reply = _answer(status, headers, body, 0)
        if "result" not in reply:
            raise Failure(f"initialize refused: {reply.get('error')}")
        self.session_id = headers.get("mcp-session-id")
        version = reply["result"].get("protocolVersion", PROTOCOL_VERSION)
        session = f"Mcp-Session-Id: {self.session_id}\r\n" if self.session_id else ""
        self.head += f"{session}MCP-Protocol-Version: {version}\r\n"
        status, _, _ = await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if status not in (200, 202, 204):
            raise Failure(f"notifications/initialized: HTTP {status}")
        return self

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id = next(self.ids)
        return _answer(*await self._post(_request(request_id, method, params)), request_id)

    def disconnect(self) -> None:
        """Close the connection, keep the session (idle sessions hold no connection)."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    async def close(self) -> None:
        """End the session (DELETE) and close the connection."""
        try:
            if self.session_id and self.connection is not None and not self.connection.closed:
                delete = self.head.replace("POST ", "DELETE ", 1) + "Content-Length: 0\r\n\r\n"
                await self.connection.exchange(delete.encode())
        except (Failure, OSError, asyncio.TimeoutError):
            pass
        self.disconnect()


def _request(request_id: int, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


class HttpxSession:
    """The same session over httpx2 (``--client httpx2``): a cross-check of the raw client."""

    def __init__(self, client: Any, url: str) -> None:
        self.client, self.url = client, url
        self.headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        self.ids = itertools.count(1)
        self.session_id: str | None = None

    async def open(self) -> "HttpxSession":
        response = await self._post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": _INITIALIZE})
        reply = _answer(response.status_code, response.headers, response.content, 0)
        if "result" not in reply:
            raise Failure(f"initialize refused: {reply.get('error')}")
        self.session_id = response.headers.get("mcp-session-id")
        if self.session_id:
            self.headers["mcp-session-id"] = self.session_id
        self.headers["mcp-protocol-version"] = reply["result"].get("protocolVersion", PROTOCOL_VERSION)
        response = await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if response.status_code not in (200, 202, 204):
            raise Failure(f"notifications/initialized: HTTP {response.status_code}")
        return self

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id = next(self.ids)
        response = await self._post(_request(request_id, method, params))
        return _answer(response.status_code, response.headers, response.content, request_id)

    async def _post(self, message: dict[str, Any]) -> Any:
        return await self.client.post(self.url, content=json.dumps(message, separators=(",", ":")).encode(),
                                      headers=self.headers)

    def disconnect(self) -> None:
        pass

    async def close(self) -> None:
        if self.session_id:
            try:
                await self.client.delete(self.url, headers=self.headers)
            except httpx2.HTTPError:
                pass


def httpx_client(connections: int) -> Any:
    """Loopback only: proxies from the environment are ignored."""
    return httpx2.AsyncClient(timeout=REQUEST_TIMEOUT, trust_env=False,
                              limits=httpx2.Limits(max_connections=connections, max_keepalive_connections=connections,
                                                   keepalive_expiry=60.0))


def _answer(status: int, headers: Any, body: bytes, request_id: int) -> dict[str, Any]:
    """The JSON-RPC answer to ``request_id`` in a JSON body or an SSE stream."""
    if status != 200:
        raise Failure(f"HTTP {status}: {body[:200]!r}")
    if headers.get("content-type", "").startswith("application/json"):
        message = json.loads(body)
        if message.get("id") != request_id:
            raise Failure(f"answer to id {message.get('id')!r}, expected {request_id}")
        return message
    for line in body.split(b"\n"):
        if line.startswith(b"data:"):
            data = line[5:].strip()
            if data:
                message = json.loads(data)
                if "id" in message and ("result" in message or "error" in message):
                    if message["id"] != request_id:
                        raise Failure(f"answer to id {message['id']!r}, expected {request_id}")
                    return message
    raise Failure(f"no answer in the stream: {body[:200]!r}")


def http_opener(url: str, client: str = "raw", httpx: Any = None) -> "Opener":
    """Opens sessions on ``url``; ``client="httpx2"`` needs ``httpx`` (an ``httpx_client()``)."""
    if client == "httpx2":
        return lambda: HttpxSession(httpx, url).open()
    return lambda: HttpSession(url).open()


# ------------------------------------------------------------------------------------ stdio

class StdioConnection:
    """JSON-RPC lines to a process's stdin, answers read from its stdout by one reader task."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def open(self) -> "StdioConnection":
        reply = await self.request("initialize", _INITIALIZE)
        if "result" not in reply:
            raise Failure(f"initialize refused: {reply.get('error')}")
        self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return self

    def _write(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id = next(self.ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        future = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        try:
            self._write(message)
            assert self.process.stdin is not None
            await self.process.stdin.drain()
            return await asyncio.wait_for(future, REQUEST_TIMEOUT)
        finally:
            self.pending.pop(request_id, None)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            future = self.pending.get(message.get("id")) if isinstance(message, dict) else None
            if future is not None and not future.done() and ("result" in message or "error" in message):
                future.set_result(message)
        for future in self.pending.values():  # the process closed its stdout
            if not future.done():
                future.set_exception(Failure("the process closed stdout"))

    async def close(self) -> None:
        self.reader.cancel()


class StdioLane:
    """A "session" on a stdio connection: requests of one worker (the connection is shared)."""

    def __init__(self, connection: StdioConnection) -> None:
        self.connection = connection

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.connection.request(method, params)

    def disconnect(self) -> None:
        pass

    async def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------ phases

Opener = Callable[[], Awaitable[Session]]


class Window(Protocol):
    """Told when the counted calls start and when they end (``bench.run._CpuMeter``): a figure
    per call then leaves out opening, warming up and closing the sessions."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


async def sequential(open_session: Opener, tool: str, calls: int, warmup: int = 20,
                     max_seconds: float = 60.0, window: Window | None = None) -> dict[str, Any]:
    """One session, one call at a time: latency."""
    session = await open_session()
    tag = next(_SESSION_TAGS)
    try:
        for i in range(min(warmup, calls)):
            await echo(session, tool, f"w{tag}-{i}")
        tally = Tally()
        deadline = time.perf_counter() + max_seconds
        if window is not None:
            window.start()
        for i in range(calls):
            started = time.perf_counter()
            outcome, problem = await echo(session, tool, f"s{tag}-{i}")
            ended = time.perf_counter()
            tally.count(outcome, ended - started, problem)
            if ended > deadline:
                break
        if window is not None:
            window.stop()
        return tally.summary()
    finally:
        await session.close()


async def spread_out(targets: Sequence[tuple[Session, str]], calls: int, max_seconds: float = 60.0,
                     seed: int = 0) -> list[dict[str, Any]]:
    """Several targets' sequential latency with their calls spread out (``targets``: a session on
    each, the caller's to open and close, and its tool): one call on each in turn, ``calls`` each,
    the order shuffled every turn (seeded: the same from run to run) so that each target's calls
    follow every other target's alike; processes started from the same files share what is
    cached of them, and a fixed order favours whoever follows its twin. Each target's processes
    sleep while the others' calls run, as between the calls of an assistant that thinks between
    them: a colder regime than ``sequential``'s calls back to back (caches refilled, CPUs woken
    from idle, every call), and every target meets the machine in the same phase, to the call.
    Each target's figures are ``sequential``'s."""
    order = random.Random(seed)
    tags = [next(_SESSION_TAGS) for _ in targets]
    tallies = [Tally() for _ in targets]
    turns = list(range(len(targets)))
    deadline = time.perf_counter() + max_seconds
    for i in range(calls):
        order.shuffle(turns)
        for k in turns:
            session, tool = targets[k]
            started = time.perf_counter()
            outcome, problem = await echo(session, tool, f"p{tags[k]}-{i}")
            tallies[k].count(outcome, time.perf_counter() - started, problem)
        if time.perf_counter() > deadline:
            break
    return [tally.summary() for tally in tallies]


async def throughput(open_session: Opener, tool: str, sessions: int, max_calls: int,
                     max_seconds: float, window: Window | None = None) -> dict[str, Any]:
    """``sessions`` sessions calling back to back until ``max_calls`` are done or time is up."""
    opened = await asyncio.gather(*(open_session() for _ in range(sessions)))
    tally = Tally()
    remaining = max_calls
    try:
        for session in opened:  # every session warmed up (its connection open) before the clock starts
            outcome, problem = await echo(session, tool, f"w{next(_SESSION_TAGS)}")
            if outcome != OK:
                tally.count(outcome, 0.0, problem)
        deadline = time.perf_counter() + max_seconds

        async def worker(session: Session) -> None:
            nonlocal remaining
            tag = next(_SESSION_TAGS)
            for i in itertools.count():
                if remaining <= 0 or time.perf_counter() > deadline:
                    return
                remaining -= 1
                started = time.perf_counter()
                outcome, problem = await echo(session, tool, f"t{tag}-{i}")
                tally.count(outcome, time.perf_counter() - started, problem)

        if window is not None:
            window.start()
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for session in opened))
        elapsed = time.perf_counter() - started
        if window is not None:
            window.stop()
    finally:
        await asyncio.gather(*(session.close() for session in opened))
    summary = tally.summary()
    summary.update(sessions=sessions, seconds=round(elapsed, 3),
                   calls_per_s=round(len(tally.latencies) / elapsed, 1) if elapsed > 0 else 0.0)
    return summary


async def open_idle(open_session: Opener, count: int, concurrency: int = 16, max_seconds: float = 60.0
                    ) -> tuple[list[Session], int]:
    """Open ``count`` sessions (``concurrency`` at a time) and leave them idle, holding no connection:
    (sessions, failures)."""
    sessions: list[Session] = []
    failures = 0
    deadline = time.perf_counter() + max_seconds
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal failures
        async with semaphore:
            if time.perf_counter() > deadline:
                failures += 1
                return
            try:
                session = await open_session()
                session.disconnect()
                sessions.append(session)
            except (Failure, httpx2.HTTPError, OSError, ValueError):
                failures += 1

    await asyncio.gather(*(one() for _ in range(count)))
    return sessions, failures


async def list_tools(session: Session, requests: int, max_seconds: float = 60.0) -> dict[str, Any]:
    """``tools/list`` latency; each answer must list the same (non-zero) number of tools."""
    tally = Tally()
    counts: set[int] = set()
    deadline = time.perf_counter() + max_seconds
    for _ in range(requests):
        started = time.perf_counter()
        try:
            reply = await session.request("tools/list", {})
            tools = reply["result"]["tools"]
            counts.add(len(tools))
            tally.count(OK if tools else ERROR, time.perf_counter() - started, None if tools else "empty list")
        except (Failure, httpx2.HTTPError, OSError, KeyError, TypeError, ValueError, asyncio.TimeoutError) as exc:
            tally.count(ERROR, 0.0, f"{type(exc).__name__}: {exc}")
        if time.perf_counter() > deadline:
            break
    summary = tally.summary()
    summary["tools"] = sorted(counts)
    if len(counts) > 1:
        summary["errors"] += 1
        summary.setdefault("first_problems", []).append(f"tool counts differ: {sorted(counts)}")
    return summary


# ------------------------------------------------------------------------------------ command line

async def _main(args: argparse.Namespace) -> dict[str, Any]:
    calls, seconds = (50, 2.0) if args.quick else (args.calls, args.seconds)
    results: dict[str, Any] = {}
    if args.url:
        async with httpx_client(80) as httpx:
            opener = http_opener(args.url, args.client, httpx)
            results["sequential"] = await sequential(opener, args.tool, calls)
            for n in (16, 64):
                results[f"throughput_{n}"] = await throughput(opener, args.tool, n, calls * 4, seconds)
        return results
    process = await asyncio.create_subprocess_exec(*args.command, stdin=asyncio.subprocess.PIPE,
                                                   stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024)
    try:
        connection = await StdioConnection(process).open()
        lane: Opener = lambda: _ready(StdioLane(connection))  # noqa: E731
        results["sequential"] = await sequential(lane, args.tool, calls)
        for n in (16, 64):
            results[f"throughput_{n}"] = await throughput(lane, args.tool, n, calls * 4, seconds)
        await connection.close()
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
    return results


async def _ready(session: Session) -> Session:
    return session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a Streamable HTTP endpoint (else: the command after --, over stdio)")
    parser.add_argument("--tool", default="echo")
    parser.add_argument("--calls", type=int, default=1000, help="sequential calls (throughput phases: 4x)")
    parser.add_argument("--seconds", type=float, default=10.0, help="time limit of a throughput phase")
    parser.add_argument("--client", choices=["raw", "httpx2"], default="raw", help="HTTP client (default: raw)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("command", nargs="*")
    args = parser.parse_args()
    if not args.url and not args.command:
        parser.error("give --url URL or a command to run over stdio")
    print(json.dumps(asyncio.run(_main(args)), indent=2))


if __name__ == "__main__":
    sys.exit(main())
