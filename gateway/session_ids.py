"""Session ids that carry their own session, so any replica can serve any handshake-era session.

With ``gateway.http.session_signing_key`` set, a new Streamable HTTP session's id is not a random
number that only the replica which issued it knows, but a small signed document: the endpoint it
belongs to, what the client said in its ``initialize`` (protocol version, capabilities, name and
version), and the credentials that opened it. A replica that receives a request for a session it
has never seen checks the signature and rebuilds the session from the id alone: no shared store,
nothing to synchronise, and a replica that dies loses nothing but the calls it was running.

The id is ``s1.<payload>.<mac>``: ``payload`` is base64url JSON, ``mac`` base64url of
HMAC-SHA256 over ``s1.<payload>`` with the shared key. Any change to either part, or an id signed
with another key, fails ``verify``; the comparison is constant-time. The payload is signed, not
encrypted: it holds only what the client itself sent and the name of its credentials (never a
key), and it travels only between that client and the gateway.

Pure functions: no I/O, no clock but the ``issued`` time passed in."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any, Mapping

VERSION = "s1"
MAX_ID_LENGTH = 4096  # a header the size of a page; ids longer than that are not ours
_CLIENT_INFO_KEYS = ("name", "version", "title")  # enough to name the client; icons etc. stay out


@dataclass(frozen=True, slots=True)
class SessionClaims:
    """What a signed session id says: whose session, on which endpoint, opened how."""

    endpoint: str
    initialize: Mapping[str, Any]  # the client's ``initialize`` params (trimmed): negotiated again on rebuild
    owner: str | None  # the name of the credentials that opened it; None when opened without (lazy auth)


def issue(key: str, endpoint: str, initialize: Mapping[str, Any], owner: str | None) -> str:
    """A new session id for a client that sent ``initialize`` on ``endpoint`` as ``owner``."""
    payload = {"e": endpoint, "i": _trimmed(initialize), "o": owner, "n": secrets.token_urlsafe(12)}
    body = f"{VERSION}.{_b64(json.dumps(payload, separators=(',', ':'), sort_keys=True).encode())}"
    return f"{body}.{_b64(_mac(key, body))}"


def verify(key: str, session_id: str) -> SessionClaims | None:
    """The claims of ``session_id`` if it was issued with ``key`` and not altered; None otherwise
    (a random id of an unsigned gateway, a forged one, one signed with a rotated-out key)."""
    if len(session_id) > MAX_ID_LENGTH or not session_id.startswith(VERSION + "."):
        return None
    body, _, mac = session_id.rpartition(".")
    try:
        presented = _unb64(mac)
    except (ValueError, binascii.Error):
        return None
    if not hmac.compare_digest(presented, _mac(key, body)):
        return None
    try:
        payload = json.loads(_unb64(body[len(VERSION) + 1:]))
        return SessionClaims(endpoint=str(payload["e"]), initialize=dict(payload["i"]), owner=payload["o"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None  # signed by us yet unreadable: only a bug or a leaked key could make one


def is_signed(session_id: str) -> bool:
    """Does the id look like one of ours (whatever its signature)? Lets a replica tell a stale
    random id from a signed one when it explains a refusal."""
    return session_id.startswith(VERSION + ".")


def _trimmed(initialize: Mapping[str, Any]) -> dict[str, Any]:
    """The ``initialize`` params a rebuilt session needs, and not the rest (``_meta``, icons)."""
    info = initialize.get("clientInfo")
    info = {k: info[k] for k in _CLIENT_INFO_KEYS if k in info} if isinstance(info, Mapping) else {}
    return {"protocolVersion": initialize.get("protocolVersion"),
            "capabilities": initialize.get("capabilities") or {}, "clientInfo": info}


def _mac(key: str, body: str) -> bytes:
    return hmac.new(key.encode(), body.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
