"""The README's Kafka example runs as printed, against a broker on a free port."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

from kafka_support import KafkaServerThread

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_kafka_example_runs(kafka_server: KafkaServerThread) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(block for block in blocks if "KafkaProducer" in block)
    result = subprocess.run([sys.executable, "-c", code.replace("localhost:9092", kafka_server.bootstrap)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "b'signed up'"
