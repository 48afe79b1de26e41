# Two commands on a fresh machine: `make run` and `make test`. Both create .venv if missing (idempotent).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TORCH_HOME ?= $(CURDIR)/.torch
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-fast weights venv bench lint clean

$(STAMP): requirements.txt requirements-dev.txt client/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

weights: $(STAMP)
	$(PY) -m model.weights fetch

run: weights
	HOST=$(HOST) PORT=$(PORT) ./docker/entrypoint.sh

test: weights
	$(PY) -m pytest -q -ra --durations=15

test-fast: $(STAMP)
	FACEID_TEST_FAST=1 $(PY) -m pytest -q -ra -m "not slow" --durations=5

bench: weights
	$(PY) -m benchmarks.lfw --out benchmarks/results/lfw.json

clean:
	rm -rf $(VENV) .pytest_cache
