"""The examples are part of the product: each must run and do what it says."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_task_queue(autojump_clock: object) -> None:
    example = load("task_queue")
    result = await example.main()
    assert set(result["done"]) == set(range(example.TASKS)) - example.BROKEN
    assert result["dead"] in example.BROKEN
    assert result["reason"] == "delivery_limit"
    failures = [line for line in result["log"] if "task 5 failed" in line]
    assert len(failures) == 4  # first delivery + 3 redeliveries, then the DLQ
    assert len(set(result["done"].values())) > 1  # work was shared


async def test_event_bus(autojump_clock: object) -> None:
    seen = await load("event_bus").main()
    everything = ["order.eu.created:o-1", "order.us.created:o-2", "order.eu.cancelled:o-3"]
    assert seen["billing"] == everything
    assert seen["shipping"] == everything
    assert seen["audit.archive"] == everything
    assert seen["audit.eu"] == ["order.eu.created:o-1", "order.eu.cancelled:o-3"]


async def test_embedded_router(autojump_clock: object) -> None:
    routed = await load("embedded_router").main()
    assert routed["pdf-reports"] == ["incident", "weekly"]  # priority 7 first
    assert routed["anything-urgent"] == ["incident"]
    assert routed["sensor-alerts"] == ["sensor.kitchen.alert", "sensor.garage.alert"]
    assert routed["reminders"] == []
    assert routed["reminders after 2s"] == ["water the plants"]


async def test_event_replay(autojump_clock: object) -> None:
    example = load("event_replay")
    result = await example.main()
    everyone = example.SIGNUPS
    assert result["recommendations (from day one)"] == everyone
    assert result["fixed service (last hour)"] == everyone[-6:]  # one an interval of ten minutes
    assert result["analytics (group)"] == everyone
    # The replacement resumes right after the 7 the first worker acked: nothing twice, nothing skipped.
    assert result["welcome-mail (group, first worker)"] + result["welcome-mail (group, replacement)"] == everyone
    assert result["committed offsets"] == ["analytics=18", "welcome-mail=18"]


async def test_partitioned_orders(autojump_clock: object) -> None:
    example = load("partitioned_orders")
    result = await example.main()
    # Each worker is active on exactly one partition, and together on all.
    assert sorted(len(queues) for queues in result["partitions"].values()) == [1, 1, 1]
    assert sorted(q for queues in result["partitions"].values() for q in queues) == example.PARTITIONS
    # Each customer's orders, handled once each, in the order placed.
    assert result["sequence"] == {c: list(range(example.ORDERS_EACH)) for c in example.CUSTOMERS}
