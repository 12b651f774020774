"""Admission at accept (server/admission.py): the shared descriptor budget,
each listener's pool of connections not yet logged in, each source
address's share of those across listeners, and refusals said once per
interval with a count."""

from __future__ import annotations

import errno
from typing import Any

import httpx
import pytest
import structlog
import trio
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from amqlite.management import http
from amqlite.server.admission import Budget, Gate, Summary


def gates(limit: int = 100, pool: int = 10, per_address: int = 3) -> tuple[Gate, Gate]:
    budget, summary = Budget(limit, per_address), Summary()
    return (Gate("port", budget, pool, summary), Gate("tls_port", budget, pool, summary))


async def test_one_address_takes_its_share_and_no_more() -> None:
    plain, _ = gates()
    with structlog.testing.capture_logs():
        flood = [plain.admit("10.0.0.1") for _ in range(5)]
    assert [ticket is not None for ticket in flood] == [True, True, True, False, False]
    assert plain.admit("10.0.0.2") is not None  # another address is let in
    # Logged in, a connection leaves the pool and its address's share; closed, the budget.
    ticket = flood[0]
    assert ticket is not None
    ticket.logged_in()
    assert (plain.unauthenticated, plain.budget.by_address["10.0.0.1"], plain.budget.taken) == (3, 2, 4)
    assert plain.admit("10.0.0.1") is not None
    ticket.closed()
    ticket.closed()  # once only
    assert plain.budget.taken == 4 and plain.unauthenticated == 4


async def test_each_listener_has_its_own_pool_and_all_share_the_budget() -> None:
    plain, secure = gates(limit=12, pool=4, per_address=100)
    with structlog.testing.capture_logs() as logs:
        assert all(secure.admit(f"10.0.0.{n}") for n in range(4))
        assert secure.admit("10.0.1.1") is None  # its pool is full
        assert all(plain.admit(f"10.0.0.{n}") for n in range(4))  # this one's is not
        for ticket in [plain.admit("10.0.2.1"), secure.admit("10.0.2.2")]:
            assert ticket is None
    assert [entry["reason"] for entry in logs] == ["max_unauthenticated (4) connections not yet logged in"] * 2
    assert [entry["listener"] for entry in logs] == ["tls_port", "port"]
    third = Gate("management_port", plain.budget, 10, plain.summary)
    tickets = [third.admit("10.0.3.1") for _ in range(5)]
    assert [ticket is not None for ticket in tickets] == [True] * 4 + [False]  # 12 sockets in all
    assert third.refusal("10.0.3.9") == "max_connections (12) reached"


async def test_an_address_share_holds_across_listeners_and_leaves_room_for_others() -> None:
    # One address used to have a share of each listener's pool: 100 on
    # each of five ports spent a budget of 140, and everyone was refused.
    plain, secure = gates(limit=140, pool=1000, per_address=100)
    http = Gate("management_port", plain.budget, 1000, plain.summary)
    with structlog.testing.capture_logs() as logs:
        admitted = [gate.admit("127.0.0.1") for gate in (plain, secure, http) for _ in range(40)]
    assert sum(ticket is not None for ticket in admitted) == 70  # half the budget, below its setting of 100
    assert {entry["reason"] for entry in logs} == {
        "half of max_connections (70) connections from this address not yet logged in on any listener"}
    assert all(gate.admit(f"127.0.0.{n}") for gate in (plain, secure, http) for n in range(2, 12))
    # With room in the budget, the setting is the bound; logging in gives a place back.
    wide, _ = gates(limit=10_000, pool=1000, per_address=100)
    tickets = [wide.admit("10.0.0.1") for _ in range(100)]
    assert wide.refusal("10.0.0.1") == ("max_unauthenticated_per_address (100) connections from this address "
                                        "not yet logged in on any listener")
    assert tickets[0] is not None
    tickets[0].logged_in()
    assert wide.refusal("10.0.0.1") is None


async def test_repeated_refusals_are_one_line_per_interval_with_a_count(autojump_clock: Any) -> None:
    summary = Summary(interval=10.0)
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(summary.run)
            for _ in range(250):  # 25 s of a flood, 10 refusals a second
                summary.note("warning", "connection.refused", "max_unauthenticated (1) ...", listener="port",
                             peer="10.0.0.1")
                summary.note("warning", "connection.refused", "max_unauthenticated (1) ...", listener="tls_port",
                             peer="10.0.0.1")
                await trio.sleep(0.1)
            await trio.sleep(60)  # quiet: nothing more to say
            nursery.cancel_scope.cancel()
    for listener in ("port", "tls_port"):
        lines = [entry for entry in logs if entry["listener"] == listener]
        # The first at once, then one per interval: at 10, 20 and 30 s.
        counts = [line["count"] for line in lines]
        assert len(counts) == 4 and counts[0] == 1 and sum(counts) == 250 and counts[-1] == 50
        assert all(line["log_level"] == "warning" and line["peer"] == "10.0.0.1" for line in lines)


async def test_http_connections_hold_a_place_until_closed_and_a_crash_ends_only_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real, served = http.TCPServer, []

    def crashing_first(*args: Any) -> Any:
        served.append(args)
        if len(served) == 1:
            raise OSError(errno.EBADF, "Bad file descriptor")
        return real(*args)

    monkeypatch.setattr(http, "TCPServer", crashing_first)
    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
    bound = http.bind(app, "127.0.0.1", 0)
    plain, _ = gates(limit=10, pool=10, per_address=10)
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(http.serve, bound, plain)
            url = f"http://127.0.0.1:{bound.port}/"
            async with httpx.AsyncClient() as client:
                with pytest.raises(httpx.HTTPError):
                    await client.get(url)  # its connection crashed: closed, the listener serving on
                response = await client.get(url)
                assert response.text == "ok"
                assert plain.budget.taken == 1  # the keep-alive connection holds its place
            with trio.fail_after(5):
                while plain.budget.taken:
                    await trio.sleep(0.01)
            assert plain.unauthenticated == 0 and plain.budget.by_address == {}
            nursery.cancel_scope.cancel()
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["http.connection_crashed"]
