"""message_stats rates from the core's counters, over the last few seconds."""

from __future__ import annotations

from amqlite.core.stats import Stats
from amqlite.management.rates import RATE_WINDOW, Rates, counters

from .conftest import ManagedServerThread


def test_rates_are_counter_deltas_over_the_window() -> None:
    stats, now = Stats(), [100.0]
    rates = Rates(lambda: now[0])
    first = rates.message_stats(counters(stats))
    assert first["publish"] == 0 and first["publish_details"] == {"rate": 0.0}
    stats.received += 50
    stats.acknowledged += 20
    now[0] += RATE_WINDOW
    shown = rates.message_stats(counters(stats))
    assert (shown["publish"], shown["publish_details"], shown["ack_details"]) == (50, {"rate": 10.0}, {"rate": 4.0})
    now[0] += 1  # within the window: still measured from the sample RATE_WINDOW old
    stats.received += 6
    assert rates.message_stats(counters(stats))["publish_details"] == {"rate": round(56 / (RATE_WINDOW + 1), 1)}
    now[0] += 2 * RATE_WINDOW  # nothing happened since: the rate falls to 0
    assert rates.message_stats(counters(stats))["publish_details"] == {"rate": 0.0}


def test_overview_reports_rates_from_real_traffic(managed: ManagedServerThread) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("counted")
    for _ in range(5):
        channel.basic_publish("", "counted", b"x")
    channel.queue_declare("counted", passive=True)
    stats = managed.http().get("/api/overview").json()["message_stats"]
    assert stats["publish"] == 5 and "rate" in stats["publish_details"]
    channel.basic_get("counted", auto_ack=False)
    method, _, _ = channel.basic_get("counted", auto_ack=False)
    channel.basic_ack(method.delivery_tag, multiple=True)
    channel.queue_declare("counted", passive=True)
    queue = managed.http().get("/api/queues/%2F/counted").json()["message_stats"]
    assert {k: queue[k] for k in ("publish", "deliver_get", "ack", "redeliver")} == \
        {"publish": 5, "deliver_get": 2, "ack": 2, "redeliver": 0}
    assert queue["ack_details"] == {"rate": 0.0}  # a first sample: no rate yet
    connection.close()
