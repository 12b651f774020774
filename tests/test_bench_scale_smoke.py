"""`make bench-scale` must keep working; a tiny run against amqlite only."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_scale.py"


def test_bench_scale_quick_run_reports_every_workload() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--amqlite-only"], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "failures" not in out and "close_reasons" not in out, out
    # The quick fleet: 20 consumers, 5 of them bound, 200 messages: all delivered.
    assert re.search(r"fleet:\n  amqlite .*\(load generator \d+%\).* delivered 1000/1000, p50 [\d.]+ ms,"
                     r" p90 [\d.]+ ms, p99 [\d.]+ ms, p99.9 [\d.]+ ms, up 20", out), out
    assert re.search(r"idle:\n  amqlite .*up 40, longest server silence", out), out
    fanout = re.search(r"fanout:\n  amqlite +([\d,]+) msgs/s", out)
    topic = re.search(r"topic:\n  amqlite +bind [\d.]+ s, RSS \+\d+ MiB, ([\d,]+) msgs/s", out)
    assert fanout and int(fanout.group(1).replace(",", "")) > 0, out
    assert topic and int(topic.group(1).replace(",", "")) > 0, out
