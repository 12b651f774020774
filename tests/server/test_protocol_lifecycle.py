"""What a client leaves behind when its socket goes away without a goodbye,
against amqlite and RabbitMQ: unacked messages come back redelivered,
exclusive queues go, auto-delete queues go with their last consumer."""

from __future__ import annotations

import socket
import struct
import time
from typing import Callable

from amqlite.amqp import spec

from .conftest import BrokerUnderTest
from .rawamqp import RawClient, publish


def abort(client: RawClient) -> None:
    """Close with a TCP reset: no connection.close, no FIN handshake."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.05)


def connect(broker: BrokerUnderTest) -> RawClient:
    client = RawClient(broker.host, broker.port)
    client.handshake()
    client.open_channel(1)
    return client


def queue_exists(client: RawClient, name: str) -> tuple[bool, int]:
    """(exists, message count) by a passive declare on a throwaway channel (count 0 if locked)."""
    client.send_method(9, spec.Channel.Open())
    client.expect(spec.Channel.OpenOk, 9)
    client.send_method(9, spec.Queue.Declare(name, passive=True))
    f = client.read_method()
    if isinstance(f.method, spec.Channel.Close):
        assert f.method.reply_code in (404, 405)  # 405: another connection's exclusive queue
        client.send_method(9, spec.Channel.CloseOk())
        return f.method.reply_code == 405, 0
    assert isinstance(f.method, spec.Queue.DeclareOk)
    client.call(9, spec.Channel.Close(200, ""), spec.Channel.CloseOk)
    return True, f.method.message_count


def test_abrupt_disconnect_requeues_unacked_messages_as_redelivered(broker: BrokerUnderTest) -> None:
    queue = broker.name("lost")
    with connect(broker) as observer:
        observer.call(1, spec.Queue.Declare(queue, auto_delete=False), spec.Queue.DeclareOk)
        try:
            for i in range(3):
                observer.send(publish(1, queue, b"m%d" % i))
            assert queue_exists(observer, queue) == (True, 3)

            consumer = connect(broker)
            consumer.call(1, spec.Basic.Qos(0, 10, False), spec.Basic.QosOk)
            consumer.call(1, spec.Basic.Consume(queue, "c"), spec.Basic.ConsumeOk)
            tags = []
            for _ in range(3):
                tags.append(consumer.expect(spec.Basic.Deliver, 1).delivery_tag)
                consumer.read_frame()  # header
                consumer.read_frame()  # body
            consumer.send_method(1, spec.Basic.Ack(tags[0]))
            consumer.call(1, spec.Basic.Qos(0, 10, False), spec.Basic.QosOk)  # the ack has been processed
            assert queue_exists(observer, queue) == (True, 0)
            abort(consumer)

            eventually(lambda: queue_exists(observer, queue) == (True, 2))
            bodies = []
            for _ in range(2):
                observer.send_method(1, spec.Basic.Get(queue, no_ack=True))
                get_ok = observer.expect(spec.Basic.GetOk, 1)
                assert get_ok.redelivered is True
                observer.read_frame()  # header
                bodies.append(observer.read_frame().payload)
            assert bodies == [b"m1", b"m2"]
        finally:
            observer.call(1, spec.Queue.Delete(queue), spec.Queue.DeleteOk)


def test_abrupt_disconnect_deletes_exclusive_queues(broker: BrokerUnderTest) -> None:
    queue = broker.name("excl")
    owner = connect(broker)
    owner.call(1, spec.Queue.Declare(queue, exclusive=True), spec.Queue.DeclareOk)
    owner.send(publish(1, queue, b"gone with it"))
    with connect(broker) as observer:
        # Another connection may not use it (405), but sees it exists.
        observer.send_method(1, spec.Queue.Declare(queue, passive=True))
        assert observer.expect(spec.Channel.Close, 1).reply_code == 405
        observer.send_method(1, spec.Channel.CloseOk())
        abort(owner)
        eventually(lambda: queue_exists(observer, queue) == (False, 0))


def test_auto_delete_queue_goes_when_its_last_consumers_connection_drops(broker: BrokerUnderTest) -> None:
    queue = broker.name("auto")
    with connect(broker) as observer:
        observer.call(1, spec.Queue.Declare(queue, auto_delete=True), spec.Queue.DeclareOk)
        first, second = connect(broker), connect(broker)
        first.call(1, spec.Basic.Consume(queue, "a"), spec.Basic.ConsumeOk)
        second.call(1, spec.Basic.Consume(queue, "b"), spec.Basic.ConsumeOk)
        abort(first)
        time.sleep(0.3)
        assert queue_exists(observer, queue)[0]  # one consumer is left
        abort(second)
        eventually(lambda: not queue_exists(observer, queue)[0])
