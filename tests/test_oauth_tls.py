"""OAuth 2.1 access tokens and TLS on the gateway's HTTP front, end to end.

A local JWKS server on 127.0.0.1 publishes the key an in-test "authorization server" signs tokens
with; the real ``mcpgw serve`` validates them. Users get: a valid token with the required scope
is let in (an SDK client works end to end); an expired one, one signed by another key, one for
another audience or from another issuer gets 401 with ``error="invalid_token"`` and a
``resource_metadata`` pointer to the Protected Resource Metadata (RFC 9728), which names the
authorization server; a token without the required scope gets 403 ``insufficient_scope``. With
``gateway.http.tls`` the gateway serves HTTPS with the configured certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from gateway_harness import gateway_http, write_config
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from upstreams import fixture_args

pytestmark = pytest.mark.anyio
WAIT = 60
ISSUER = "https://auth.example.test"
AUDIENCE = "mcpgw-test"
SCOPE = "mcp:call"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


SIGNING_KEY, OTHER_KEY = _key(), _key()


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    """A JWKS endpoint publishing SIGNING_KEY's public half under kid "k1"."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(SIGNING_KEY.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks"
    server.shutdown()
    server.server_close()


def token(key: rsa.RSAPrivateKey = SIGNING_KEY, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300, "scope": SCOPE, **claims}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "k1"})


def config(tmp_path: Path, jwks: str, **http: Any) -> Path:
    body = {"version": 1,
            "gateway": {"http": http} if http else {},
            "servers": {"alpha": {"command": sys.executable, "args": fixture_args("alpha", "stdio")}},
            "auth": {"oauth": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": jwks, "required_scopes": [SCOPE],
                               "authorization_servers": [ISSUER]}}}
    return write_config(tmp_path, json.dumps(body))


async def test_a_valid_token_is_let_in_and_an_sdk_client_works(tmp_path: Path, jwks_url: str) -> None:
    with anyio.fail_after(WAIT):
        async with gateway_http(config(tmp_path, jwks_url)) as gw, \
                httpx2.AsyncClient(headers={"Authorization": f"Bearer {token()}"}) as http, \
                Client(streamable_http_client(gw.url, http_client=http)) as client:
            result = await client.call_tool("alpha__echo", {"text": "signed in"})
    assert result.content[0].text == "signed in"  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["expired", "other key", "other audience", "other issuer", "not a jwt", "none alg"])
async def test_a_bad_token_gets_401_pointing_at_the_resource_metadata(tmp_path: Path, jwks_url: str, bad: str) -> None:
    now = int(time.time())
    presented = {
        "expired": token(exp=now - 3600, iat=now - 7200),
        "other key": token(OTHER_KEY),
        "other audience": token(aud="someone-else"),
        "other issuer": token(iss="https://evil.example.test"),
        "not a jwt": "abc.def.ghi",
        "none alg": jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "scope": SCOPE}, None,
                               algorithm="none"),
    }[bad]
    with anyio.fail_after(WAIT):
        async with gateway_http(config(tmp_path, jwks_url)) as gw, httpx2.AsyncClient() as http:
            response = await http.post(gw.url, json=INIT, headers={**HEADERS, "Authorization": f"Bearer {presented}"})
            assert response.status_code == 401
            challenge = response.headers["www-authenticate"]
            assert 'error="invalid_token"' in challenge
            metadata_url = challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
            assert metadata_url == f"{gw.base}/.well-known/oauth-protected-resource/mcp"
            document = (await http.get(metadata_url)).json()
    assert document["resource"] == gw.url
    assert document["authorization_servers"] == [ISSUER]
    assert document["scopes_supported"] == [SCOPE]


async def test_a_token_without_the_required_scope_gets_403(tmp_path: Path, jwks_url: str) -> None:
    with anyio.fail_after(WAIT):
        async with gateway_http(config(tmp_path, jwks_url)) as gw, httpx2.AsyncClient() as http:
            response = await http.post(gw.url, json=INIT,
                                       headers={**HEADERS, "Authorization": f"Bearer {token(scope='read')}"})
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert "mcp:call" in response.json()["error"]["message"]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def test_the_gateway_serves_https_with_the_configured_certificate(tmp_path: Path) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    body = {"version": 1, "gateway": {"http": {"tls": {"cert_file": str(cert_file), "key_file": str(key_file)}}},
            "servers": {"alpha": {"command": sys.executable, "args": fixture_args("alpha", "stdio")}}}
    with anyio.fail_after(WAIT):
        async with gateway_http(write_config(tmp_path, json.dumps(body))) as gw:
            assert gw.url.startswith("https://")
            async with httpx2.AsyncClient(verify=ssl.create_default_context(cafile=str(cert_file))) as http:
                assert (await http.get(f"{gw.base}/livez")).status_code == 200
                async with Client(streamable_http_client(gw.url, http_client=http)) as client:
                    result = await client.call_tool("alpha__echo", {"text": "over tls"})
            assert result.content[0].text == "over tls"  # type: ignore[union-attr]
            async with httpx2.AsyncClient() as unverified:  # the system's trust store does not know this certificate
                with pytest.raises(httpx2.ConnectError):
                    await unverified.get(f"{gw.base}/livez")
