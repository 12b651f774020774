"""make bench-kafka runs: a tiny run of benchmarks/bench_kafka.py prints
its tables (the figures themselves are in docs/performance.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_kafka_quick_run_prints_every_figure() -> None:
    result = subprocess.run([sys.executable, "benchmarks/bench_kafka.py", "--quick", "--amqlite-only"],
                            cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "amqlite Kafka" in out and "amqlite AMQP" in out and "ratio amqlite Kafka / amqlite AMQP" in out
    for figure in ("2 readers at once", "peak RSS", "RSS after", "transactions of    10", "transactions of 1,000"):
        assert figure in out
