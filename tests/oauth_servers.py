"""A local OAuth 2.1 authorization server, and a protected fixture upstream, for upstream-OAuth tests.

The gateway is a *client* of a protected upstream: it gets a token from an authorization server (AS)
and presents it to the upstream, which validates it. This module provides both ends, on 127.0.0.1:

    async with running_auth_server({"gw": "s3cret"}) as auth:           # the AS (in this process)
        async with protected_upstream(auth.issuer) as url:               # the fixture upstream, as a process
            ...                                                          # url = http://127.0.0.1:PORT/mcp

The AS (``AuthServer``) serves:

* ``GET /.well-known/oauth-authorization-server``: RFC 8414 metadata (issuer, authorization, token,
  JWKS and introspection endpoints, grant types, ``code_challenge_methods_supported: ["S256"]``,
  ``token_endpoint_auth_methods_supported``; ``none`` is listed only while a public client exists);
* ``POST /token``: ``client_credentials``, ``authorization_code`` (PKCE S256, single-use codes bound to
  client, redirect_uri and challenge) and ``refresh_token`` (rotating: a refresh token works once; a
  used, revoked, expired or unknown one gets 400 ``invalid_grant``). Clients authenticate with
  ``client_secret_basic`` or ``client_secret_post`` (a public client, secret ``None``, with its
  ``client_id`` alone, and not for ``client_credentials``); a bad client gets 401 ``invalid_client``.
  Access tokens are RS256 JWTs (header ``kid``) with claims ``iss``, ``aud`` (the ``resource``
  parameter if given, else ``audience``, else the server's ``audience``; omitted if none), ``sub``
  (the client id; for authorization-code tokens ``user`` when set), ``client_id``, ``scope``,
  ``iat``, ``exp`` and ``jti``;
* ``GET /jwks``: the public signing key;
* ``GET /authorize``: the browser step, auto-approved. An unknown client or a redirect_uri it may not
  use gets 400 (never a redirect); a missing ``state``, a ``response_type`` other than ``code`` or a
  missing/non-S256 ``code_challenge`` redirects with ``error=...``; otherwise 302 to
  ``redirect_uri?code=...&state=...&iss=...`` at once (the test is the browser: it reads Location);
* ``POST /introspect``: RFC 7662 (no client authentication: a test server); ``active`` is false for
  a token this AS did not issue, an expired one or a revoked one. The protected upstream asks it on
  every request, which is how revocation reaches it.

Switches (plain attributes, change them at any time): ``clients``, ``token_lifetime``,
``next_token_lifetime`` (one-shot: the next token from ``/token`` gets this lifetime, e.g. ``-10`` for
one already expired), ``report_expires_in`` (what ``expires_in`` says, whatever the JWT's ``exp``:
makes a client believe its token is stale, or fresh), ``refresh_token_lifetime``,
``refresh_for_client_credentials``, ``token_endpoint_status`` (answer every ``/token`` request with
this HTTP status and ``temporarily_unavailable``), ``deny_authorization`` (``/authorize`` redirects
with ``error=access_denied``), ``user``, ``audience``, ``default_scope``, ``redirect_uris``.
Actions: ``revoke_all_access_tokens()``, ``revoke_access_token(token)``,
``revoke_all_refresh_tokens()``, ``expire_all_refresh_tokens()``, ``mint_access_token(...)``.
Logs: ``token_requests`` (``TokenRequest``: grant type, client, auth method, resource, audience,
scope, status, error), ``grant_types`` / ``granted(grant_type)``, ``authorize_requests``,
``introspections``, ``requests`` (every request: method, path, status), ``issued`` (jti -> token).

``protected_upstream(issuer, audience=None, scope="mcp")`` runs tests/fixtures/upstream.py with
``--transport http --require-token ISSUER``: every ``/mcp`` request needs a bearer JWT signed by a key
in the AS's JWKS, with that ``iss``, an unexpired ``exp``, ``aud`` = ``audience`` (default: the
upstream's own ``/mcp`` URL, i.e. what a client sends as RFC 8707 ``resource``) and, through
``required_scopes``, ``scope``; the AS's introspection endpoint must still call it active. Anything
else gets 401 with ``WWW-Authenticate: Bearer error="invalid_token", ..., resource_metadata="<PRM
URL>"`` (a missing scope gets 403 ``insufficient_scope``); the Protected Resource Metadata names the
AS. The upstream has the fixture's usual tools plus ``token_subject`` (the ``sub`` of the request's
token). ``running_protected_upstream(...)`` is the same but yields ``RunningUpstream`` (url, process,
stderr, where the fixture logs ``TOKEN rejected <reason>``).

Helpers: ``pkce_pair()`` / ``s256(verifier)``, ``AuthServer.authorize_url(client_id, redirect_uri,
challenge, state=..., **extra)``, ``bearer(token)`` (a header dict), ``www_authenticate_params(header)``,
``protected_resource_metadata_url(url)``, ``new_signing_key()`` and ``InMemoryTokenStorage`` (the
SDK's ``TokenStorage`` protocol, for ``mcp.client.auth`` providers; tokens may be preloaded).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlparse

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send
from loopback import serving
from upstreams import STARTUP_TIMEOUT, RunningUpstream, fixture_args, running_fixture

DEFAULT_CLIENTS: dict[str, str | None] = {"mcpgw": "mcpgw-secret"}
"""The clients a server gets when none are given: client_id -> secret (None: a public client)."""

CODE_LIFETIME = 60  # seconds an authorization code stays usable
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


def pkce_pair() -> tuple[str, str]:
    """A fresh PKCE ``(code_verifier, code_challenge)`` (S256)."""
    verifier = secrets.token_urlsafe(48)  # 64 characters of the unreserved set
    return verifier, s256(verifier)


def s256(verifier: str) -> str:
    """The S256 code challenge of ``verifier`` (RFC 7636 §4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode().rstrip("=")


def new_signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True)
class TokenRequest:
    """One ``POST /token`` the AS answered (no secrets kept)."""

    grant_type: str | None
    client_id: str | None
    """The authenticated client, or the client id the request claimed when authentication failed."""
    auth_method: str | None
    """``client_secret_basic``, ``client_secret_post``, ``none`` (public client) or None (no credentials)."""
    resource: str | None
    audience: str | None
    scope: str | None
    status: int
    error: str | None
    """The OAuth error code for a refusal (``invalid_client``, ``invalid_grant``, ...), None on success."""


@dataclass(frozen=True)
class AuthorizeRequest:
    """One ``GET /authorize``: its query parameters and how it was answered."""

    params: dict[str, str]
    status: int
    error: str | None
    location: str | None


@dataclass(frozen=True)
class Introspection:
    jti: str | None
    active: bool


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    status: int


@dataclass
class IssuedToken:
    """An access token this AS signed."""

    token: str
    jti: str
    client_id: str
    subject: str
    audience: str | None
    scope: str
    expires_at: int


@dataclass
class _Grant:
    """What a code or refresh token stands for."""

    client_id: str
    subject: str
    scope: str
    resource: str | None
    audience: str | None
    expires_at: float


@dataclass
class _Code(_Grant):
    redirect_uri: str = ""
    code_challenge: str = ""


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(description)
        self.error, self.description, self.status, self.headers = error, description, status, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "error_description": self.description}, status_code=self.status,
                            headers={"Cache-Control": "no-store", **self.headers})


class AuthServer:
    """The AS's state, switches and logs; ``asgi`` serves them (see the module docstring)."""

    def __init__(
        self,
        clients: dict[str, str | None] | None = None,
        *,
        audience: str | None = None,
        token_lifetime: int = 300,
        refresh_token_lifetime: int = 3600,
        default_scope: str = "mcp",
        user: str | None = None,
        redirect_uris: dict[str, list[str]] | None = None,
        signing_key: rsa.RSAPrivateKey | None = None,
    ) -> None:
        self.clients: dict[str, str | None] = dict(DEFAULT_CLIENTS if clients is None else clients)
        self.audience = audience
        """``aud`` for a token request naming neither ``resource`` nor ``audience`` (None: no ``aud``)."""
        self.token_lifetime = token_lifetime
        self.next_token_lifetime: int | None = None
        """One-shot: the next token issued by ``/token`` lives this many seconds (negative: already expired)."""
        self.report_expires_in: int | None = None
        """When set, ``expires_in`` in token responses, regardless of the JWT's real ``exp``."""
        self.refresh_token_lifetime = refresh_token_lifetime
        self.refresh_for_client_credentials = False
        """Also issue a refresh token for ``client_credentials`` (RFC 6749 §4.4.3 says it SHOULD NOT)."""
        self.default_scope = default_scope
        """The scope granted when a request names none (a request naming one gets exactly that)."""
        self.user = user
        """The resource owner who approves ``/authorize``: ``sub`` of authorization-code tokens (None: the client id)."""
        self.redirect_uris: dict[str, list[str]] = dict(redirect_uris or {})
        """client_id -> exact redirect URIs it may use; a client not listed may use any loopback http URI."""
        self.token_endpoint_status: int | None = None
        """When set, every ``/token`` request gets this status and ``temporarily_unavailable``."""
        self.deny_authorization = False
        """``/authorize`` redirects with ``error=access_denied`` (the user said no)."""

        self.signing_key = signing_key or new_signing_key()
        self.kid = f"test-{uuid.uuid4().hex[:8]}"
        self.issuer = ""
        """The base URL, e.g. ``http://127.0.0.1:PORT`` (set once served): the ``iss`` of every token."""

        self.token_requests: list[TokenRequest] = []
        self.authorize_requests: list[AuthorizeRequest] = []
        self.introspections: list[Introspection] = []
        self.requests: list[SeenRequest] = []
        self.issued: dict[str, IssuedToken] = {}
        self.revoked_access_tokens: set[str] = set()
        """jtis of revoked access tokens."""
        self.refresh_tokens: dict[str, _Grant] = {}
        """Live refresh tokens (a used one is removed: rotation)."""
        self._codes: dict[str, _Code] = {}

        self.asgi = Starlette(routes=[
            Route("/.well-known/oauth-authorization-server", self._metadata, methods=["GET"]),
            Route("/token", self._token, methods=["POST"]),
            Route("/authorize", self._authorize, methods=["GET"]),
            Route("/jwks", self._jwks, methods=["GET"]),
            Route("/introspect", self._introspect, methods=["POST"]),
        ])

    # ------------------------------------------------------------------ URLs and logs
    @property
    def metadata_url(self) -> str:
        return f"{self.issuer}/.well-known/oauth-authorization-server"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/authorize"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.issuer}/introspect"

    @property
    def grant_types(self) -> list[str | None]:
        """The grant type of every ``/token`` request, in order (refused ones included)."""
        return [r.grant_type for r in self.token_requests]

    def granted(self, grant_type: str) -> int:
        """How many ``/token`` requests of ``grant_type`` got a token."""
        return sum(1 for r in self.token_requests if r.grant_type == grant_type and r.status == 200)

    def authorize_url(self, client_id: str, redirect_uri: str, code_challenge: str, state: str = "xyz",
                      **extra: str) -> str:
        """An ``/authorize`` URL as a client would send the browser to (S256, response_type=code)."""
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                  "code_challenge": code_challenge, "code_challenge_method": "S256", "state": state, **extra}
        return f"{self.authorization_endpoint}?{urlencode(params)}"

    # ------------------------------------------------------------------ actions
    def jwks(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self.signing_key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def mint_access_token(
        self,
        client_id: str,
        *,
        subject: str | None = None,
        audience: str | None = None,
        scope: str | None = None,
        lifetime: int | None = None,
        issuer: str | None = None,
        signing_key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        """Sign an access token directly (no ``/token`` request, not logged there). ``issuer`` and
        ``signing_key`` override this server's, to make tokens another AS would have issued."""
        now = int(time.time())
        jti = uuid.uuid4().hex
        expires_at = now + (self.token_lifetime if lifetime is None else lifetime)
        claims: dict[str, Any] = {
            "iss": self.issuer if issuer is None else issuer,
            "sub": subject or client_id,
            "client_id": client_id,
            "scope": self.default_scope if scope is None else scope,
            "iat": now,
            "exp": expires_at,
            "jti": jti,
        }
        if audience is not None:
            claims["aud"] = audience
        token = jwt.encode(claims, signing_key or self.signing_key, algorithm="RS256", headers={"kid": self.kid})
        self.issued[jti] = IssuedToken(token, jti, client_id, claims["sub"], audience, claims["scope"], expires_at)
        return token

    def revoke_all_access_tokens(self) -> None:
        """Every access token issued so far is revoked (introspection says inactive from now on)."""
        self.revoked_access_tokens.update(self.issued)

    def revoke_access_token(self, token: str) -> None:
        jti = _jti(token)
        if jti is not None:
            self.revoked_access_tokens.add(jti)

    def revoke_all_refresh_tokens(self) -> None:
        self.refresh_tokens.clear()

    def expire_all_refresh_tokens(self) -> None:
        for grant in self.refresh_tokens.values():
            grant.expires_at = time.time() - 1

    def is_active(self, token: str) -> bool:
        """What introspection answers: issued here, not revoked, not expired."""
        issued = self.issued.get(_jti(token) or "")
        return (issued is not None and issued.token == token and issued.jti not in self.revoked_access_tokens
                and issued.expires_at > time.time())

    # ------------------------------------------------------------------ endpoints
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app: ``asgi`` with every request logged in ``requests``."""
        if scope["type"] != "http":
            await self.asgi(scope, receive, send)
            return
        status = 500

        async def logging_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.asgi(scope, receive, logging_send)
        finally:
            self.requests.append(SeenRequest(scope["method"], scope["path"], status))

    async def _metadata(self, request: Request) -> Response:
        methods = ["client_secret_basic", "client_secret_post"]
        if any(secret is None for secret in self.clients.values()):
            methods.append("none")
        return JSONResponse({
            "issuer": self.issuer,
            "authorization_endpoint": self.authorization_endpoint,
            "token_endpoint": self.token_endpoint,
            "jwks_uri": self.jwks_uri,
            "introspection_endpoint": self.introspection_endpoint,
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": methods,
            "scopes_supported": [self.default_scope],
            "authorization_response_iss_parameter_supported": True,
        })

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse(self.jwks())

    async def _introspect(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        token = form.get("token", "")
        active = self.is_active(token)
        self.introspections.append(Introspection(_jti(token), active))
        if not active:
            return JSONResponse({"active": False})
        issued = self.issued[_jti(token) or ""]
        body: dict[str, Any] = {"active": True, "iss": self.issuer, "client_id": issued.client_id,
                                "sub": issued.subject, "scope": issued.scope, "exp": issued.expires_at,
                                "jti": issued.jti, "token_type": "Bearer"}
        if issued.audience is not None:
            body["aud"] = issued.audience
        return JSONResponse(body)

    async def _authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        response, error = self._authorize_answer(params)
        self.authorize_requests.append(AuthorizeRequest(params, response.status_code, error,
                                                        response.headers.get("location")))
        return response

    def _authorize_answer(self, params: dict[str, str]) -> tuple[Response, str | None]:
        client_id = params.get("client_id")
        redirect_uri = params.get("redirect_uri")
        if client_id not in self.clients:
            return OAuthError("invalid_client", f"unknown client_id {client_id!r}").response(), "invalid_client"
        if not redirect_uri or not self._redirect_allowed(client_id, redirect_uri):
            return (OAuthError("invalid_request", f"redirect_uri {redirect_uri!r} is not registered").response(),
                    "invalid_request")
        state = params.get("state")

        def refuse(error: str, description: str) -> tuple[Response, str]:
            query = {"error": error, "error_description": description, "iss": self.issuer}
            if state:
                query["state"] = state
            return RedirectResponse(_with_query(redirect_uri, query), status_code=302), error

        if params.get("response_type") != "code":
            return refuse("unsupported_response_type", "response_type must be code")
        if not state:
            return refuse("invalid_request", "state is required")
        if not params.get("code_challenge") or params.get("code_challenge_method") != "S256":
            return refuse("invalid_request", "PKCE with code_challenge_method=S256 is required")
        if self.deny_authorization:
            return refuse("access_denied", "the user denied the request")
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Code(
            client_id=client_id, subject=self.user or client_id, scope=params.get("scope") or self.default_scope,
            resource=params.get("resource"), audience=params.get("audience"),
            expires_at=time.time() + CODE_LIFETIME, redirect_uri=redirect_uri,
            code_challenge=params["code_challenge"],
        )
        location = _with_query(redirect_uri, {"code": code, "state": state, "iss": self.issuer})
        return RedirectResponse(location, status_code=302), None

    def _redirect_allowed(self, client_id: str, redirect_uri: str) -> bool:
        if client_id in self.redirect_uris:
            return redirect_uri in self.redirect_uris[client_id]
        parsed = urlparse(redirect_uri)
        return parsed.scheme == "http" and parsed.hostname in LOOPBACK_HOSTS and not parsed.fragment

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        grant_type = form.get("grant_type")
        client_id: str | None = form.get("client_id")
        method: str | None = None
        try:
            if self.token_endpoint_status is not None:
                raise OAuthError("temporarily_unavailable", "the authorization server is unavailable",
                                 self.token_endpoint_status)
            client_id, method = self._authenticate_client(request, form)
            if grant_type == "client_credentials":
                if self.clients.get(client_id) is None:
                    raise OAuthError("unauthorized_client", "a public client cannot use client_credentials")
                grant = _Grant(client_id, client_id, form.get("scope") or self.default_scope,
                               form.get("resource"), form.get("audience"), 0)
                body = self._issue(grant, refresh=self.refresh_for_client_credentials)
            elif grant_type == "authorization_code":
                body = self._issue(self._redeem_code(client_id, form), refresh=True)
            elif grant_type == "refresh_token":
                body = self._issue(self._redeem_refresh_token(client_id, form), refresh=True)
            else:
                raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
        except OAuthError as exc:
            self.token_requests.append(TokenRequest(grant_type, client_id, method, form.get("resource"),
                                                    form.get("audience"), form.get("scope"), exc.status, exc.error))
            return exc.response()
        self.token_requests.append(TokenRequest(grant_type, client_id, method, form.get("resource"),
                                                form.get("audience"), form.get("scope"), 200, None))
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _authenticate_client(self, request: Request, form: dict[str, str]) -> tuple[str, str]:
        header = request.headers.get("authorization", "")
        if header[:6].lower() == "basic ":
            challenge = {"WWW-Authenticate": 'Basic realm="mcpgw-test-as"'}
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
                raw_id, raw_secret = decoded.split(":", 1)
            except (ValueError, UnicodeDecodeError):
                raise OAuthError("invalid_client", "malformed Basic credentials", 401, challenge) from None
            client_id, secret = unquote(raw_id.replace("+", " ")), unquote(raw_secret.replace("+", " "))
            if form.get("client_id") not in (None, client_id):
                raise OAuthError("invalid_request", "client_id does not match the Basic credentials")
            if client_id not in self.clients or self.clients[client_id] is None or \
                    not secrets.compare_digest(str(self.clients[client_id]), secret):
                raise OAuthError("invalid_client", "client authentication failed", 401, challenge)
            return client_id, "client_secret_basic"
        client_id = form.get("client_id")
        if client_id is None:
            raise OAuthError("invalid_client", "no client authentication", 401)
        if "client_secret" in form:
            expected = self.clients.get(client_id)
            if expected is None or not secrets.compare_digest(expected, form["client_secret"]):
                raise OAuthError("invalid_client", "client authentication failed", 401)
            return client_id, "client_secret_post"
        if client_id in self.clients and self.clients[client_id] is None:
            return client_id, "none"
        raise OAuthError("invalid_client", "client authentication failed", 401)

    def _redeem_code(self, client_id: str, form: dict[str, str]) -> _Grant:
        code = self._codes.pop(form.get("code", ""), None)  # single use, whatever happens next
        if code is None or code.expires_at < time.time():
            raise OAuthError("invalid_grant", "unknown, used or expired authorization code")
        if code.client_id != client_id:
            raise OAuthError("invalid_grant", "the code was issued to another client")
        if form.get("redirect_uri") != code.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        verifier = form.get("code_verifier")
        if not verifier or not secrets.compare_digest(s256(verifier), code.code_challenge):
            raise OAuthError("invalid_grant", "PKCE verification failed")
        return _Grant(client_id, code.subject, code.scope, form.get("resource") or code.resource,
                      form.get("audience") or code.audience, 0)

    def _redeem_refresh_token(self, client_id: str, form: dict[str, str]) -> _Grant:
        token = form.get("refresh_token", "")
        grant = self.refresh_tokens.get(token)
        if grant is None or grant.expires_at < time.time():
            self.refresh_tokens.pop(token, None)
            raise OAuthError("invalid_grant", "unknown, used, revoked or expired refresh token")
        if grant.client_id != client_id:
            raise OAuthError("invalid_grant", "the refresh token was issued to another client")
        scope = grant.scope
        if form.get("scope"):
            if not set(form["scope"].split()) <= set(grant.scope.split()):
                raise OAuthError("invalid_scope", "a refresh cannot widen the scope")
            scope = form["scope"]
        del self.refresh_tokens[token]  # rotation: each refresh token works once
        return _Grant(client_id, grant.subject, scope, form.get("resource") or grant.resource,
                      form.get("audience") or grant.audience, 0)

    def _issue(self, grant: _Grant, refresh: bool) -> dict[str, Any]:
        lifetime = self.token_lifetime if self.next_token_lifetime is None else self.next_token_lifetime
        self.next_token_lifetime = None
        audience = grant.resource or grant.audience or self.audience
        token = self.mint_access_token(grant.client_id, subject=grant.subject, audience=audience,
                                       scope=grant.scope, lifetime=lifetime)
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime if self.report_expires_in is None else self.report_expires_in,
            "scope": grant.scope,
        }
        if refresh:
            refresh_token = secrets.token_urlsafe(32)
            self.refresh_tokens[refresh_token] = _Grant(grant.client_id, grant.subject, grant.scope, grant.resource,
                                                        grant.audience, time.time() + self.refresh_token_lifetime)
            body["refresh_token"] = refresh_token
        return body


def _jti(token: str) -> str | None:
    try:
        jti = jwt.decode(token, options={"verify_signature": False}).get("jti")
    except jwt.PyJWTError:
        return None
    return jti if isinstance(jti, str) else None


def _with_query(uri: str, params: dict[str, str]) -> str:
    return f"{uri}{'&' if urlparse(uri).query else '?'}{urlencode(params)}"


@contextlib.asynccontextmanager
async def running_auth_server(
    clients: dict[str, str | None] | None = None,
    *,
    server: AuthServer | None = None,
    **options: Any,
) -> AsyncIterator[AuthServer]:
    """Serve an ``AuthServer`` on 127.0.0.1 (ephemeral port) for the duration of the block.

    ``clients`` (client_id -> secret, None for a public client; default ``DEFAULT_CLIENTS``) and
    ``options`` (``audience``, ``token_lifetime``, ``refresh_token_lifetime``, ``default_scope``,
    ``user``, ``redirect_uris``, ``signing_key``) go to ``AuthServer``; or pass a ready ``server``.
    The socket is bound before uvicorn starts, so ``issuer`` is known and connectable at once.
    """
    auth = server or AuthServer(clients, **options)
    async with serving(auth) as base_url:
        auth.issuer = base_url
        yield auth


# ---------------------------------------------------------------------- the protected upstream


def protected_fixture_args(name: str, issuer: str, audience: str | None = None, scope: str | None = "mcp") -> list[str]:
    """tests/fixtures/upstream.py's arguments for a protected Streamable HTTP upstream."""
    args = fixture_args(name, "http") + ["--require-token", issuer]
    if audience is not None:
        args += ["--audience", audience]
    if scope:
        args += ["--scope", scope]
    return args


@contextlib.asynccontextmanager
async def running_protected_upstream(
    issuer: str,
    audience: str | None = None,
    scope: str | None = "mcp",
    name: str = "protected",
    startup_timeout: float = STARTUP_TIMEOUT,
) -> AsyncIterator[RunningUpstream]:
    """Start the fixture with ``--require-token issuer``; yield it (url, process, stderr) once accepting."""
    async with running_fixture(protected_fixture_args(name, issuer, audience, scope), startup_timeout) as upstream:
        yield upstream


@contextlib.asynccontextmanager
async def protected_upstream(
    issuer: str,
    audience: str | None = None,
    scope: str | None = "mcp",
    name: str = "protected",
    startup_timeout: float = STARTUP_TIMEOUT,
) -> AsyncIterator[str]:
    """``async with protected_upstream(auth.issuer) as url:`` -- the protected fixture's ``/mcp`` URL.

    ``audience``: the ``aud`` it requires (default: ``url`` itself, the RFC 8707 resource a client
    names); ``scope``: the scope it requires (None: none).
    """
    async with running_protected_upstream(issuer, audience, scope, name, startup_timeout) as upstream:
        yield upstream.url


class InMemoryTokenStorage:
    """The SDK's ``mcp.client.auth.TokenStorage`` protocol, in memory (``tokens`` may be preloaded)."""

    def __init__(self, tokens: Any = None, client_info: Any = None) -> None:
        self.tokens = tokens
        self.client_info = client_info
        self.stored: list[Any] = []
        """Every token set stored, in order."""

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        self.tokens = tokens
        self.stored.append(tokens)

    async def get_client_info(self) -> Any:
        return self.client_info

    async def set_client_info(self, client_info: Any) -> None:
        self.client_info = client_info


def protected_resource_metadata_url(url: str) -> str:
    """Where an upstream at ``url`` (``http://host:port/mcp``) serves its RFC 9728 metadata."""
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}/.well-known/oauth-protected-resource{parsed.path}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def www_authenticate_params(header: str) -> dict[str, str]:
    """The auth-params of a ``WWW-Authenticate: Bearer k="v", ...`` header (quoted values only)."""
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


__all__ = [
    "AuthServer",
    "AuthorizeRequest",
    "DEFAULT_CLIENTS",
    "InMemoryTokenStorage",
    "Introspection",
    "IssuedToken",
    "SeenRequest",
    "TokenRequest",
    "bearer",
    "pkce_pair",
    "protected_fixture_args",
    "protected_resource_metadata_url",
    "protected_upstream",
    "running_auth_server",
    "running_protected_upstream",
    "s256",
    "www_authenticate_params",
]
