"""make bench-streams runs: a tiny run of benchmarks/bench_streams.py prints
its tables (the figures themselves are in docs/performance.md)."""

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
    assert "publish+confirm msgs/s" in out and "amqlite " in out
    for figure in ("catch-up from offset 0", "2 readers at once", "peak RSS", "RSS after"):
        assert figure in out
