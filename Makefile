PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench fuzz venv clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(STAMP)

venv: $(STAMP)

# Until the AMQP server lands, the main job is the embedded demo.
run: $(STAMP)
	$(BIN)/python examples/task_queue.py
	$(BIN)/python examples/event_bus.py
	$(BIN)/python examples/embedded_router.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py

clean:
	rm -rf $(VENV) build *.egg-info

# A long property-test campaign (the suite runs a short slice of it).
fuzz: $(STAMP)
	AMQLITE_FUZZ_EXAMPLES=5000 $(BIN)/python -m pytest -q tests/core/test_conservation.py
