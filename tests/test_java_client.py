"""The RabbitMQ Java client (Debian's librabbitmq-client-java) against
amqlite and, in the same run, against the reference RabbitMQ: the same
program must print the same story (tests/interop/Smoke.java)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reference import RABBITMQ, rabbitmq_available
from server.conftest import start_amqlite

SOURCE = Path(__file__).resolve().parent / "interop" / "Smoke.java"
JARS = [Path("/usr/share/java/amqp-client.jar"), Path("/usr/share/java/slf4j-api.jar")]

pytestmark = pytest.mark.skipif(
    shutil.which("javac") is None or not all(jar.exists() for jar in JARS),
    reason="needs javac and Debian's librabbitmq-client-java (.ci/run installs it)",
)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("java")
    classpath = ":".join(map(str, JARS))
    subprocess.run(["javac", "-cp", classpath, "-d", str(out), str(SOURCE)], check=True, timeout=120)
    return out


def run_smoke(compiled: Path, port: int) -> list[str]:
    classpath = ":".join([*map(str, JARS), str(compiled)])
    result = subprocess.run(["java", "-cp", classpath, "Smoke", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # Server-generated queue names differ between brokers; the story must not.
    return [re.sub(r"amq\.gen-\S+'", "amq.gen-X'", line) for line in result.stdout.splitlines()]


def test_java_client_sees_the_same_broker(compiled: Path) -> None:
    server = start_amqlite()
    try:
        ours = run_smoke(compiled, server.port)
    finally:
        server.stop()
    assert ours[0].startswith("server amqlite ")
    assert ours[1] == "get m2 left 2 prio 2 headers {s=x, n=2}"
    assert ours[2] == "consumed [m2*, m1, m0]"
    assert "reply-code=404" in ours[3]
    if rabbitmq_available():
        theirs = run_smoke(compiled, RABBITMQ[1])
        assert theirs[0].startswith("server RabbitMQ ")
        assert ours[1:] == theirs[1:]
