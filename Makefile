PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test bench bench-amqp bench-durable bench-scale bench-streams bench-kafka bench-engine bench-workbench fuzz venv clean crash interop-pika interop-aiormq screenshots

RUNTIME := $(VENV)/.runtime

# `make run` needs only the runtime dependencies; the test and benchmark
# tools come with the first target that uses them.
$(RUNTIME): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(STAMP)

venv: $(STAMP)

# The broker on RabbitMQ's ports and Kafka's (9092), or AMQLITE_*'s; `make run
# PORT=5673` where RabbitMQ runs: its HTTP ports follow as RabbitMQ's do (+10000
# for the management API, +10020 for Prometheus: 15673 and 15693), and Kafka's
# keeps its distance from 5672 (+3420: 9093), so two brokers share a machine.
# First, the `amqlite ctl` line that reaches this broker.
run: $(RUNTIME)
	@echo "amqlite ctl for this broker: $(if $(PORT),AMQLITE_MANAGEMENT_PORT=$(shell echo $$(($(PORT) + 10000))) )$(BIN)/amqlite ctl list queues"
	$(BIN)/amqlite serve $(if $(PORT),--port $(PORT) --management-port $(shell echo $$(($(PORT) + 10000))) --prometheus-port $(shell echo $$(($(PORT) + 10020))) --kafka-port $(shell echo $$(($(PORT) + 3420))))

# The embedded examples, no network.
demo: $(STAMP)
	$(BIN)/python examples/task_queue.py
	$(BIN)/python examples/event_bus.py
	$(BIN)/python examples/embedded_router.py
	$(BIN)/python examples/event_replay.py
	$(BIN)/python examples/partitioned_orders.py

# Types are checked as part of the tests. Two pytest-xdist workers: most
# of a serial run is spent waiting on servers, clients and kill -9 rounds,
# which the other worker fills; a module stays on one worker (loadscope), so
# its module fixtures and its tests' order are as in a serial run.
test: $(STAMP)
	$(BIN)/mypy amqlite
	$(BIN)/python -m pytest -q -n 2 --dist loadscope

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py

# amqlite against the RabbitMQ at 127.0.0.1:5672, same raw-socket load generator.
bench-amqp: $(STAMP)
	$(BIN)/python benchmarks/bench_amqp.py

# The same with a durable queue and persistent messages (confirms wait for fsync),
# then disk use, memory and start-up time for a 10M-message backlog, and for
# 10M held delayed messages, with how late due ones fire meanwhile; RSS per
# held delayed message over AMQP; memory handed back after drains and purges.
bench-durable: $(STAMP)
	$(BIN)/python benchmarks/bench_amqp.py --durable
	$(BIN)/python benchmarks/bench_store.py --messages 10000000
	$(BIN)/python benchmarks/bench_delayed.py --messages 10000000
	$(BIN)/python benchmarks/bench_delayed.py --held 1000000
	$(BIN)/python benchmarks/bench_memory.py --messages 150000

# Thousands of connections, fanout to 1,000 queues, 100,000 topic bindings:
# amqlite against the RabbitMQ at 127.0.0.1:5672 (about 8 minutes).
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/bench_scale.py

# Stream queues against RabbitMQ's, then a 10M-message stream read by 10
# readers at once (amqlite only): speed and peak RSS (about 20 minutes); the
# cost of a read by offset in a stream held in memory.
bench-streams: $(STAMP)
	$(BIN)/python benchmarks/bench_streams.py
	$(BIN)/python benchmarks/bench_stream_reads.py --sizes 1000000 4000000

# Kafka (confluent-kafka, acks=all, idempotence) against RabbitMQ's stream
# queues over AMQP and amqlite's own AMQP stream path; then 10 readers of a
# 10M-record topic, with the server's RSS.
bench-kafka: $(STAMP)
	$(BIN)/python benchmarks/bench_kafka.py

# The dead-letter workbench on a 1M-message, mostly paged queue: browse at
# the head, middle and end, a filtered browse, a dry run and a redrive.
bench-workbench: $(STAMP)
	$(BIN)/python benchmarks/bench_workbench.py

# The AMQP engine alone, in-process: CPU per message, steady enough to compare
# commits (run it from a worktree of the other one).
bench-engine: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) build *.egg-info

# A long property-test campaign (the suite runs a short slice of it).
fuzz: $(STAMP)
	AMQLITE_FUZZ_EXAMPLES=5000 AMQLITE_ABUSE_ROUNDS=20 $(BIN)/python -m pytest -q tests/core/test_conservation.py \
	    tests/server/test_fuzz.py tests/amqp/test_amqp_fuzz.py tests/server/test_abuse.py tests/kafka/test_kafka_fuzz.py \
	    tests/store/test_message_groups_machine.py tests/store/test_units.py

# A long kill -9 campaign against `amqlite serve` (the suite runs 3 rounds):
# no confirmed message lost or duplicated, order kept. Then the damage
# campaign: random bytes flipped, files deleted or cut in a stopped data
# directory, every confirmed message back or reported lost with matching
# counts (the suite runs 3 rounds). Then consume-transform-produce in AMQP
# transactions under kill -9, each id exactly once (the suite runs 1 round),
# and Kafka transactions killed at random moments: each wholly committed or
# aborted (the suite runs 1 round). Last, two pipelines across AMQP and Kafka
# transactions (queue -> stream -> topic, topic -> group -> queue) under
# kill -9, each input once in the final output (the suite runs 1 round).
# AMQLITE_CRASH_ROUNDS sets the rounds.
crash: $(STAMP)
	AMQLITE_CRASH_ROUNDS=$${AMQLITE_CRASH_ROUNDS:-100} $(BIN)/python tests/store/crash_harness.py
	AMQLITE_QUEUE_MEMORY_BUDGET=30 AMQLITE_CRASH_ROUNDS=$${AMQLITE_CRASH_ROUNDS:-100} $(BIN)/python tests/store/crash_harness.py
	AMQLITE_CRASH_ROUNDS=$${AMQLITE_CRASH_ROUNDS:-100} $(BIN)/python tests/store/damage_harness.py
	AMQLITE_CRASH_TEST_ROUNDS=$$(( $${AMQLITE_CRASH_ROUNDS:-100} / 4 )) $(BIN)/python -m pytest -q -s tests/store/test_tx_crash.py
	AMQLITE_TXN_CRASH_ROUNDS=$${AMQLITE_CRASH_ROUNDS:-100} $(BIN)/python -m pytest -q tests/kafka/test_transactions_crash.py
	AMQLITE_CROSS_CRASH_ROUNDS=$$(( $${AMQLITE_CRASH_ROUNDS:-100} / 4 )) $(BIN)/python -m pytest -q -s tests/kafka/test_exactly_once_crash.py

# Client libraries' own suites against amqlite (local: they need PIKA_SRC or
# AIORMQ_SRC, a checkout of the client; see docs/amqp.md).
interop-pika: $(STAMP)
	bash tests/interop/client_suite.sh pika

interop-aiormq: $(STAMP)
	bash tests/interop/client_suite.sh aiormq

# The dashboard screenshots in docs/, taken by its browser tests.
screenshots: $(STAMP)
	AMQLITE_SCREENSHOTS=docs $(BIN)/python -m pytest -q tests/management/test_dashboard.py
