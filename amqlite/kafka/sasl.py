"""SaslHandshake (key 17) and SaslAuthenticate (key 36): PLAIN and
SCRAM-SHA-256/512 against amqlite's users.

The client names a mechanism (SaslHandshake v1), then sends its tokens in
SaslAuthenticate requests (v0-2). PLAIN checks the password against the
user's hash, as AMQP's PLAIN does. SCRAM (RFC 5802, 7677) needs the
user's SCRAM credential, made when the password was set in clear (the
config file, the management API, a definitions import; ``User.scram``):
a RabbitMQ-style hash cannot give one, so a user known by its hash only
uses PLAIN. Either way the
loopback rule holds, and the user must have access to ``kafka_vhost``.
A failed authentication is SASL_AUTHENTICATION_FAILED, after which the
connection closes, as Kafka's does, both after a delay that grows with
the address's recent failures (``FailedLogins``); the log line says why,
the client only that it failed.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import os
from typing import Any

import attrs

from ..auth import LoginRefused
from ..log import get_logger
from .apis import Api
from .protocol import ErrorCode, Request, build
from .session import Session

log = get_logger(__name__)

SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
#: Mechanism -> hashlib name (None: PLAIN).
MECHANISMS: dict[str, str | None] = {"PLAIN": None, "SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
#: What the client hears, whatever the reason (Kafka's words).
_FAILED = "Authentication failed: Invalid username or password"


class _Refused(Exception):
    """Authentication fails; the message is for the log only."""


@attrs.define
class SaslState:
    """One connection's authentication in progress."""

    mechanism: str
    #: SCRAM, between its two messages.
    user: str | None = None
    nonce: str = ""
    first_bare: str = ""
    server_first: str = ""
    gs2_header: str = ""


def sasl_handshake(session: Session, request: Request, now: float) -> Any:
    cls = request.response_type()
    mechanism = request.body.mechanism
    if session.user is not None and session.mechanism != "anonymous" or session.sasl is not None:
        code = ErrorCode.illegal_sasl_state
    elif mechanism not in MECHANISMS:
        code = ErrorCode.unsupported_sasl_mechanism
    else:
        code = ErrorCode.none
        session.sasl = SaslState(mechanism)
    return build(cls, error_code=code, mechanisms=tuple(MECHANISMS))


def sasl_authenticate(session: Session, request: Request, now: float) -> Any:
    cls = request.response_type()
    state = session.sasl
    if not isinstance(state, SaslState) or (session.user is not None and session.mechanism != "anonymous"):
        return _reply(cls, ErrorCode.illegal_sasl_state, "SaslAuthenticate before SaslHandshake", b"")
    token = bytes(request.body.auth_bytes)
    try:
        if state.mechanism == "PLAIN":
            challenge = _plain(session, token)
        elif state.user is None:
            challenge = _scram_first(session, state, token)
        else:
            challenge = _scram_final(session, state, token)
    except _Refused as refused:
        name = state.user
        log.warning("kafka.login_refused", peer=session.peer, user=name, mechanism=state.mechanism,
                    reason=str(refused))
        session.login_failed = f"authentication failed ({state.mechanism})"
        return _reply(cls, ErrorCode.sasl_authentication_failed, _FAILED, b"")
    return _reply(cls, ErrorCode.none, None, challenge)


def _reply(cls: type[Any], code: ErrorCode, message: str | None, token: bytes) -> Any:
    return build(cls, error_code=code, error_message=message, auth_bytes=token,
                 session_lifetime=datetime.timedelta(0))


def _login(session: Session, name: str, password: str | None, mechanism: str) -> None:
    try:
        user = session.users.authenticate(name, password, loopback=session.peer_loopback)
    except LoginRefused as refused:
        raise _Refused(refused.reason) from None
    if (reason := session.login(user, mechanism)) is not None:
        raise _Refused(reason)
    log.info("kafka.login", peer=session.peer, user=name, mechanism=mechanism, client_id=session.client_id)


def _plain(session: Session, token: bytes) -> bytes:
    parts = token.split(b"\0")
    if len(parts) != 3:
        raise _Refused("malformed PLAIN token")
    try:
        authzid, name, password = (part.decode() for part in parts)
    except UnicodeDecodeError:
        raise _Refused("PLAIN token is not UTF-8") from None
    assert session.sasl is not None
    session.sasl.user = name
    if authzid and authzid != name:
        raise _Refused(f"authorization id {authzid!r} is not the user's")
    _login(session, name, password, "PLAIN")
    return b""


def _scram_first(session: Session, state: SaslState, token: bytes) -> bytes:
    """client-first-message -> server-first-message."""
    text = _text(token)
    gs2_flag, authzid, bare = (text.split(",", 2) + ["", ""])[:3]
    if gs2_flag not in ("n", "y") or (authzid and not authzid.startswith("a=")):
        raise _Refused("channel binding is not supported, or a malformed client-first message")
    fields = _fields(bare)
    name, client_nonce = _saslname(fields.get("n", "")), fields.get("r", "")
    if not name or not client_nonce:
        raise _Refused("client-first message without a user or a nonce")
    state.user = name
    if authzid and _saslname(authzid[2:]) != name:
        raise _Refused("authorization id is not the user's")
    hash_name = MECHANISMS[state.mechanism]
    assert hash_name is not None
    credential = session.users.scram_credential(name, hash_name)
    if credential is None:
        raise _Refused("unknown user, or no SCRAM credential (the password is known by its hash only)")
    state.nonce = client_nonce + base64.b64encode(os.urandom(18)).decode()
    state.first_bare = bare
    state.gs2_header = f"{gs2_flag},{authzid},"
    state.server_first = f"r={state.nonce},s={base64.b64encode(credential.salt).decode()},i={credential.iterations}"
    return state.server_first.encode()


def _scram_final(session: Session, state: SaslState, token: bytes) -> bytes:
    """client-final-message -> server-final-message, once the proof holds."""
    text = _text(token)
    without_proof, _, proof_text = text.rpartition(",p=")
    fields = _fields(without_proof)
    if fields.get("r") != state.nonce:
        raise _Refused("nonce mismatch")
    if fields.get("c") != base64.b64encode(state.gs2_header.encode()).decode():
        raise _Refused("channel binding mismatch")
    hash_name = MECHANISMS[state.mechanism]
    assert hash_name is not None and state.user is not None
    credential = session.users.scram_credential(state.user, hash_name)
    if credential is None:
        raise _Refused("the user went away")
    try:
        proof = base64.b64decode(proof_text, validate=True)
    except ValueError:
        raise _Refused("malformed proof") from None
    auth_message = f"{state.first_bare},{state.server_first},{without_proof}".encode()
    signature = hmac.new(credential.stored_key, auth_message, hash_name).digest()
    if len(proof) != len(signature):
        raise _Refused("malformed proof")
    client_key = bytes(a ^ b for a, b in zip(proof, signature))
    if not hmac.compare_digest(hashlib.new(hash_name, client_key).digest(), credential.stored_key):
        raise _Refused("bad password")
    _login(session, state.user, None, state.mechanism)
    server_signature = hmac.new(credential.server_key, auth_message, hash_name).digest()
    return b"v=" + base64.b64encode(server_signature)


def _text(token: bytes) -> str:
    try:
        return token.decode()
    except UnicodeDecodeError:
        raise _Refused("SCRAM message is not UTF-8") from None


def _fields(text: str) -> dict[str, str]:
    """``a=1,b=2`` as a dict; the first of a repeated key."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if sep and len(key) == 1:
            fields.setdefault(key, value)
    return fields


def _saslname(text: str) -> str:
    """RFC 5802's escaping of "," and "=" in names."""
    return text.replace("=2C", ",").replace("=3D", "=")


APIS = [
    Api(SASL_HANDSHAKE, 1, 1, sasl_handshake, before_auth=True),
    Api(SASL_AUTHENTICATE, 0, 2, sasl_authenticate, before_auth=True),
]
