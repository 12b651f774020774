"""Connection negotiation (amqp/handshake.py) with authentication passed in
as a function, so no user store is needed."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from amqlite.amqp import spec
from amqlite.amqp.handshake import Handshake, Limits
from amqlite.auth import LoginRefused, User
from amqlite.core import errors
from amqlite.core.permissions import FULL
from wire import amqplain, plain

ALICE = User("alice", "unused", {"/app": FULL})
OURS = Limits(2047, 131072, 60)


def authenticate(name: str, password: str) -> User:
    if (name, password) != ("alice", "s3cret"):
        raise LoginRefused("bad password")
    return ALICE


@pytest.mark.parametrize("start_ok", [plain("alice", "s3cret"), amqplain("alice", "s3cret")], ids=["PLAIN", "AMQPLAIN"])
def test_start_ok_asks_the_function_it_was_given_and_proposes_our_limits(start_ok: spec.Connection.StartOk) -> None:
    handshake = Handshake(authenticate, OURS)
    tune = handshake.start_ok(start_ok)
    assert handshake.user is ALICE
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)


def test_a_refused_login_is_403_and_only_the_log_says_why() -> None:
    handshake = Handshake(authenticate, OURS, peer="10.0.0.1:5")
    with capture_logs() as logs, pytest.raises(errors.ConnectionError_) as raised:
        handshake.start_ok(plain("alice", "wrong"))
    assert raised.value.reply_code == 403 and "bad password" not in raised.value.reply_text
    assert logs == [{"event": "connection.login_refused", "log_level": "warning", "peer": "10.0.0.1:5",
                     "user": "alice", "mechanism": "PLAIN", "reason": "bad password"}]
    assert handshake.user is None


def test_tune_ok_takes_the_clients_lower_limits_and_refuses_higher_ones() -> None:
    assert Handshake(authenticate, OURS).tune_ok(spec.Connection.TuneOk(0, 65536, 30)) == Limits(2047, 65536, 30)
    for too_much in (spec.Connection.TuneOk(4000, 65536, 30), spec.Connection.TuneOk(0, 262144, 30),
                     spec.Connection.TuneOk(0, 1024, 30)):
        with pytest.raises(errors.NotAllowed):
            Handshake(authenticate, OURS).tune_ok(too_much)


def test_open_checks_that_the_vhost_exists_then_the_users_access() -> None:
    handshake = Handshake(authenticate, OURS)
    handshake.start_ok(plain("alice", "s3cret"))
    assert handshake.open(spec.Connection.Open("/app"), {"/", "/app"}) == "/app"
    with pytest.raises(errors.NotAllowed, match="not found"):
        handshake.open(spec.Connection.Open("/nope"), {"/", "/app"})
    with pytest.raises(errors.NotAllowed, match="refused for user 'alice'"):
        handshake.open(spec.Connection.Open("/"), {"/", "/app"})
