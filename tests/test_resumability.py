"""Resumable SSE and keep-alive on the Streamable HTTP front, as a client sees them on the wire.

What users get: a handshake-era client (2025-11-25) whose SSE stream drops -- an idle timeout in
a load balancer, a network blip -- reconnects with ``Last-Event-ID`` and is sent what it missed,
and only what it missed: every SSE response opens with a priming event (an id, empty data and a
``retry:`` hint), every message carries an event id, and a GET with one of those ids replays the
rest of that stream, so a call whose stream dropped mid-call still delivers its progress and its
answer. Replays never cross sessions: request ids (and so stream names) repeat from client to
client, and one session's messages are never sent to another, whatever id that other presents.
Idle SSE streams carry
``: ping`` comment lines at the configured ``gateway.http.keepalive`` interval, so proxies do not
cut them; a ping carries no id, so it never moves the client's resume point.

Raw HTTP (``httpx2``) against the real ``mcpgw serve`` with one stdio fixture upstream; SSE parsed
here, line by line. Every read is bounded with ``anyio.fail_after``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from gateway_harness import eventually, gateway_http, write_config
from upstreams import fixture_args

from gateway.http import SSE_RETRY_MS

pytestmark = pytest.mark.anyio

WAIT = 60  # seconds for a whole test: the gateway and its upstream start, talk and stop
READ_WAIT = 10  # seconds for any one HTTP exchange or stream read
VERSION = "2025-11-25"  # the first revision with priming events (and so resumable request streams)
JSON_AND_SSE = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def gateway_config(tmp_path: Path, **gateway: Any) -> Path:
    server = {"command": sys.executable, "args": fixture_args("alpha"),
              "retry": {"backoff": "100ms", "max_backoff": "500ms"}}
    return write_config(tmp_path, json.dumps({"version": 1, "servers": {"alpha": server}, "gateway": gateway}))


# --- SSE on the wire ---------------------------------------------------------------------------


@dataclass
class Event:
    """One dispatched SSE block: its fields as sent (``data`` lines joined), comment lines kept."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: str | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def is_priming(self) -> bool:
        return self.id is not None and self.data == ""

    @property
    def message(self) -> dict[str, Any] | None:
        return json.loads(self.data) if self.data else None


async def sse_events(response: httpx2.Response) -> AsyncIterator[Event]:
    """The SSE blocks of a streaming response, each yielded at its blank line (a comment-only
    block, such as a keep-alive ping, too). A block the stream ends in the middle of is dropped."""
    current, data, seen = Event(), [], False
    async for line in response.aiter_lines():
        if line == "":
            if seen:
                current.data = "\n".join(data) if data else None
                yield current
            current, data, seen = Event(), [], False
            continue
        seen = True
        if line.startswith(":"):
            current.comments.append(line)
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name in ("id", "event", "retry"):
            setattr(current, name, value)


def answers(event: Event, request_id: int) -> bool:
    message = event.message
    return message is not None and message.get("id") == request_id and ("result" in message or "error" in message)


def result_text(event: Event) -> str:
    message = event.message
    assert message is not None and "result" in message, event
    return "".join(c.get("text", "") for c in message["result"]["content"])


def messages(events: list[Event]) -> list[Event]:
    return [e for e in events if e.data]


# --- a raw handshake-era session ---------------------------------------------------------------


@dataclass
class Session:
    http: httpx2.AsyncClient
    url: str
    id: str

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Mcp-Session-Id": self.id, "Mcp-Protocol-Version": VERSION, **extra}

    async def call(self, request_id: int, method: str, params: dict[str, Any],
                   until: Callable[[Event], bool] | None = None) -> list[Event]:
        """POST one request and read its SSE response to the end (the SDK ends a request's stream
        after the response), or only until ``until(event)`` holds, then drop the connection."""
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        events: list[Event] = []
        with anyio.fail_after(READ_WAIT):
            async with self.http.stream("POST", self.url, headers={**JSON_AND_SSE, **self.headers()},
                                        json=body) as response:
                assert response.status_code == 200, await response.aread()
                assert response.headers["content-type"].startswith("text/event-stream")
                async for event in sse_events(response):
                    events.append(event)
                    if until is not None and until(event):
                        break
        return events

    async def replay(self, last_event_id: str) -> list[Event]:
        """GET with ``Last-Event-ID``: the events replayed after that id. The SDK sends the stored
        events, then (when it takes the stream over live) a fresh priming event and keeps the
        stream open; otherwise it ends the stream. Either marks the end of the replay."""
        replayed: list[Event] = []
        with anyio.fail_after(READ_WAIT):
            async with self.http.stream("GET", self.url, headers=self.headers(
                    Accept="text/event-stream", **{"Last-Event-ID": last_event_id})) as response:
                assert response.status_code == 200, await response.aread()
                assert response.headers["content-type"].startswith("text/event-stream")
                async for event in sse_events(response):
                    if event.is_priming:
                        break
                    if event.comments and event.data is None:
                        continue  # a keep-alive ping
                    replayed.append(event)
        return replayed


async def open_session(http: httpx2.AsyncClient, url: str) -> Session:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    with anyio.fail_after(READ_WAIT):
        opened = await http.post(url, headers=JSON_AND_SSE, json=initialize)
        assert opened.status_code == 200, opened.text
        session = Session(http, url, opened.headers["mcp-session-id"])
        initialized = await http.post(url, headers={**JSON_AND_SSE, **session.headers()},
                                      json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert initialized.status_code == 202, initialized.text
    return session


def echo(text: str) -> dict[str, Any]:
    return {"name": "alpha__echo", "arguments": {"text": text}}


def logged(text: str) -> dict[str, Any]:
    """A call that sends a log message (``text``) before its result: its answer is a stream (a call
    that sends nothing before its result is answered as plain JSON, tests/test_sse_answers.py)."""
    return {"name": "alpha__log", "arguments": {"message": text}}


def carries(events: list[Event], text: str) -> bool:
    return any(text in (e.data or "") for e in events)


# --- the tests ---------------------------------------------------------------------------------


async def test_a_tool_call_stream_is_primed_and_replays_after_its_priming_event(tmp_path: Path) -> None:
    with anyio.fail_after(WAIT):
        async with gateway_http(gateway_config(tmp_path)) as gw, httpx2.AsyncClient(timeout=READ_WAIT) as http:
            session = await open_session(http, gw.url)
            events = await session.call(7, "tools/call", logged("hello-replay"))

            priming, sent = events[0], messages(events)
            assert priming.is_priming and priming.retry == str(SSE_RETRY_MS), priming
            assert sent and answers(sent[-1], 7) and result_text(sent[-1]) == "logged"
            assert carries(sent[:-1], "hello-replay")
            ids = [e.id for e in sent]
            assert all(ids) and len({priming.id, *ids}) == len(ids) + 1  # every message has an id of its own

            replayed = await session.replay(priming.id)
            assert [(e.id, e.data) for e in replayed] == [(e.id, e.data) for e in sent]
            assert carries(replayed, "hello-replay")

            # from the last event on there is nothing left to replay
            assert await session.replay(sent[-1].id) == []


async def test_a_client_that_drops_mid_call_resumes_and_misses_nothing(tmp_path: Path) -> None:
    with anyio.fail_after(WAIT):
        async with gateway_http(gateway_config(tmp_path)) as gw, httpx2.AsyncClient(timeout=READ_WAIT) as http:
            session = await open_session(http, gw.url)
            params = {"name": "alpha__slow_progress", "arguments": {"steps": 3, "delay": 0.3},
                      "_meta": {"progressToken": "p"}}
            # read up to the first progress notification, then drop the connection
            before = await session.call(7, "tools/call", params, until=lambda e: bool(e.data))
            first = before[-1]
            assert before[0].is_priming and first.message is not None
            assert first.message["method"] == "notifications/progress" and first.message["params"]["progress"] == 1

            # The call goes on without the client. Reconnect from the last event seen until the replay
            # holds the response: everything after that event, stored whether or not anyone listened.
            async def replayed_to_the_end() -> list[Event] | None:
                replayed = await session.replay(first.id)
                return replayed if replayed and answers(replayed[-1], 7) else None

            rest = await eventually(replayed_to_the_end)
            assert "error" not in rest[-1].message, rest[-1].message  # the call was not given up
            progress = [e.message["params"]["progress"] for e in rest[:-1] if e.message is not None]
            assert progress == [2, 3]
            assert result_text(rest[-1]) == "completed 3 steps"
            assert first.id not in {e.id for e in rest} and len({e.id for e in rest}) == len(rest)


async def test_replays_never_cross_sessions_that_reuse_a_request_id(tmp_path: Path) -> None:
    with anyio.fail_after(WAIT):
        async with gateway_http(gateway_config(tmp_path)) as gw, httpx2.AsyncClient(timeout=READ_WAIT) as http:
            a = await open_session(http, gw.url)
            b = await open_session(http, gw.url)
            await a.call(2, "tools/call", logged("warm-up"))  # so A's event ids are not B's ids by coincidence
            # B calls first: A's events come after B's priming event, where a store shared between
            # sessions would replay them to B
            b_events = await b.call(7, "tools/call", logged("from-B"))
            a_events = await a.call(7, "tools/call", logged("from-A"))
            assert carries(b_events, "from-B") and carries(a_events, "from-A")
            b_priming, a_priming = b_events[0], a_events[0]
            assert b_priming.is_priming and a_priming.is_priming

            replayed_b = await b.replay(b_priming.id)
            assert carries(replayed_b, "from-B") and [result_text(e) for e in replayed_b if answers(e, 7)] == ["logged"]
            assert not carries(replayed_b, "from-A")

            # A's event id presented on B's session replays nothing of A's
            assert not carries(await b.replay(a_priming.id), "from-A")
            for event in messages(a_events):
                assert not carries(await b.replay(event.id), "from-A")

            # and A's own replay is still A's
            replayed_a = await a.replay(a_priming.id)
            assert carries(replayed_a, "from-A") and not carries(replayed_a, "from-B")


async def test_an_idle_get_stream_gets_keepalive_pings_at_the_configured_interval(tmp_path: Path) -> None:
    path = gateway_config(tmp_path, http={"keepalive": "200ms"})
    with anyio.fail_after(WAIT):
        async with gateway_http(path) as gw, httpx2.AsyncClient(timeout=READ_WAIT) as http:
            session = await open_session(http, gw.url)
            # 200ms against the 15s default: a ping within READ_WAIT means the setting took effect
            with anyio.fail_after(READ_WAIT):
                async with http.stream("GET", gw.url, headers=session.headers(Accept="text/event-stream")) as stream:
                    assert stream.status_code == 200, await stream.aread()
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    ping = await _first(sse_events(stream), lambda e: any(c.startswith(": ping") for c in e.comments))
            # a comment and nothing else: it never moves the client's Last-Event-ID
            assert (ping.id, ping.data, ping.event, ping.retry) == (None, None, None, None)


async def _first(events: AsyncIterator[Event], match: Callable[[Event], bool]) -> Event:
    async for event in events:
        if match(event):
            return event
    raise AssertionError("the stream ended without the expected event")
