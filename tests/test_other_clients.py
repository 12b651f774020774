"""The RabbitMQ Java client and the Go client (amqp091-go), both from
Debian, run the same small program against amqlite and, in the same run,
against the reference RabbitMQ; the two runs must tell the same story
(tests/interop/Smoke.java, tests/interop/smoke.go)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from reference import RABBITMQ, rabbitmq_available
from server.conftest import start_amqlite

INTEROP = Path(__file__).resolve().parent / "interop"
JARS = [Path("/usr/share/java/amqp-client.jar"), Path("/usr/share/java/slf4j-api.jar")]
GOPATH = Path("/usr/share/gocode")
GO_CLIENT = GOPATH / "src" / "github.com" / "rabbitmq" / "amqp091-go"


def java_program(workdir: Path) -> Callable[[int], list[str]]:
    if shutil.which("javac") is None or not all(jar.exists() for jar in JARS):
        pytest.skip("needs javac and Debian's librabbitmq-client-java (.ci/run installs them)")
    classpath = ":".join(map(str, JARS))
    subprocess.run(["javac", "-cp", classpath, "-d", str(workdir), str(INTEROP / "Smoke.java")], check=True, timeout=120)
    return lambda port: ["java", "-cp", f"{classpath}:{workdir}", "Smoke", str(port)]  # type: ignore[return-value]


def go_program(workdir: Path) -> Callable[[int], list[str]]:
    if shutil.which("go") is None or not GO_CLIENT.is_dir():
        pytest.skip("needs go and Debian's golang-github-rabbitmq-amqp091-go-dev (.ci/run installs them)")
    env = {**os.environ, "GOPATH": str(GOPATH), "GO111MODULE": "off", "GOCACHE": str(workdir / "cache"), "GOFLAGS": ""}
    binary = workdir / "smoke"
    subprocess.run(["go", "build", "-o", str(binary), str(INTEROP / "smoke.go")], check=True, timeout=300, env=env)
    return lambda port: [str(binary), str(port)]  # type: ignore[return-value]


def run(command: list[str]) -> list[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # Server-generated queue names differ between brokers; the story must not.
    return [re.sub(r"amq\.gen-\S+'", "amq.gen-X'", line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("build", [java_program, go_program], ids=["java", "go"])
def test_client_sees_the_same_broker(build: Callable[[Path], Callable[[int], list[str]]], tmp_path: Path) -> None:
    command = build(tmp_path)
    server = start_amqlite()
    try:
        ours = run(command(server.port))
    finally:
        server.stop()
    assert ours[0].startswith("server amqlite ")
    assert re.fullmatch(r"get m2 left 2 prio 2 headers \{(s=x, n=2|n=2, s=x)\}", ours[1])
    assert re.fullmatch(r"consumed \[m2\*,? m1,? m0\]", ours[2])
    assert "404" in ours[3]
    if rabbitmq_available():
        theirs = run(command(RABBITMQ[1]))
        assert theirs[0].startswith("server RabbitMQ ")
        assert ours[1:] == theirs[1:]
