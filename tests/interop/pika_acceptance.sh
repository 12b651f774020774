#!/usr/bin/env bash
# pika's own acceptance suite against amqlite: `make interop-pika`.
# Needs a pika source tree at commit 2126d43 (PIKA_SRC; no network in CI, so
# this is a local target, not part of `make test`). The suite hard-codes port
# 5672, where the reference RabbitMQ runs, so a copy is pointed at amqlite.
set -euo pipefail
: "${PIKA_SRC:?set PIKA_SRC to a pika checkout at 2126d43}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'kill "$broker" 2>/dev/null || true; rm -rf "$work"' EXIT
git -C "$PIKA_SRC" archive 2126d43 | tar x -C "$work"
port="$("$repo/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
sed -i "s/5672/$port/g" "$work"/tests/base/async_test_base.py "$work"/tests/acceptance/*.py
python3 -m venv "$work/.venv"
"$work/.venv/bin/pip" install -q -e "$work" pytest pytest-timeout twisted tornado gevent
"$repo/.venv/bin/amqlite" serve --host 127.0.0.1 --port "$port" --data-dir "$work/data" >"$work/broker.log" 2>&1 &
broker=$!
for _ in $(seq 50); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
cd "$work" && "$work/.venv/bin/python" -m pytest -q -p no:cacheprovider tests/acceptance
