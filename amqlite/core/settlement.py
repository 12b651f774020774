"""How a consumer settles a delivery (basic.ack, nack, reject, recover)."""

from __future__ import annotations

import enum


class Settlement(enum.Enum):
    #: basic.ack: done, the message leaves the queue.
    ACK = "ack"
    #: nack or reject with requeue: a failed attempt; back to its place
    #: (after the queue's retry delay, if it has one).
    REQUEUE = "requeue"
    #: nack or reject without requeue: dead-lettered, or dropped.
    REJECT = "reject"
    #: basic.recover: back to its place; counts as an attempt, not a failure.
    RETURN = "return"

    @property
    def requeues(self) -> bool:
        return self in (Settlement.REQUEUE, Settlement.RETURN)
