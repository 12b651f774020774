#!/usr/bin/env bash
# A client library's own test suite against amqlite:
#   PIKA_SRC=<pika checkout>     tests/interop/client_suite.sh pika     (make interop-pika)
#   AIORMQ_SRC=<aiormq checkout> tests/interop/client_suite.sh aiormq   (make interop-aiormq)
# Local targets, not part of `make test`: they need the client's source tree
# and CI has no access to GitHub. The commits are those docs/amqp.md quotes.
set -euo pipefail
suite="${1:?pika or aiormq}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'kill "$broker" 2>/dev/null || true; rm -rf "$work"' EXIT
port="$("$repo/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
python3 -m venv "$work/.venv"
case "$suite" in
    pika)
        git -C "${PIKA_SRC:?set PIKA_SRC to a pika checkout}" archive 2126d43 | tar x -C "$work"
        # The suite hard-codes 5672, where the reference RabbitMQ runs.
        sed -i "s/5672/$port/g" "$work"/tests/base/async_test_base.py "$work"/tests/acceptance/*.py
        "$work/.venv/bin/pip" install -q -e "$work" pytest pytest-timeout twisted tornado gevent
        run=(tests/acceptance)
        ;;
    aiormq)
        git -C "${AIORMQ_SRC:?set AIORMQ_SRC to an aiormq checkout}" archive ec95ea9 | tar x -C "$work"
        "$work/.venv/bin/pip" install -q -e "$work" "pytest>=8.4,<9" aiomisc==17.9.4 aiomisc-pytest pytest-rst
        export AMQP_URL="amqp://guest:guest@127.0.0.1:$port/"
        # Its tests publish up to 128 MiB, RabbitMQ 3.x's limit.
        export AMQLITE_MAX_MESSAGE_SIZE=134217728
        # Its amqps and amqps-client variants connect to 5671 with the
        # certificates it ships (the second with a client certificate).
        export AMQLITE_TLS_PORT=5671 AMQLITE_TLS_CERT="$work/tests/certs/server.pem" \
            AMQLITE_TLS_KEY="$work/tests/certs/server.key" AMQLITE_TLS_CA="$work/tests/certs/ca.pem" \
            AMQLITE_TLS_VERIFY_PEER=true
        run=(tests)
        ;;
    *) echo "unknown suite $suite" >&2; exit 2 ;;
esac
AMQLITE_LOG_LEVEL=warning "$repo/.venv/bin/amqlite" serve --host 127.0.0.1 --port "$port" --data-dir "$work/data" \
    --management-port 0 --prometheus-port 0 \
    >"$work/broker.log" 2>&1 &
broker=$!
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
cd "$work" && "$work/.venv/bin/python" -m pytest -q -p no:cacheprovider "${run[@]}"
