"""kcat (librdkafka's command-line client) produces keyed records with
headers and consumes them back, with offsets, timestamps and a seek."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from kafka_support import KafkaServerThread

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None,
                                reason="kcat is not installed (Debian's kcat; .ci/run installs it)")
FORMAT = "%o|%k|%s|%h|%T\\n"


def kcat(server: KafkaServerThread, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(["kcat", "-b", server.bootstrap, "-m", "10", *args], input=stdin, capture_output=True,
                          text=True, timeout=60, check=True).stdout


def test_kcat_produces_and_consumes(kafka_server: KafkaServerThread) -> None:
    kcat(kafka_server, "-P", "-t", "lines", "-K", ":", "-H", "source=kcat", "-H", "n=1",
         stdin="a:first\nb:second\na:third\n")
    out = kcat(kafka_server, "-C", "-t", "lines", "-o", "beginning", "-e", "-f", FORMAT).splitlines()
    rows = [line.split("|") for line in out]
    assert [row[:4] for row in rows] == [["0", "a", "first", "source=kcat,n=1"], ["1", "b", "second", "source=kcat,n=1"],
                                         ["2", "a", "third", "source=kcat,n=1"]]
    assert all(int(row[4]) > 1_700_000_000_000 for row in rows)  # producer timestamps, in ms
    tail = kcat(kafka_server, "-C", "-t", "lines", "-o", "1", "-c", "1", "-e", "-f", FORMAT).splitlines()
    assert [line.split("|")[:3] for line in tail] == [["1", "b", "second"]]
