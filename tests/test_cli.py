"""`amqlite serve` as an operator runs it: a real process, real signals."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pika
import pytest

from amqlite.config import load

AMQLITE = [sys.executable, "-m", "amqlite.cli"]


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*AMQLITE, "serve", "--data-dir", tempfile.mkdtemp(prefix="amqlite-cli-"), *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_serve_reports_bound_port_and_stops_cleanly_on_sigterm() -> None:
    process = _start("--host", "127.0.0.1", "--port", "0")
    try:
        assert process.stderr is not None
        events = [json.loads(process.stderr.readline())]
        while events[-1]["event"] != "broker.listening":
            events.append(json.loads(process.stderr.readline()))
        # The port opens only once recovery is done.
        assert [e["event"] for e in events] == ["store.recovered", "broker.listening"]
        first = events[-1]
        port = first["port"]
        assert port > 0 and first["addresses"] == [f"127.0.0.1:{port}"]
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        channel = connection.channel()
        channel.queue_declare("cli-q")
        channel.basic_publish("", "cli-q", b"hello")
        assert channel.basic_get("cli-q", auto_ack=True)[2] == b"hello"
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        process.kill()
        process.wait()


def test_port_in_use_exits_at_once_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [*AMQLITE, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=20, env={**os.environ, "AMQLITE_LOG_FORMAT": "console"},
        )
    assert result.returncode == 1
    message = f"amqlite: port {port} is already in use (another broker, such as RabbitMQ?); " \
              "choose another with --port or AMQLITE_PORT"
    # Said once (not also as a log line), whatever the log format.
    assert message in result.stderr.splitlines() and result.stderr.count("already in use") == 1
    assert "Traceback" not in result.stderr


def test_the_cli_tests_pass_beside_make_run_and_leave_its_data_dir_alone(tmp_path: Path) -> None:
    # `make run` in a checkout: a broker holding ./amqlite-data there, from
    # which the tests then run.
    env = {key: value for key, value in os.environ.items() if key != "AMQLITE_DATA_DIR"}
    run = subprocess.Popen([*AMQLITE, "serve", "--host", "127.0.0.1", "--port", "0"], cwd=tmp_path,
                           stderr=subprocess.PIPE, text=True, env={**env, "AMQLITE_LOG_FORMAT": "json"})
    try:
        assert run.stderr is not None
        while "broker.listening" not in (line := run.stderr.readline()):
            assert line, "make run's broker stopped"
        tests = Path(__file__).parent
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tests.parent),
             f"{tests / 'test_cli.py'}::test_port_in_use_exits_at_once_with_a_clear_message",
             f"{tests / 'test_settings.py'}::test_bad_flag_value_names_the_flag"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0, result.stdout
        assert sorted(path.name for path in tmp_path.iterdir()) == ["amqlite-data"]
    finally:
        run.terminate()
        run.wait(10)


def test_settings_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "amqlite.toml"
    config.write_text('port = 6000\nheartbeat = 30\nvhosts = ["/", "staging"]\n')
    settings = load(config_file=str(config), environ={"AMQLITE_PORT": "6001", "AMQLITE_FRAME_MAX": "65536"},
                    overrides={"port": None, "host": "127.0.0.1"})
    assert (settings.port, settings.heartbeat, settings.frame_max) == (6001, 30, 65536)
    assert tuple(settings.vhosts) == ("/", "staging") and settings.host == "127.0.0.1"
    assert load(environ={"AMQLITE_PORT": "6001"}, overrides={"port": 7000}).port == 7000


def test_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("bogus = 1\n")
    result = subprocess.run([*AMQLITE, "serve", "--config", str(config)], capture_output=True, text=True, timeout=20)
    assert result.returncode == 2 and "unknown setting" in result.stderr and "Traceback" not in result.stderr


# -- amqlite ctl against a broker that is not on RabbitMQ's ports ----------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_listening(process: subprocess.Popen[str]) -> None:
    assert process.stderr is not None
    while "broker.listening" not in (line := process.stderr.readline()):
        assert line, "the broker stopped"


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """An `amqlite serve` with its management API on a port of its own."""
    ports = {"port": _free_port(), "management_port": _free_port()}
    process = subprocess.Popen(
        [*AMQLITE, "serve", "--host", "127.0.0.1", "--port", str(ports["port"]), "--management-port",
         str(ports["management_port"]), "--data-dir", str(tmp_path_factory.mktemp("ctl"))],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "AMQLITE_LOG_FORMAT": "json"})
    try:
        _wait_listening(process)
        yield ports
    finally:
        process.terminate()
        process.wait(10)


def ctl(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if key not in ("AMQLITE_URL", "AMQLITE_MANAGEMENT_PORT")}
    return subprocess.run([*AMQLITE, "ctl", *args], capture_output=True, text=True, timeout=30, env={**environ, **env})


def test_ctl_reaches_the_local_broker_by_its_management_port(ports: dict[str, int]) -> None:
    # After `make run PORT=5673`, the bare `amqlite ctl list queues` reached RabbitMQ on 15672.
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", ports["port"]))
    connection.channel().queue_declare("ctl-finds-me")
    connection.close()
    found = ctl("list", "queues", AMQLITE_MANAGEMENT_PORT=str(ports["management_port"]))
    assert found.returncode == 0 and "ctl-finds-me" in found.stdout
    # AMQLITE_URL comes first.
    elsewhere = ctl("list", "queues", AMQLITE_URL="http://guest:guest@127.0.0.1:1",
                    AMQLITE_MANAGEMENT_PORT=str(ports["management_port"]))
    assert (elsewhere.returncode, elsewhere.stderr) == (1, "amqlite ctl: cannot reach http://127.0.0.1:1: "
                                                           "Connection refused\n")
    from amqlite.ctl import default_url

    assert default_url({}) == "http://guest:guest@localhost:15672"


def test_ctl_options_after_the_subcommand_and_a_url_without_a_scheme(ports: dict[str, int]) -> None:
    address = f"127.0.0.1:{ports['management_port']}"
    listed = ctl("list", "vhosts", "--format", "json", "--url", address)
    assert listed.returncode == 0, listed.stderr
    assert [row["name"] for row in json.loads(listed.stdout)] == ["/"]
    wrong = ctl("--url", "ftp://127.0.0.1", "status")
    assert (wrong.returncode, wrong.stderr) == (
        1, "amqlite ctl: --url ftp://127.0.0.1: expected http://[USER:PASSWORD@]HOST[:PORT] or HOST:PORT\n")


def test_ctl_delete_user(ports: dict[str, int]) -> None:
    url = f"http://guest:guest@127.0.0.1:{ports['management_port']}"
    added = subprocess.run([*AMQLITE, "ctl", "--url", url, "add-user", "leaving"], input="pw\n", capture_output=True,
                           text=True, timeout=30)
    assert added.returncode == 0, added.stderr
    assert "leaving" in ctl("--url", url, "list", "users").stdout
    deleted = ctl("delete-user", "leaving", "--url", url)
    assert (deleted.returncode, deleted.stdout) == (0, "deleted user leaving\n")
    assert "leaving" not in ctl("--url", url, "list", "users").stdout
    assert ctl("delete-user", "leaving", "--url", url).returncode == 1  # no such user: said, exit 1


def test_export_leaves_out_the_default_user_unless_asked(ports: dict[str, int]) -> None:
    # A whole-file import into RabbitMQ replaced its guest's password hash with amqlite's.
    url = f"http://guest:guest@127.0.0.1:{ports['management_port']}"
    subprocess.run([*AMQLITE, "ctl", "--url", url, "add-user", "app"], input="pw\n", check=True, timeout=30,
                   capture_output=True, text=True)
    assert ctl("--url", url, "set-permissions", "app").returncode == 0
    plain = json.loads(ctl("--url", url, "export", "-").stdout)
    assert [user["name"] for user in plain["users"]] == ["app"]
    assert [grant["user"] for grant in plain["permissions"]] == ["app"]
    whole = json.loads(ctl("--url", url, "export", "-", "--with-default-user").stdout)
    assert sorted(user["name"] for user in whole["users"]) == ["app", "guest"]
    assert "guest" in [grant["user"] for grant in whole["permissions"]]
    # One vhost's definitions: no users at all, as RabbitMQ's per-vhost export.
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", ports["port"]))
    connection.channel().queue_declare("exported-q", durable=True)
    connection.close()
    vhost = json.loads(ctl("--url", url, "--vhost", "/", "export", "-").stdout)
    assert "users" not in vhost and "exported-q" in [queue["name"] for queue in vhost["queues"]]


def test_make_run_prints_the_ctl_line_that_reaches_it() -> None:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".venv" / "bin" / "amqlite").exists():
        pytest.skip("no .venv in the checkout (make venv)")
    while True:  # PORT and the HTTP ports that follow it, all free
        port = _free_port()
        if port + 10020 < 65536 and _bindable(port + 10000) and _bindable(port + 10020) and _bindable(port + 3420):
            break
    run = subprocess.Popen(["make", "-s", "run", f"PORT={port}"], cwd=root, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True,
                           env={**os.environ, "AMQLITE_LOG_FORMAT": "json"})
    try:
        assert run.stdout is not None
        assert select.select([run.stdout], [], [], 60)[0], "make run printed no ctl line"
        said = run.stdout.readline()
        assert said == (f"amqlite ctl for this broker: AMQLITE_MANAGEMENT_PORT={port + 10000} "
                        ".venv/bin/amqlite ctl list queues\n")
        _wait_listening(run)  # type: ignore[arg-type]
        line = said.split(": ", 1)[1]
        listed = subprocess.run(line, shell=True, cwd=root, capture_output=True, text=True, timeout=30,
                                env={key: value for key, value in os.environ.items() if key != "AMQLITE_URL"})
        assert listed.returncode == 0 and listed.stdout.split()[:2] == ["vhost", "name"], listed.stderr
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(10)


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True
