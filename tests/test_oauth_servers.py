"""The upstream-OAuth test infrastructure (tests/oauth_servers.py) proves itself.

A local authorization server (``running_auth_server``) issues RS256 JWTs through client_credentials,
authorization_code + PKCE and rotating refresh tokens; the fixture upstream with ``--require-token``
(``protected_upstream``) accepts exactly the tokens it should: checked here with plain httpx2, with
the SDK ``Client`` carrying a bearer header, and with the SDK's own ``ClientCredentialsOAuthProvider``
(which discovers the AS from the upstream's 401 and re-authenticates on a later 401).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

import anyio
import httpx2
import jwt
import pytest
from mcp import Client, MCPError
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthToken
from oauth_servers import (
    AuthServer,
    InMemoryTokenStorage,
    bearer,
    new_signing_key,
    pkce_pair,
    protected_resource_metadata_url,
    protected_upstream,
    running_auth_server,
    running_protected_upstream,
    www_authenticate_params,
)

pytestmark = pytest.mark.anyio

TIMEOUT = 30  # seconds for a whole test: AS, upstream process, requests, shutdown
CLIENT_ID, SECRET = "gw", "gw-secret"
CLIENTS: dict[str, str | None] = {CLIENT_ID: SECRET, "other": "other-secret", "public-app": None}
REDIRECT = "http://127.0.0.1:9/callback"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@asynccontextmanager
async def stack(**options: Any) -> AsyncIterator[tuple[AuthServer, str, httpx2.AsyncClient]]:
    """An AS, a protected upstream trusting it, and a plain HTTP client, all bounded by TIMEOUT."""
    with anyio.fail_after(TIMEOUT):
        async with running_auth_server(CLIENTS, **options) as auth:
            async with protected_upstream(auth.issuer) as url:
                async with httpx2.AsyncClient(timeout=10) as http:
                    yield auth, url, http


async def client_credentials(http: httpx2.AsyncClient, auth: AuthServer, resource: str | None = None,
                             method: str = "basic", secret: str = SECRET, **form: str) -> httpx2.Response:
    data = {"grant_type": "client_credentials", **form}
    if resource is not None:
        data["resource"] = resource
    if method == "basic":
        return await http.post(auth.token_endpoint, data=data, auth=(CLIENT_ID, secret))
    return await http.post(auth.token_endpoint, data={**data, "client_id": CLIENT_ID, "client_secret": secret})


async def token_for(http: httpx2.AsyncClient, auth: AuthServer, url: str) -> str:
    response = await client_credentials(http, auth, resource=url)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


async def token_subject(url: str, token: str) -> str:
    """Call the protected upstream's ``token_subject`` with the SDK client and a fixed bearer header."""
    async with httpx2.AsyncClient(headers=bearer(token)) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            result = await client.call_tool("token_subject")
    assert not result.is_error
    return result.content[0].text  # type: ignore[union-attr]


async def post_initialize(http: httpx2.AsyncClient, url: str, token: str | None) -> httpx2.Response:
    headers = MCP_HEADERS | (bearer(token) if token is not None else {})
    return await http.post(url, json=INITIALIZE, headers=headers)


def assert_invalid_token(response: httpx2.Response, url: str) -> None:
    assert response.status_code == 401, response.text
    params = www_authenticate_params(response.headers["www-authenticate"])
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert params["error"] == "invalid_token"
    assert params["resource_metadata"] == protected_resource_metadata_url(url)


# ---------------------------------------------------------------------- the authorization server


async def test_metadata_jwks_and_token_claims() -> None:
    async with stack() as (auth, url, http):
        metadata = (await http.get(f"{auth.issuer}/.well-known/oauth-authorization-server")).json()
        assert metadata["issuer"] == auth.issuer
        assert metadata["token_endpoint"] == f"{auth.issuer}/token"
        assert metadata["authorization_endpoint"] == f"{auth.issuer}/authorize"
        assert metadata["code_challenge_methods_supported"] == ["S256"]
        assert {"client_credentials", "authorization_code", "refresh_token"} <= set(metadata["grant_types_supported"])
        assert metadata["token_endpoint_auth_methods_supported"][:2] == ["client_secret_basic", "client_secret_post"]

        response = await client_credentials(http, auth, resource=url)
        body = response.json()
        assert response.status_code == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 300
        assert "refresh_token" not in body  # RFC 6749 §4.4.3
        jwks = jwt.PyJWKSet.from_dict((await http.get(metadata["jwks_uri"])).json())
        kid = jwt.get_unverified_header(body["access_token"])["kid"]
        key = next(k for k in jwks.keys if k.key_id == kid)
        claims = jwt.decode(body["access_token"], key, algorithms=["RS256"], audience=url, issuer=auth.issuer)
        assert claims["sub"] == CLIENT_ID and claims["scope"] == "mcp" and claims["exp"] > claims["iat"]
        assert auth.token_requests[-1].auth_method == "client_secret_basic"
        assert auth.token_requests[-1].resource == url

        # No resource: aud is the `audience` parameter, else the server's configured audience, else absent.
        response = await client_credentials(http, auth, audience="urn:upstream")
        assert jwt.decode(response.json()["access_token"], options={"verify_signature": False})["aud"] == "urn:upstream"
        auth.audience = "urn:default"
        response = await client_credentials(http, auth)
        assert jwt.decode(response.json()["access_token"], options={"verify_signature": False})["aud"] == "urn:default"


@pytest.mark.parametrize("method", ["basic", "post"])
async def test_client_credentials_token_is_accepted_by_the_protected_upstream(method: str) -> None:
    async with stack() as (auth, url, http):
        response = await client_credentials(http, auth, resource=url, method=method)
        assert response.status_code == 200, response.text
        assert await token_subject(url, response.json()["access_token"]) == CLIENT_ID
        assert auth.grant_types == ["client_credentials"]
        assert auth.token_requests[0].auth_method == f"client_secret_{method}"
        assert auth.introspections and all(i.active for i in auth.introspections)


async def test_wrong_client_credentials_get_invalid_client() -> None:
    async with stack() as (auth, url, http):
        response = await client_credentials(http, auth, resource=url, secret="wrong")
        assert response.status_code == 401 and response.json()["error"] == "invalid_client"
        assert response.headers["www-authenticate"].startswith("Basic ")
        response = await client_credentials(http, auth, resource=url, method="post", secret="wrong")
        assert response.status_code == 401 and response.json()["error"] == "invalid_client"
        response = await http.post(auth.token_endpoint, data={"grant_type": "client_credentials"},
                                   auth=("nobody", "x"))
        assert response.status_code == 401 and response.json()["error"] == "invalid_client"
        response = await http.post(auth.token_endpoint, data={"grant_type": "client_credentials"})
        assert response.status_code == 401 and response.json()["error"] == "invalid_client"
        # A public client may not use client_credentials; an unknown grant type is refused.
        response = await http.post(auth.token_endpoint, data={"grant_type": "client_credentials",
                                                              "client_id": "public-app"})
        assert response.status_code == 400 and response.json()["error"] == "unauthorized_client"
        response = await http.post(auth.token_endpoint, data={"grant_type": "password"}, auth=(CLIENT_ID, SECRET))
        assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type"
        assert [(r.status, r.error) for r in auth.token_requests][:4] == [(401, "invalid_client")] * 4
        assert auth.granted("client_credentials") == 0

        auth.token_endpoint_status = 503
        response = await client_credentials(http, auth, resource=url)
        assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"


async def test_authorization_code_with_pkce_then_rotating_refresh_tokens() -> None:
    async with stack(user="alice") as (auth, url, http):
        verifier, challenge = pkce_pair()
        response = await http.get(auth.authorize_url(CLIENT_ID, REDIRECT, challenge, state="st-1", resource=url))
        assert response.status_code == 302
        location = response.headers["location"]
        assert location.startswith(REDIRECT + "?")
        query = {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
        assert query["state"] == "st-1" and query["iss"] == auth.issuer

        exchange = {"grant_type": "authorization_code", "code": query["code"], "redirect_uri": REDIRECT,
                    "client_id": CLIENT_ID, "client_secret": SECRET}
        wrong = await http.post(auth.token_endpoint, data=exchange | {"code_verifier": pkce_pair()[0]})
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"  # and the code is now spent

        response = await http.get(auth.authorize_url(CLIENT_ID, REDIRECT, challenge, state="st-2", resource=url))
        code = parse_qs(urlparse(response.headers["location"]).query)["code"][0]
        exchange["code"] = code
        response = await http.post(auth.token_endpoint, data=exchange | {"code_verifier": verifier})
        assert response.status_code == 200, response.text
        first = response.json()
        assert await token_subject(url, first["access_token"]) == "alice"
        again = await http.post(auth.token_endpoint, data=exchange | {"code_verifier": verifier})
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"  # single use

        refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        response = await http.post(auth.token_endpoint, data=refresh, auth=(CLIENT_ID, SECRET))
        assert response.status_code == 200, response.text
        second = response.json()
        assert second["refresh_token"] != first["refresh_token"] and second["access_token"] != first["access_token"]
        assert await token_subject(url, second["access_token"]) == "alice"  # same resource, same user
        reused = await http.post(auth.token_endpoint, data=refresh, auth=(CLIENT_ID, SECRET))
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"  # rotated out
        stolen = await http.post(auth.token_endpoint, auth=("other", "other-secret"),
                                 data=refresh | {"refresh_token": second["refresh_token"]})
        assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"

        auth.expire_all_refresh_tokens()
        expired = await http.post(auth.token_endpoint, auth=(CLIENT_ID, SECRET),
                                  data=refresh | {"refresh_token": second["refresh_token"]})
        assert expired.status_code == 400 and expired.json()["error"] == "invalid_grant"

        assert auth.grant_types == ["authorization_code"] * 3 + ["refresh_token"] * 4
        assert auth.granted("authorization_code") == 1 and auth.granted("refresh_token") == 1


async def test_revoked_refresh_token_and_public_client() -> None:
    async with stack() as (auth, url, http):
        verifier, challenge = pkce_pair()
        response = await http.get(auth.authorize_url("public-app", REDIRECT, challenge))
        code = parse_qs(urlparse(response.headers["location"]).query)["code"][0]
        response = await http.post(auth.token_endpoint, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": "public-app",
            "code_verifier": verifier, "resource": url})
        assert response.status_code == 200, response.text
        assert auth.token_requests[-1].auth_method == "none"
        assert await token_subject(url, response.json()["access_token"]) == "public-app"
        auth.revoke_all_refresh_tokens()
        response = await http.post(auth.token_endpoint, data={
            "grant_type": "refresh_token", "refresh_token": response.json()["refresh_token"], "client_id": "public-app"})
        assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_authorize_refusals() -> None:
    async with stack() as (auth, url, http):
        _, challenge = pkce_pair()
        response = await http.get(auth.authorize_url("nobody", REDIRECT, challenge))
        assert response.status_code == 400 and "location" not in response.headers
        response = await http.get(auth.authorize_url(CLIENT_ID, "https://evil.example/cb", challenge))
        assert response.status_code == 400 and "location" not in response.headers

        def error_of(response: httpx2.Response) -> str:
            assert response.status_code == 302
            return parse_qs(urlparse(response.headers["location"]).query)["error"][0]

        assert error_of(await http.get(auth.authorize_url(CLIENT_ID, REDIRECT, challenge, response_type="token"))) \
            == "unsupported_response_type"
        assert error_of(await http.get(auth.authorize_url(CLIENT_ID, REDIRECT, challenge, state=""))) \
            == "invalid_request"
        assert error_of(await http.get(auth.authorize_url(CLIENT_ID, REDIRECT, challenge,
                                                          code_challenge_method="plain"))) == "invalid_request"
        assert error_of(await http.get(auth.authorize_url(CLIENT_ID, REDIRECT, ""))) == "invalid_request"
        auth.deny_authorization = True
        assert error_of(await http.get(auth.authorize_url(CLIENT_ID, REDIRECT, challenge))) == "access_denied"
        assert [r.error for r in auth.authorize_requests] == [
            "invalid_client", "invalid_request", "unsupported_response_type", "invalid_request", "invalid_request",
            "invalid_request", "access_denied"]


# ---------------------------------------------------------------------- the protected upstream


async def test_no_token_gets_401_pointing_at_the_authorization_server() -> None:
    async with stack() as (auth, url, http):
        response = await post_initialize(http, url, None)
        assert_invalid_token(response, url)
        prm_url = www_authenticate_params(response.headers["www-authenticate"])["resource_metadata"]
        prm = (await http.get(prm_url)).json()
        assert prm["resource"] == url
        assert prm["authorization_servers"] == [auth.issuer]
        assert prm["scopes_supported"] == ["mcp"]
        response = await post_initialize(http, url, "not-a-jwt")
        assert_invalid_token(response, url)


async def test_expired_token_gets_401() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_auth_server(CLIENTS) as auth, running_protected_upstream(auth.issuer) as upstream, \
                httpx2.AsyncClient(timeout=10) as http:
            auth.next_token_lifetime = -10  # one-shot: already expired when issued
            response = await client_credentials(http, auth, resource=upstream.url)
            assert response.json()["expires_in"] == -10
            assert_invalid_token(await post_initialize(http, upstream.url, response.json()["access_token"]), upstream.url)
            assert "TOKEN rejected ExpiredSignatureError" in upstream.stderr()
            fresh = await token_for(http, auth, upstream.url)  # the switch was one-shot
            assert (await post_initialize(http, upstream.url, fresh)).status_code == 200


async def test_revoked_token_gets_401() -> None:
    async with stack() as (auth, url, http):
        token = await token_for(http, auth, url)
        assert (await post_initialize(http, url, token)).status_code == 200
        auth.revoke_all_access_tokens()
        assert_invalid_token(await post_initialize(http, url, token), url)
        assert [i.active for i in auth.introspections] == [True, False]
        fresh = await token_for(http, auth, url)
        assert await token_subject(url, fresh) == CLIENT_ID


async def test_wrong_audience_issuer_key_or_scope_is_refused() -> None:
    async with stack() as (auth, url, http):
        assert_invalid_token(await post_initialize(http, url, auth.mint_access_token(CLIENT_ID, audience="urn:x")), url)
        assert_invalid_token(await post_initialize(http, url, auth.mint_access_token(CLIENT_ID)), url)  # no aud
        foreign = auth.mint_access_token(CLIENT_ID, audience=url, signing_key=new_signing_key())
        assert_invalid_token(await post_initialize(http, url, foreign), url)
        other_issuer = auth.mint_access_token(CLIENT_ID, audience=url, issuer="http://127.0.0.1:1")
        assert_invalid_token(await post_initialize(http, url, other_issuer), url)
        # A valid token without the required scope: 403 insufficient_scope (the SDK's required_scopes).
        response = await post_initialize(http, url, auth.mint_access_token(CLIENT_ID, audience=url, scope="other"))
        assert response.status_code == 403
        assert www_authenticate_params(response.headers["www-authenticate"])["error"] == "insufficient_scope"
        assert (await post_initialize(http, url, auth.mint_access_token(CLIENT_ID, audience=url))).status_code == 200


# ---------------------------------------------------------------------- the SDK's own OAuth client


class RequestLog:
    """Every HTTP exchange an httpx2 client made (the auth flow's own requests included)."""

    def __init__(self, auth: AuthServer, url: str) -> None:
        self.auth, self.url, self.seen = auth, url, []

    async def __call__(self, response: httpx2.Response) -> None:
        request = response.request
        where = "upstream" if str(request.url) == self.url else urlparse(str(request.url)).path
        self.seen.append((request.method, where, response.status_code, request.headers.get("authorization")))

    def upstream(self) -> list[tuple[int, str | None]]:
        """(status, Authorization header) of each request to the upstream's /mcp."""
        return [(status, authorization) for _, where, status, authorization in self.seen if where == "upstream"]

    def mark(self) -> int:
        return len(self.seen)


def provider(auth: AuthServer, url: str, storage: InMemoryTokenStorage | None = None) -> ClientCredentialsOAuthProvider:
    return ClientCredentialsOAuthProvider(server_url=url, storage=storage or InMemoryTokenStorage(),
                                          client_id=CLIENT_ID, client_secret=SECRET, issuer=auth.issuer)


@asynccontextmanager
async def sdk_client(auth: AuthServer, url: str, oauth: ClientCredentialsOAuthProvider) -> AsyncIterator[
        tuple[Client, RequestLog]]:
    log = RequestLog(auth, url)
    async with httpx2.AsyncClient(auth=oauth, event_hooks={"response": [log]}, timeout=10) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            yield client, log


async def subject(client: Client) -> str:
    result = await client.call_tool("token_subject")
    assert not result.is_error
    return result.content[0].text  # type: ignore[union-attr]


async def test_sdk_provider_discovers_the_as_and_reauthenticates_after_revocation() -> None:
    async with stack() as (auth, url, _):
        async with sdk_client(auth, url, provider(auth, url)) as (client, log):
            assert await subject(client) == CLIENT_ID
            # Discovery from the first (tokenless) 401: PRM, then RFC 8414 metadata, then the token.
            assert [(m, w, s) for m, w, s, _ in log.seen[:4]] == [
                ("POST", "upstream", 401),
                ("GET", "/.well-known/oauth-protected-resource/mcp", 200),
                ("GET", "/.well-known/oauth-authorization-server", 200),
                ("POST", "/token", 200),
            ]
            assert log.seen[0][3] is None and auth.token_requests[0].resource == url  # RFC 8707 from the PRM
            assert auth.token_requests[0].auth_method == "client_secret_basic"

            auth.revoke_all_access_tokens()
            mark = log.mark()
            assert await subject(client) == CLIENT_ID  # transparently: 401, rediscovery, new token, one retry
            after = log.seen[mark:]
            assert [(m, w, s) for m, w, s, _ in after[:5]] == [
                ("POST", "upstream", 401),
                ("GET", "/.well-known/oauth-protected-resource/mcp", 200),
                ("GET", "/.well-known/oauth-authorization-server", 200),
                ("POST", "/token", 200),
                ("POST", "upstream", 200),
            ]
            assert after[0][3] is not None and after[0][3] != after[4][3]  # the revoked token, then a new one
        assert auth.grant_types == ["client_credentials", "client_credentials"]


async def test_sdk_provider_reauthenticates_when_its_stored_token_has_expired() -> None:
    async with stack() as (auth, url, http):
        auth.next_token_lifetime = -10
        stale = OAuthToken.model_validate((await client_credentials(http, auth, resource=url)).json())
        # Tokens loaded from storage carry no expiry time for the provider: it sends this one as it is.
        async with sdk_client(auth, url, provider(auth, url, InMemoryTokenStorage(stale))) as (client, log):
            assert await subject(client) == CLIENT_ID
            assert log.upstream()[:2] == [(401, f"Bearer {stale.access_token}"), (200, log.upstream()[1][1])]
            assert log.upstream()[1][1] != f"Bearer {stale.access_token}"
        assert auth.granted("client_credentials") == 2


async def test_sdk_provider_without_refresh_token_does_not_renew_ahead_of_expiry() -> None:
    async with stack() as (auth, url, _):
        async with sdk_client(auth, url, provider(auth, url)) as (client, log):
            assert await subject(client) == CLIENT_ID
            auth.report_expires_in = -1  # the next token looks expired to the client at once (its JWT is fine)
            auth.revoke_all_access_tokens()
            assert await subject(client) == CLIENT_ID
            granted = auth.granted("client_credentials")
            mark = log.mark()
            assert await subject(client) == CLIENT_ID
            # Believing its token expired and holding no refresh token, it sends the request bare, takes
            # the 401, rediscovers and fetches a new token: one client_credentials per request.
            after = log.seen[mark:]
            assert after[0][:3] == ("POST", "upstream", 401) and after[0][3] is None
            assert auth.granted("client_credentials") == granted + 1


async def test_sdk_provider_with_refresh_token_refreshes_ahead_of_expiry() -> None:
    async with stack() as (auth, url, _):
        auth.refresh_for_client_credentials = True
        auth.report_expires_in = -1  # the first token looks expired to the client as soon as it has it
        async with sdk_client(auth, url, provider(auth, url)) as (client, log):
            assert await subject(client) == CLIENT_ID
            auth.report_expires_in = None
            mark = log.mark()
            assert await subject(client) == CLIENT_ID
            after = log.seen[mark:]
            # Its token looks expired and it holds a refresh token: it refreshes before sending, no 401.
            assert [(m, w, s) for m, w, s, _ in after[:2]] == [("POST", "/token", 200), ("POST", "upstream", 200)]
            assert [status for _, where, status, _ in after if where == "upstream"] == [200]
        assert auth.token_requests[-1].grant_type == "refresh_token"


async def test_sdk_provider_retries_only_once() -> None:
    async with stack() as (auth, url, _):
        async with sdk_client(auth, url, provider(auth, url)) as (client, log):
            assert await subject(client) == CLIENT_ID
            auth.revoke_all_access_tokens()
            auth.next_token_lifetime = -10  # the re-authentication yields a dead token too
            mark = log.mark()
            with pytest.raises(MCPError):
                await subject(client)
            assert [status for _, where, status, _ in log.seen[mark:] if where == "upstream"] == [401, 401]
        assert auth.grant_types == ["client_credentials", "client_credentials"]


async def test_basic_credentials_are_form_urlencoded() -> None:
    """RFC 6749 §2.3.1: Basic credentials are form-urlencoded first (as the SDK sends them)."""
    with anyio.fail_after(TIMEOUT):
        async with running_auth_server({"a:b": "p@ss w%"}) as auth, httpx2.AsyncClient(timeout=10) as http:
            raw = base64.b64encode(f"{quote('a:b', safe='')}:{quote('p@ss w%', safe='')}".encode()).decode()
            response = await http.post(auth.token_endpoint, data={"grant_type": "client_credentials"},
                                       headers={"Authorization": f"Basic {raw}"})
            assert response.status_code == 200, response.text
            assert jwt.decode(response.json()["access_token"], options={"verify_signature": False})["sub"] == "a:b"
