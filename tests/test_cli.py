"""`amqlite serve` as an operator runs it: a real process, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pika

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
