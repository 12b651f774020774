"""Errors carry the reply code and the level (channel or connection) that the
AMQP spec and RabbitMQ give them."""

from __future__ import annotations

import inspect

import pytest
from support import props

from amqlite.core import errors
from amqlite.core.broker import Broker

# AMQP 0-9-1 spec, section 1.2: soft errors close the channel, hard ones the connection.
SOFT = {311, 312, 313, 403, 404, 405, 406}
HARD = {320, 402, 501, 502, 503, 504, 505, 506, 530, 540, 541}

ERROR_CLASSES = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.AMQPError) and cls not in (errors.AMQPError, errors.ChannelError, errors.ConnectionError_)
]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_error_class_level_matches_spec(cls):
    error = cls("text")
    assert error.reply_code in SOFT | HARD
    assert error.connection_level == (error.reply_code in HARD)
    assert isinstance(error, errors.ConnectionError_ if error.connection_level else errors.ChannelError)


def test_reply_text_uses_rabbitmq_format():
    error = errors.NotFound("no queue 'q' in vhost '/'")
    assert error.reply_text == "NOT_FOUND - no queue 'q' in vhost '/'"
    assert str(error) == error.reply_text
    assert errors.ChannelError("x", reply_code=errors.NO_ROUTE).reply_text == "NO_ROUTE - x"


def _setup(broker):
    ch = broker.connect().open_channel()
    ch.declare_queue("q", now=0)
    ch.declare_queue("excl", exclusive=True, now=0)
    ch.declare_queue("consumed", now=0)
    ch.consume("consumed", consumer_tag="taken", exclusive=True, now=0)
    ch.declare_exchange("internal", "fanout", internal=True)
    ch.declare_exchange("h", "headers")
    ch.publish(b"x", routing_key="q", now=0)
    return ch


CASES = {
    # name: (operation, reply code, connection level)
    "passive exchange missing": (lambda b, ch: ch.declare_exchange("nope", "direct", passive=True), 404, False),
    "passive queue missing": (lambda b, ch: ch.declare_queue("nope", passive=True, now=0), 404, False),
    "publish to missing exchange": (lambda b, ch: ch.publish(b"x", exchange="nope", now=0), 404, False),
    "bind missing queue": (lambda b, ch: ch.bind_queue("nope", "amq.direct"), 404, False),
    "get from missing queue": (lambda b, ch: ch.get("nope", now=0), 404, False),
    "declare amq. exchange": (lambda b, ch: ch.declare_exchange("amq.new", "direct"), 403, False),
    "declare amq. queue": (lambda b, ch: ch.declare_queue("amq.new", now=0), 403, False),
    "publish to internal": (lambda b, ch: ch.publish(b"x", exchange="internal", now=0), 403, False),
    "delete default exchange": (lambda b, ch: ch.delete_exchange(""), 403, False),
    "consume exclusive in use": (lambda b, ch: ch.consume("consumed", now=0), 403, False),
    "exclusive queue elsewhere": (
        lambda b, ch: b.connect().open_channel().get("excl", now=0),
        405,
        False,
    ),
    "unknown delivery tag": (lambda b, ch: ch.ack(42, now=0), 406, False),
    "inequivalent queue": (lambda b, ch: ch.declare_queue("q", durable=True, now=0), 406, False),
    "inequivalent exchange": (lambda b, ch: ch.declare_exchange("h", "topic"), 406, False),
    "bad queue argument": (
        lambda b, ch: ch.declare_queue("bad", arguments={"x-max-length": "ten"}, now=0),
        406,
        False,
    ),
    "bad expiration": (
        lambda b, ch: ch.publish(b"x", routing_key="q", properties=props(expiration="soon"), now=0),
        406,
        False,
    ),
    "bad x-match": (lambda b, ch: ch.bind_queue("q", "h", "", {"x-match": "most"}), 406, False),
    "delete queue in use": (lambda b, ch: ch.delete_queue("consumed", if_unused=True, now=0), 406, False),
    "delete queue not empty": (lambda b, ch: ch.delete_queue("q", if_empty=True, now=0), 406, False),
    "tx commit without select": (lambda b, ch: ch.tx_commit(now=0), 406, False),
    "delayed without type": (lambda b, ch: ch.declare_exchange("d", "x-delayed-message"), 406, False),
    "consumer tag reuse": (lambda b, ch: ch.consume("q", consumer_tag="taken", now=0), 530, True),
    "unknown vhost": (lambda b, ch: b.connect("nope"), 530, True),
    "unknown exchange type": (lambda b, ch: ch.declare_exchange("e", "nonsense"), 406, False),
    "recover requeue false": (lambda b, ch: ch.recover(requeue=False, now=0), 540, True),
    "prefetch size": (lambda b, ch: ch.qos(0, prefetch_size=4096, now=0), 540, True),
    "channel opened twice": (lambda b, ch: ch.connection.open_channel(ch.number), 504, True),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_operation_raises_with_code_and_level(case):
    operation, code, connection_level = CASES[case]
    broker = Broker()
    ch = _setup(broker)
    with pytest.raises(errors.AMQPError) as info:
        operation(broker, ch)
    assert info.value.reply_code == code
    assert info.value.connection_level is connection_level
    assert info.value.reply_text.startswith(errors.REPLY_NAMES[code] + " - ")


def test_consumer_tag_reuse_text_matches_rabbitmq(ch):
    ch.declare_queue("q", now=0)
    ch.consume("q", consumer_tag="t", now=0)
    with pytest.raises(errors.NotAllowed) as info:
        ch.consume("q", consumer_tag="t", now=0)
    assert info.value.reply_text == "NOT_ALLOWED - attempt to reuse consumer tag 't'"


def test_unknown_exchange_type_text_matches_rabbitmq(ch):
    with pytest.raises(errors.PreconditionFailed) as info:
        ch.declare_exchange("e", "nonsense")
    assert info.value.reply_text == "PRECONDITION_FAILED - unknown exchange type 'nonsense'"


def test_failed_operation_leaves_no_partial_state(broker, ch):
    ch.declare_queue("q", now=0)
    ch.consume("q", consumer_tag="t", now=0)
    with pytest.raises(errors.NotAllowed):
        ch.consume("q", consumer_tag="t", now=0)
    assert broker.vhosts["/"].queues["q"].consumer_count == 1
    with pytest.raises(errors.PreconditionFailed):
        ch.declare_queue("bad", arguments={"x-max-priority": 1000}, now=0)
    assert "bad" not in broker.vhosts["/"].queues
