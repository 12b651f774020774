"""The Go Kafka client Debian packages (Shopify/sarama 1.22): metadata, an
admin topic of two partitions, a keyed produce with a header, a fetch from
the oldest offset, the topic deleted (tests/interop/kafka_smoke.go)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kafka_support import KafkaServerThread

INTEROP = Path(__file__).resolve().parents[1] / "interop"
GOPATH = Path("/usr/share/gocode")
SARAMA = GOPATH / "src" / "github.com" / "Shopify" / "sarama"


def test_sarama_admin_produce_fetch_delete(kafka_server: KafkaServerThread, tmp_path: Path) -> None:
    if shutil.which("go") is None or not SARAMA.is_dir():
        pytest.skip("needs go and Debian's golang-github-shopify-sarama-dev (.ci/run installs them)")
    env = {**os.environ, "GOPATH": str(GOPATH), "GO111MODULE": "off", "GOCACHE": str(tmp_path / "cache"),
           "GOFLAGS": ""}
    binary = tmp_path / "kafka_smoke"
    subprocess.run(["go", "build", "-o", str(binary), str(INTEROP / "kafka_smoke.go")], check=True, timeout=300,
                   env=env, capture_output=True)
    result = subprocess.run([str(binary), kafka_server.bootstrap], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "partitions 2"
    partition, offset = map(int, lines[1].split()[1:])
    assert offset == 0 and partition in (0, 1)
    assert lines[2:] == ["consumed order-7 hello from go source=sarama 0", "deleted"]
    assert kafka_server.call(lambda: list(kafka_server.server.core.vhosts["/"].queues)) == []  # type: ignore[union-attr]
