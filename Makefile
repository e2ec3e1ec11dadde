# Two commands set everything up on a fresh machine: `make up` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint bench reliability up clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -ra

# The tests that start no model and no service process (seconds, not minutes).
test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow and not reliability"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

up: $(STAMP)
	$(PY) -m ops.cli up

bench: $(STAMP)
	$(PY) bench/retrain_bench.py
	$(PY) bench/service_bench.py
	$(PY) bench/queue_floor.py
	$(PY) bench/bot_bench.py
	$(PY) bench/engine_bench.py
	$(PY) bench/load_bench.py
	$(PY) bench/gate_bench.py
	$(PY) bench/process_bench.py

# Every fault, bad-input, security and load scenario at full size (about 8 min on 2 cores);
# rewrites the table in docs/RELIABILITY.md. CI runs the reduced form inside `make test`.
reliability: $(STAMP)
	$(PY) bench/reliability.py

clean:
	rm -rf var runs .pytest_cache
