"""A small round-robin HTTP load balancer for tests of several gateway replicas.

Each request goes to the next backend in turn, whatever its session: the worst case for session
affinity, and what a load balancer without it does. A backend that refuses the connection is
skipped for that request (as nginx's ``proxy_next_upstream error`` does), since a request that
never reached a replica is safe to send to another. Answers are streamed back chunk by chunk, so
SSE answers and standalone GET streams pass as they come. The balancer counts, per backend, the
requests it sent and those still in flight, which is what the tests assert on.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import httpx2
from starlette.types import Receive, Scope, Send

_HOP_BY_HOP = {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"upgrade",
               b"te", b"trailer", b"proxy-connection"}


class RoundRobin:
    def __init__(self, backends: list[str]) -> None:
        self.backends = list(backends)  # base URLs, e.g. http://127.0.0.1:PORT
        self.served: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()  # POSTs sent to a backend that never answered them whole
        self._turn = 0
        self._client = httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=None))

    async def aclose(self) -> None:
        await self._client.aclose()

    def _next(self) -> str:
        backend = self.backends[self._turn % len(self.backends)]
        self._turn += 1
        return backend

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
        target = scope["path"] + (f"?{scope['query_string'].decode()}" if scope.get("query_string") else "")
        for _ in range(len(self.backends)):
            backend = self._next()
            request = self._client.build_request(scope["method"], backend + target, headers=headers, content=body)
            self.in_flight[backend] += 1  # from the moment it is sent: an answer may take a while to start
            try:
                try:
                    response = await self._client.send(request, stream=True)
                except httpx2.ConnectError:
                    self.refused[backend] += 1
                    continue
                except httpx2.HTTPError:  # the replica died before answering: the request is lost with it
                    self.lost[backend] += scope["method"] == "POST"
                    await _answer(send, 502, b"the backend went away")
                    return
                self.served[backend] += 1
                if not await _relay(response, receive, send):
                    self.lost[backend] += scope["method"] == "POST"
            finally:
                self.in_flight[backend] -= 1
            return
        await _answer(send, 502, b"no backend answered")


async def _answer(send: Send, status: int, text: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": text})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _relay(response: Any, receive: Receive, send: Send) -> bool:
    """Stream ``response`` to the client until either side ends; a backend dying mid-answer ends
    the answer early (the client sees a cut stream, as behind a real balancer): False then."""
    whole = True
    headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    async with anyio.create_task_group() as tg:

        async def client_leaves() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(client_leaves)
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx2.HTTPError:
            whole = False
        finally:
            await response.aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        tg.cancel_scope.cancel()
    return whole
