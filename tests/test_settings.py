"""Settings that cannot be wrong: every field validated, every problem
reported at once with where it came from, one line and no traceback from
``amqlite serve``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import amqlite
from amqlite.auth import LoginRefused, Users, hash_password
from amqlite.config import FIELDS, ConfigError, Settings, load

AMQLITE = [sys.executable, "-m", "amqlite"]

#: One bad value per setting, as a config file line, and what the error says.
#: A new setting without an entry here fails test_every_setting_has_a_bad_example.
BAD = {
    "host": ("host = 5", "host must be a string"),
    "port": ("port = 5687.5", "port must be an integer"),
    "management_port": ("management_port = 70000", "management_port must be 0-65535"),
    "management_tls_port": ("management_tls_port = -1", "management_tls_port must be 0-65535"),
    "prometheus_port": ('prometheus_port = "x"', "prometheus_port must be an integer"),
    "kafka_port": ("kafka_port = 99999", "kafka_port must be 0-65535"),
    "kafka_tls_port": ('kafka_tls_port = "x"', "kafka_tls_port must be an integer"),
    "kafka_vhost": ("kafka_vhost = 1", "kafka_vhost must be a string"),
    "kafka_advertised_host": ("kafka_advertised_host = []", "kafka_advertised_host must be a string"),
    "kafka_auto_create_topics": ('kafka_auto_create_topics = "no"', "kafka_auto_create_topics must be true or false"),
    "kafka_allow_anonymous": ("kafka_allow_anonymous = 1", "kafka_allow_anonymous must be true or false"),
    "kafka_group_initial_rebalance_delay": ("kafka_group_initial_rebalance_delay = -1",
                                            "kafka_group_initial_rebalance_delay must be a number of seconds from 0"),
    "data_dir": ("data_dir = 1", "data_dir must be a string"),
    "definitions": ("definitions = []", "definitions must be a string"),
    "tls_port": ("tls_port = -1", "tls_port must be 0-65535"),
    "tls_cert": ("tls_cert = 1", "tls_cert must be a string"),
    "tls_key": ("tls_key = 1", "tls_key must be a string"),
    "tls_ca": ("tls_ca = 1", "tls_ca must be a string"),
    "tls_verify_peer": ('tls_verify_peer = "yes"', "tls_verify_peer must be true or false"),
    "tls_fail_if_no_peer_cert": ("tls_fail_if_no_peer_cert = 1", "tls_fail_if_no_peer_cert must be true or false"),
    "segment_size": ("segment_size = 10", "segment_size must be 1024-"),
    "queue_memory_budget": ("queue_memory_budget = 0", "queue_memory_budget must be 1-"),
    "heartbeat": ("heartbeat = -5", "heartbeat must be 0-65535 seconds"),
    "consumer_timeout": ("consumer_timeout = -1", "consumer_timeout must be 0-2147483647 milliseconds"),
    "disk_free_limit": ("disk_free_limit = -1", "disk_free_limit must be 0-"),
    "max_content_in_flight": ("max_content_in_flight = 0", "max_content_in_flight must be 1-"),
    "auth_mechanisms": ('auth_mechanisms = ["PLAIN", "KERBEROS"]', "auth_mechanisms must be a non-empty list of"),
    "max_unauthenticated": ("max_unauthenticated = 0", "max_unauthenticated must be 1-"),
    "max_unauthenticated_per_address": ("max_unauthenticated_per_address = 0",
                                        "max_unauthenticated_per_address must be 1-"),
    "memory_high_watermark": ("memory_high_watermark = 1.5", "memory_high_watermark must be a fraction from 0 to 1"),
    "memory_high_watermark_bytes": ("memory_high_watermark_bytes = -1", "memory_high_watermark_bytes must be 0-"),
    "memory_paging_ratio": ("memory_paging_ratio = 2", "memory_paging_ratio must be a fraction from 0 to 1"),
    "frame_max": ("frame_max = 9999999999", "frame_max must be 4096-4294967295 bytes"),
    "channel_max": ("channel_max = 70000", "channel_max must be 0-65535"),
    "max_message_size": ("max_message_size = -1", "max_message_size must be 1-536870912 bytes"),
    "max_connections": ("max_connections = -1", "max_connections must be 0-"),
    "handshake_timeout": ("handshake_timeout = 0", "handshake_timeout must be a number of seconds"),
    "log_format": ('log_format = "xml"', "log_format must be one of auto, console, json"),
    "log_level": ('log_level = "loud"', "log_level must be one of debug, info"),
    "default_user": ("default_user = 1", "default_user must be a string"),
    "default_pass": ("default_pass = []", "default_pass must be a string"),
    "loopback_users": ('loopback_users = "guest"', "loopback_users must be a list of non-empty names"),
    "users": ('[users.bob]\npassword = "x"\nvhost = ["/"]', "users.bob.vhost: unknown key"),
    "vhosts": ('[vhosts."/"]\ndescripton = "typo"', "vhosts./.descripton: unknown key"),
}


def _load_file(tmp_path: Path, text: str) -> Settings:
    config = tmp_path / "amqlite.toml"
    config.write_text(text + "\n")
    return load(config_file=str(config), environ={})


def test_every_setting_has_a_bad_example() -> None:
    assert set(BAD) == set(FIELDS)


@pytest.mark.parametrize("name", list(BAD))
def test_every_setting_rejects_a_bad_value_saying_where_and_what(tmp_path: Path, name: str) -> None:
    line, expected = BAD[name]
    with pytest.raises(ConfigError) as error:
        _load_file(tmp_path, line)
    message = str(error.value)
    assert message.startswith(str(tmp_path / "amqlite.toml") + ": ")
    assert expected in message


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AMQLITE_HEARTBEAT", "70000", "AMQLITE_HEARTBEAT=70000: heartbeat must be 0-65535 seconds"),
        ("AMQLITE_CHANNEL_MAX", "70000", "AMQLITE_CHANNEL_MAX=70000: channel_max must be 0-65535"),
        ("AMQLITE_FRAME_MAX", "9999999999", "AMQLITE_FRAME_MAX=9999999999: frame_max must be 4096-4294967295 bytes"),
        ("AMQLITE_MAX_MESSAGE_SIZE", "-1", "AMQLITE_MAX_MESSAGE_SIZE=-1: max_message_size must be 1-536870912 bytes"),
        ("AMQLITE_PORT", "5687.5", "AMQLITE_PORT=5687.5: port must be an integer, not '5687.5'"),
        ("AMQLITE_HANDSHAKE_TIMEOUT", "soon", "AMQLITE_HANDSHAKE_TIMEOUT=soon: handshake_timeout must be a number"),
    ],
)
def test_environment_errors_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(environ={variable: value})
    assert str(error.value).startswith(message)


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    text = 'heartbeat = -5\nbogus = 1\n[users.bob]\npassword = "x"\nvhost = ["/"]\npasword = "y"'
    with pytest.raises(ConfigError) as error:
        _load_file(tmp_path, text)
    message = str(error.value)
    for part in ("heartbeat must be", "bogus: unknown setting", "users.bob.vhost: unknown key",
                 "users.bob.pasword: unknown key"):
        assert part in message


def test_errors_and_reprs_never_echo_a_password_or_its_hash(tmp_path: Path) -> None:
    hashed = hash_password("hunter2")
    bad_tables = ('[users.bob]\npassword = "hunter2"\ntags = "administrator"',
                  f'[users.bob]\npassword_hash = "{hashed}"\ntags = "administrator"',
                  '[users.bob]\npassword = "hunter2"\npassword_hash = "x"',
                  'default_pass = ["hunter2"]')
    for text in bad_tables:
        with pytest.raises(ConfigError) as error:
            _load_file(tmp_path, text)
        assert "hunter2" not in str(error.value) and hashed not in str(error.value)
        assert str(error.value).startswith(str(tmp_path / "amqlite.toml") + ": ")
    with pytest.raises(ConfigError) as error:
        load(environ={}, overrides={"default_pass": ["hunter2"]})
    assert str(error.value) == "--default-pass: default_pass must be a string"
    settings = Settings(default_pass="hunter2", users={"bob": {"password_hash": hashed}})
    assert "hunter2" not in repr(settings) and hashed not in repr(settings)


def test_a_user_needs_exactly_one_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="users.bob needs exactly one of password and password_hash"):
        _load_file(tmp_path, '[users.bob]\nvhosts = ["/"]')


def test_settings_built_in_code_are_validated_too() -> None:
    with pytest.raises(ValueError, match="heartbeat must be 0-65535 seconds"):
        Settings(heartbeat=-5)


def test_valid_sources_combine(tmp_path: Path) -> None:
    settings = load(
        config_file=str(_write(tmp_path, 'vhosts = ["/", "staging"]\nloopback_users = []')),
        environ={"AMQLITE_HANDSHAKE_TIMEOUT": "2.5", "AMQLITE_LOOPBACK_USERS": "ops,guest"},
    )
    assert settings.handshake_timeout == 2.5 and settings.loopback_users == ("ops", "guest")
    assert list(settings.vhosts) == ["/", "staging"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "amqlite.toml"
    path.write_text(text + "\n")
    return path


# -- guest and loopback_users --------------------------------------------------


def test_a_new_guest_password_keeps_guest_on_loopback(tmp_path: Path) -> None:
    users = Users.from_settings(_load_file(tmp_path, '[users.guest]\npassword = "n3w"'))
    assert users.authenticate("guest", "n3w", loopback=True).name == "guest"
    with pytest.raises(LoginRefused, match="loopback only"):
        users.authenticate("guest", "n3w", loopback=False)
    with pytest.raises(LoginRefused, match="bad password"):
        users.authenticate("guest", "guest", loopback=True)


def test_loopback_users_can_be_lifted_and_guest_removed() -> None:
    lifted = Users.from_settings(Settings(loopback_users=[]))
    assert lifted.authenticate("guest", "guest", loopback=False).name == "guest"
    without_guest = Users.from_settings(Settings(default_user=""))
    with pytest.raises(LoginRefused, match="unknown user"):
        without_guest.authenticate("guest", "guest", loopback=True)


def test_a_user_restricted_to_vhosts_gets_only_those(tmp_path: Path) -> None:
    users = Users.from_settings(_load_file(tmp_path, '[users.app]\npassword = "pw"\nvhosts = ["staging"]'))
    app = users.authenticate("app", "pw", loopback=False)
    assert app.may_open("staging") and not app.may_open("/")


# -- the embedded broker takes the same Settings --------------------------------


async def test_open_broker_takes_settings_and_validates_overrides() -> None:
    async with amqlite.open_broker(Settings(data_dir="", vhosts=["/", "jobs"])) as broker:
        connection = await broker.connection("jobs")
        channel = await connection.channel()
        assert (await channel.queue_declare("q")).queue == "q"
    with pytest.raises(ValueError, match="max_message_size must be"):
        async with amqlite.open_broker(max_message_size=-1):
            pass


# -- the command line -----------------------------------------------------------


def _serve(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AMQLITE, "serve", "--host", "127.0.0.1", "--port", "0", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "AMQLITE_LOG_FORMAT": "json", **(env or {})})


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_bad_settings_exit_2_with_one_line() -> None:
    result = _serve(env={"AMQLITE_HEARTBEAT": "70000"})
    assert result.returncode == 2
    assert _one_line(result) == "amqlite: AMQLITE_HEARTBEAT=70000: heartbeat must be 0-65535 seconds"


def test_bad_flag_value_names_the_flag() -> None:
    result = subprocess.run([*AMQLITE, "serve", "--port", "5687.5"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert _one_line(result) == "amqlite: --port 5687.5: port must be an integer, not '5687.5'"


def test_data_dir_that_is_a_file_exits_1_with_one_line(tmp_path: Path) -> None:
    plain = tmp_path / "file"
    plain.write_text("x")
    result = _serve("--data-dir", str(plain))
    assert result.returncode == 1
    assert _one_line(result) == f"amqlite: data_dir {plain} is not a directory"
    assert "broker.listening" not in result.stderr


def test_data_dir_under_proc_is_refused() -> None:
    result = _serve("--data-dir", "/proc/amqlite")
    assert result.returncode == 1
    assert _one_line(result) == "amqlite: data_dir /proc/amqlite is on a virtual filesystem; choose a real directory"


def test_data_dir_locked_by_another_broker_fails_before_listening(tmp_path: Path) -> None:
    first = subprocess.Popen([*AMQLITE, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(tmp_path)],
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "AMQLITE_LOG_FORMAT": "json"})
    try:
        assert first.stderr is not None
        while "broker.listening" not in first.stderr.readline():
            pass
        result = _serve("--data-dir", str(tmp_path))
        assert result.returncode == 1
        assert _one_line(result) == f"amqlite: data directory {tmp_path} is in use by another amqlite"
        assert "broker.listening" not in result.stderr
    finally:
        first.terminate()
        first.wait(10)


def test_hash_password_reads_stdin_and_the_hash_checks() -> None:
    result = subprocess.run([*AMQLITE, "hash-password"], input="s3cret\n", capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    from amqlite.auth import check_password

    assert check_password(result.stdout.strip(), "s3cret")
    assert not check_password(result.stdout.strip(), "s3cret\n")


def test_serve_help_lists_every_setting_and_its_variable() -> None:
    result = subprocess.run([*AMQLITE, "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for name in FIELDS:
        assert f"  {name} " in result.stdout
        if name != "users":
            assert f"AMQLITE_{name.upper()}" in result.stdout
    assert "--log-level" in result.stdout and "--log-format" in result.stdout


def test_pure_layers_import_without_trio_or_structlog() -> None:
    code = ("import sys, amqlite.core.broker, amqlite.amqp.frames, amqlite.amqp.spec; "
            "print(sorted(m for m in ('trio', 'structlog', 'anyio') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "[]"


def test_embedded_library_never_writes_to_stdout() -> None:
    # A channel error is logged (at info); a program that configured nothing sees nothing on stdout.
    code = """
import trio, amqlite
async def main():
    async with amqlite.open_broker() as broker:
        ch = await broker.channel()
        try:
            await ch.queue_declare("missing", passive=True)
        except amqlite.AMQPError:
            pass
trio.run(main)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_loopback_means_127_0_0_0_8_and_1_for_amqp_and_http_alike() -> None:
    from amqlite.auth import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1")
    assert not is_loopback("10.0.0.1") and not is_loopback("localhost") and not is_loopback("")


def test_bad_definitions_file_exits_1_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "defs.json"
    bad.write_text('{"queues": [{"vhost": "/"}]}')
    result = _serve("--data-dir", str(tmp_path / "data"), "--definitions", str(bad))
    assert result.returncode == 1
    assert _one_line(result) == f"amqlite: definitions {bad}: queues[0] lacks name"
    assert "broker.listening" not in result.stderr
