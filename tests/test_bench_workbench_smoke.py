"""Smoke-run the workbench benchmark at a tiny size: it must page, browse
without paging anything in, and redrive what its filter matches."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_workbench_runs_and_prints_its_figures() -> None:
    proc = subprocess.run([sys.executable, "benchmarks/bench_workbench.py", "--messages", "30000", "--runs", "1"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    paged = re.search(r"30,000 messages .* ([\d,]+) paged out", proc.stdout)
    assert paged is not None and int(paged.group(1).replace(",", "")) > 5000, proc.stdout
    assert "browsing left the paged and in-memory counts as they were" in proc.stdout
    assert re.search(r"redrive: 3,000 moved of 30,000 scanned", proc.stdout), proc.stdout
    assert len(re.findall(r"browse 50 at the \w+ +\(position +[\d,]+\): +[\d.]+ ms", proc.stdout)) == 3
