"""A short slice of the damage campaign (tests/store/damage_harness.py; the
long one is part of ``make crash``): random bytes flipped, files deleted or
cut in a stopped data directory; after each restart every confirmed
message is back or reported lost, with counts that match."""

from __future__ import annotations

import os
from pathlib import Path

from .damage_harness import run_campaign


def test_damage_loses_nothing_unreported(tmp_path: Path) -> None:
    rounds = int(os.environ.get("AMQLITE_DAMAGE_TEST_ROUNDS", "3"))
    results = run_campaign(rounds, workdir=tmp_path / "damage")
    print(results.summary())
    assert results.rounds == rounds and results.confirmed > 0
    assert results.ok, "\n".join(results.problems)
