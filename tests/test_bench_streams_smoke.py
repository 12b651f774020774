"""make bench-streams runs: a tiny run of benchmarks/bench_streams.py prints
its table, each figure with its ratio and amqlite's CPU per 100k messages
(the figures themselves are in docs/performance.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_streams_quick_run_prints_every_figure() -> None:
    result = subprocess.run([sys.executable, "benchmarks/bench_streams.py", "--quick", "--amqlite-only"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "amqlite" in out and "ratio" in out and "CPU s/100k" in out
    for figure in ("publish+confirm", "consume+ack from first", "catch-up from offset 0", "2 readers at once",
                   "peak RSS", "RSS after"):
        assert figure in out
