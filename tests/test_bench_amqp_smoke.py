"""`make bench-amqp` must keep working; a tiny run against amqlite only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_amqp.py"


def test_bench_amqp_quick_run_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--amqlite-only"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("broker") and "publish+confirm" in line for line in lines)
    row = next(line for line in lines if line.startswith("amqlite"))
    assert float(row.split()[1].replace(",", "")) > 0


def test_bench_amqp_tx_quick_run_prints_commit_rates() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--tx", "--quick", "--amqlite-only"], capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("amqlite"))
    publish, transform = row.split()[1], row.split()[3]
    assert float(publish.replace(",", "")) > 0 and float(transform.replace(",", "")) > 0
