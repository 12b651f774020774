"""Smoke-run the benchmark at --quick size: it must finish and print its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_core.py"


def test_bench_core_quick_runs_and_prints_table() -> None:
    pytest.importorskip("kombu")
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("amqlite benchmark: bench_core.py --quick")
    assert any(line.startswith("machine: CPU ") for line in lines[:6])
    assert any(line.startswith("python ") for line in lines[:6])
    header = [line.split() for line in lines if line.startswith("benchmark ")]
    assert header == [["benchmark", "median", "min", "max", "unit"]]
    for row in (
        "embedded direct (await publish / async for)",
        "core direct, no trio",
        "kombu memory:// SimpleQueue",
        "bare trio memory channel",
        "ratio embedded direct / kombu",
        "schedule ",
        "release via Broker.tick",
        "tracemalloc: overhead per message",
    ):
        assert any(line.startswith(row) for line in lines), row
