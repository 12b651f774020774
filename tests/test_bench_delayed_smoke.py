"""`bench_delayed.py` (part of `make bench-durable`) must keep working; a tiny run."""

from __future__ import annotations

import re
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
    assert "2,000 cancels" in out and "2,000 reschedules" in out and "18,000 held after" in out


def test_bench_delayed_held_reports_rss_per_held_message_for_both_distributions() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--held", "2000", "--settle", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("held over AMQP: 2,000")]
    assert len(lines) == 2 and "all 1 hour" in lines[0] and "1 min to 30 days" in lines[1]
    assert all(re.search(r"B per held message; after kill -9, serving again in [0-9.]+ s \(server CPU [0-9.]+ s\) with RSS [0-9,]+ MiB$", line)
               for line in lines)
