"""A short slice of the crash campaign (tests/store/crash_harness.py; the
long one is ``make crash``): kill -9 under load, right after a compaction
and during recovery, with no confirmed message lost, none duplicated, and
order kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .crash_harness import run_campaign


@pytest.mark.parametrize("budget", [None, 30], ids=["in-memory", "paging"])
def test_kill_9_loses_no_confirmed_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int | None) -> None:
    """With a tiny memory budget the queues page to disk all the time, so
    kills also land while messages are paged out or being read back."""
    if budget is not None:
        monkeypatch.setenv("AMQLITE_QUEUE_MEMORY_BUDGET", str(budget))
    rounds = int(os.environ.get("AMQLITE_CRASH_TEST_ROUNDS", "3"))
    results = run_campaign(rounds, workdir=tmp_path / "crash")
    print(results.summary())
    assert results.rounds == rounds and results.confirmed > 0 and results.acked > 0
    assert results.ok, "\n".join(results.problems)
