"""A fake plugged.in App for tests: the parts of its API the gateway uses, answering as the App does.

It follows /work/shared/reference/pluggedin-app-api.md and the App's own route handlers: bearer
auth with the App's exact 401 bodies, ``GET /api/mcp-servers`` answering the current ``records``
as a bare array, and ``POST /api/notifications/mcp-activity`` validating its body like the App's
zod schema. A test changes ``records`` between polls and flips failure switches; it waits on
events (``held``), never on fixed sleeps, so a slow answer lasts exactly as long as the test wants.

    async with running_fake_app(records=[...]) as app:
        outcome = await fetch_records(source(app.base_url, app.api_key), client)
"""

from __future__ import annotations

import contextlib
import copy
import json
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from loopback import serving

API_KEY = "pg_in_" + "0123456789abcdef" * 4
"""A key in the App's format (``pg_in_`` + 64 characters) the fake accepts by default."""

NO_BEARER = {"error": "Authorization header with Bearer token is required"}
INVALID_KEY = {"error": "Invalid API key"}
NO_PROFILE = {"error": "No active profile found for this API key"}
FETCH_FAILED = {"error": "Failed to fetch active MCP servers"}
ACTIONS = ("tool_call", "prompt_get", "resource_read", "install", "uninstall")


def record(name: str, **fields: Any) -> dict[str, Any]:
    """A record as the App sends it (STDIO by default), with the fields a test cares about."""
    slug = fields.pop("slug", name.lower().replace(" ", "-"))
    base: dict[str, Any] = {
        "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"pluggedin:{name}")), "name": name, "description": None,
        "type": "STDIO", "command": "npx", "args": ["-y", f"@example/{slug}"], "env": {}, "url": None,
        "status": "ACTIVE", "slug": slug, "source": "PLUGGEDIN", "created_at": "2025-01-01T00:00:00.000Z",
        "profile_uuid": "00000000-0000-4000-8000-000000000001", "notes": None, "config": None,
        "external_id": None, "registry_data": {}, "repository_url": None, "install_path": None,
        "encryption_salt": "c2FsdA==",
    }
    return base | fields


@dataclass(frozen=True)
class SeenRequest:
    """One request the fake answered: enough to assert on polling and auth without keeping keys."""

    method: str
    path: str
    has_authorization: bool
    bearer: bool
    status: int


class FakePluggedinApp:
    """The App's state and switches; ``asgi`` is the Starlette app serving them."""

    def __init__(self, records: list[Any] | None = None, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.api_keys: set[str] = {api_key}
        self.keys_without_profile: set[str] = set()
        self.records: list[Any] = list(records or [])
        self.requests: list[SeenRequest] = []
        self.activity: list[dict[str, Any]] = []
        self.fail = False
        """Answer ``GET /api/mcp-servers`` with the App's 500."""
        self.body: Any = None
        """When not None, sent (as JSON) instead of the records: a malformed answer, e.g. an object."""
        self.raw_body: bytes | None = None
        """When not None, sent as it is (a proxy's HTML error page, a truncated body)."""
        self.hold: anyio.Event | None = None
        """When set to an Event, ``GET /api/mcp-servers`` waits for it before answering: a slow App."""
        self.held = anyio.Event()
        """Set once a request is being held, so a test knows its client is waiting."""
        self.base_url = ""
        self.asgi = Starlette(routes=[
            Route("/api/mcp-servers", self._servers, methods=["GET"]),
            Route("/api/notifications/mcp-activity", self._activity, methods=["POST"]),
        ])

    @property
    def server_polls(self) -> int:
        return sum(1 for r in self.requests if r.path == "/api/mcp-servers" and r.status == 200)

    def slow(self) -> anyio.Event:
        """Make the next answers wait until the returned event is set (or the app stops)."""
        self.held = anyio.Event()
        self.hold = anyio.Event()
        return self.hold

    def release(self) -> None:
        """Let every held answer go and stop holding new ones."""
        if self.hold is not None:
            self.hold.set()
        self.hold = None

    def _refusal(self, request: Request) -> JSONResponse | None:
        """The App's ``authenticateApiKey``: None when the key is good and has a profile."""
        header = request.headers.get("authorization")
        if header is None or not header.startswith("Bearer "):
            return JSONResponse(NO_BEARER, status_code=401)
        key = header[len("Bearer "):]
        if key not in self.api_keys:
            return JSONResponse(INVALID_KEY, status_code=401)
        if key in self.keys_without_profile:
            return JSONResponse(NO_PROFILE, status_code=401)
        return None

    def _log(self, request: Request, status: int) -> None:
        header = request.headers.get("authorization")
        self.requests.append(SeenRequest(request.method, request.url.path, header is not None,
                                         bool(header and header.startswith("Bearer ")), status))

    async def _servers(self, request: Request) -> Response:
        response = self._refusal(request) or await self._servers_answer()
        self._log(request, response.status_code)
        return response

    async def _servers_answer(self) -> Response:
        hold = self.hold
        if hold is not None:
            self.held.set()
            await hold.wait()
        if self.fail:
            return JSONResponse(FETCH_FAILED, status_code=500)
        if self.raw_body is not None:
            return Response(self.raw_body, media_type="text/html")
        if self.body is not None:
            return JSONResponse(self.body)
        return Response(json.dumps(copy.deepcopy(self.records)), media_type="application/json")

    async def _activity(self, request: Request) -> Response:
        response = self._refusal(request) or await self._activity_answer(request)
        self._log(request, response.status_code)
        return response

    async def _activity_answer(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "Invalid JSON in request body"}, status_code=400)
        details = activity_issues(body)
        if details:
            return JSONResponse({"error": "Invalid request data", "details": details}, status_code=400)
        server_uuid = body.get("serverUuid")
        if server_uuid is not None:
            if not _is_uuid(server_uuid):
                return JSONResponse({"error": "Invalid server UUID"}, status_code=400)
            if not any(isinstance(r, dict) and r.get("uuid") == server_uuid for r in self.records):
                return JSONResponse({"error": "Server not found"}, status_code=404)
        self.activity.append(body)
        return JSONResponse({"success": True})


def activity_issues(body: Any) -> list[dict[str, Any]]:
    """The App's zod schema for an activity report, as zod words its issues (empty: valid)."""
    if not isinstance(body, dict):
        return [_issue([], "invalid_type", "Expected object")]
    issues = []
    if body.get("action") not in ACTIONS:
        issues.append(_issue(["action"], "invalid_enum_value", f"Expected {' | '.join(map(repr, ACTIONS))}"))
    required = {"serverName": str, "success": bool}
    optional = {"serverUuid": str, "externalId": str, "itemName": str, "errorMessage": str, "executionTime": (int, float)}
    for key, kind in required.items():
        if not _typed(body.get(key), kind):
            issues.append(_issue([key], "invalid_type", "Required" if key not in body else f"Expected {kind.__name__}"))
    for key, kind in optional.items():
        if key in body and not _typed(body[key], kind):
            issues.append(_issue([key], "invalid_type", "Expected a different type"))
    return issues


def _typed(value: Any, kind: Any) -> bool:
    """isinstance, except that a bool is not a number (JSON has no such overlap)."""
    return isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)


def _issue(path: list[str], code: str, message: str) -> dict[str, Any]:
    return {"code": code, "path": path, "message": message}


def _is_uuid(value: Any) -> bool:
    try:
        uuidlib.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


@contextlib.asynccontextmanager
async def running_fake_app(records: list[Any] | None = None, api_key: str = API_KEY,
                           app: FakePluggedinApp | None = None) -> AsyncIterator[FakePluggedinApp]:
    """Serve a fake App on 127.0.0.1 (ephemeral port) for the duration of the block.

    The socket is bound before uvicorn starts, so the port is known and connectable at once; the
    block starts once uvicorn reports it has started. Held answers are released on exit, so a test
    that timed out its client never makes shutdown wait.
    """
    fake = app or FakePluggedinApp(records, api_key)
    async with serving(fake.asgi) as base_url:
        fake.base_url = base_url
        try:
            yield fake
        finally:
            fake.release()  # a held answer must not make shutdown wait
