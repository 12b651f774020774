"""The channel state machine (amqp/channel.py) on its own: which frame
each state takes, and 505 with RabbitMQ 3.10's text for any other."""

from __future__ import annotations

from typing import Callable

import pytest

from amqlite.amqp import spec
from amqlite.amqp.channel import Channel, ChannelState
from amqlite.amqp.frames import HeaderFrame
from amqlite.core import errors
from amqlite.core.message import Properties


def header(size: int) -> HeaderFrame:
    return HeaderFrame(1, 60, size, Properties(), b"")


def channel() -> Channel:
    return Channel(1, None)  # type: ignore[arg-type]  # the core is not touched here


def test_a_publish_is_assembled_from_method_header_and_bodies() -> None:
    ch = channel()
    ch.begin_publish(spec.Basic.Publish("", "q"))
    assert ch.state is ChannelState.AWAIT_HEADER
    assert not ch.content_header(header(5))
    assert ch.state is ChannelState.AWAIT_BODY
    assert not ch.content_body(b"ab")
    assert ch.content_body(b"cde")
    publish, message = ch.take_message()
    assert (publish.routing_key, message.body) == ("q", b"abcde")
    assert ch.state is ChannelState.AWAIT_METHOD


@pytest.mark.parametrize(
    ("steps", "text"),
    [
        (["publish", "method"], "expected content header for class 60, got non content header frame instead"),
        # Checked against RabbitMQ 3.10 with a raw socket.
        (["publish", "header", "method"], "expected content body, got non content body frame instead"),
        (["header"], "unexpected content header frame on channel 1"),
        (["publish", "header", "header"], "unexpected content header frame on channel 1"),
        (["body"], "unexpected content body frame on channel 1"),
        (["publish", "body"], "expected content header for class 60, got non content header frame instead"),
    ],
)
def test_a_frame_out_of_turn_is_505(steps: list[str], text: str) -> None:
    ch = channel()
    actions: dict[str, Callable[[], object]] = {
        "publish": lambda: ch.begin_publish(spec.Basic.Publish("", "q")),
        "method": lambda: ch.expect_method(spec.Basic.Qos(0, 1, False)),
        "header": lambda: ch.content_header(header(10)),
        "body": lambda: ch.content_body(b"x"),
    }
    for step in steps[:-1]:
        actions[step]()
    with pytest.raises(errors.UnexpectedFrame) as raised:
        actions[steps[-1]]()
    assert raised.value.reply_code == 505 and raised.value.reply_text.startswith(f"UNEXPECTED_FRAME - {text}")


def test_closing_drops_a_partial_publish() -> None:
    ch = channel()
    ch.begin_publish(spec.Basic.Publish("", "q"))
    ch.content_header(header(10))
    ch.content_body(b"x")
    ch.start_closing()
    assert ch.state is ChannelState.CLOSING and ch.closing
