"""``message_stats`` as RabbitMQ's API shows them: each counter with a
``_details.rate`` per second. The counters are the core's (core/stats.py:
the broker's, and each queue's);
rates come from the samples earlier requests left, over about the last
RATE_WINDOW seconds, so the API costs the hot path nothing and a first
request says 0.0."""

from __future__ import annotations

from collections import deque
from typing import Callable

from ..core.queue import Queue
from ..core.stats import Stats

#: Seconds of history a rate is computed over (RabbitMQ samples every 5 s).
RATE_WINDOW = 5.0


def counters(stats: Stats) -> dict[str, int]:
    """The overview's counters under RabbitMQ's ``message_stats`` names, and
    amqlite's ``dead_lettered``."""
    return {
        "publish": stats.received,
        "confirm": stats.confirmed,
        "return_unroutable": stats.unroutable_returned,
        "drop_unroutable": stats.unroutable_dropped,
        "deliver_get": stats.delivered,
        "deliver": stats.delivered_consume_manual_ack,
        "deliver_no_ack": stats.delivered_consume_auto_ack,
        "get": stats.delivered_get_manual_ack,
        "get_no_ack": stats.delivered_get_auto_ack,
        "get_empty": stats.get_empty,
        "redeliver": stats.redelivered,
        "ack": stats.acknowledged,
        "dead_lettered": sum(stats.dead_lettered.values()),
    }


def queue_counters(queue: Queue) -> dict[str, int]:
    """A queue's counters under RabbitMQ's ``message_stats`` names."""
    counts = queue.stats
    return {"publish": counts.publish, "deliver_get": counts.deliver_get, "redeliver": counts.redeliver,
            "ack": counts.ack}


class Rates:
    """The samples of one set of counters (the broker's, or a queue's)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._samples: deque[tuple[float, dict[str, int]]] = deque()

    def message_stats(self, current: dict[str, int]) -> dict[str, object]:
        """``current`` with a rate for each, sampled for later requests."""
        now = self.clock()
        while len(self._samples) > 1 and self._samples[1][0] <= now - RATE_WINDOW:
            self._samples.popleft()  # keep one sample at least RATE_WINDOW old, if any
        then, before = self._samples[0] if self._samples else (now, current)
        seconds = now - then
        self._samples.append((now, current))
        shown: dict[str, object] = {}
        for name, value in current.items():
            shown[name] = value
            rate = (value - before[name]) / seconds if seconds > 0 else 0.0
            shown[f"{name}_details"] = {"rate": round(rate, 1)}
        return shown
