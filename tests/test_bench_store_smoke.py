"""`bench_store.py` (part of `make bench-durable`) must keep working; a tiny run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_store.py"


def test_bench_store_tiny_run_reports_paging_and_recovery() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--messages", "3000", "--budget", "100"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "100 in memory, 2,900 on disk only" in result.stdout
    assert "for 3,000 messages (2,900 left on disk)" in result.stdout
