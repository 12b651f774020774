"""Smoke-run the engine benchmark at a tiny size: it must drive publishes
and acks through the engine and print both figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("queue", ["transient", "durable", "stream"])
def test_bench_engine_runs_and_prints_both_figures(queue: str) -> None:
    proc = subprocess.run([sys.executable, "benchmarks/bench_engine.py", "--messages", "4000", "--runs", "1",
                           "--queue", queue], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    figures = re.search(r"publish\+confirm ([\d.]+) us/msg\s+consume\+ack ([\d.]+) us/msg", proc.stdout)
    assert figures is not None, proc.stdout
    assert all(0 < float(value) < 1000 for value in figures.groups())
    assert f"{queue} queue" in proc.stdout
