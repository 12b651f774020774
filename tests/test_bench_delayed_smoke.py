"""`bench_delayed.py` (part of `make bench-durable`) must keep working; a tiny run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_delayed.py"


def test_bench_delayed_quick_run_reports_memory_start_up_and_lateness() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "durable delayed messages held: 20,000" in out
    assert "start-up" in out and "late by p50" in out and "(200 messages)" in out
