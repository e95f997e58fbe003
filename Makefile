# eagle: every target bootstraps its own virtualenv from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# what `make test` runs pytest on (e.g. make test TESTS=tests/test_config.py)
TESTS ?= tests

.PHONY: demo test lint typecheck unit protos check-protos unasync check-unasync bench bench-quick soak clean venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench,prometheus,otel]'
	# grpc's OpenTelemetry plugin for tests/test_otel.py, without its exact grpcio pin
	# (==1.85.0; eagle needs >=1.85.1): the tests prove it works with the grpcio installed
	$(PY) -m pip install -q --no-deps 'grpcio-observability>=1.85.0,<1.86'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m eagle.ops.demo

protos: $(STAMP)
	$(PY) scripts/gen_protos.py

check-protos: $(STAMP)
	$(PY) scripts/gen_protos.py --check

unasync: $(STAMP)
	$(PY) scripts/unasync.py

check-unasync: $(STAMP)
	$(PY) scripts/unasync.py --check

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m ruff format --check src tests benchmarks scripts

typecheck: $(STAMP)
	$(PY) -m mypy --strict src/eagle

test: $(STAMP) check-protos check-unasync lint typecheck
	$(PY) -m pytest -ra -q $(TESTS)

bench: $(STAMP)
	$(PY) -m benchmarks

bench-quick: $(STAMP)
	$(PY) -m benchmarks --quick

soak: $(STAMP)
	$(PY) -m eagle.testing.soak --minutes 10

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache
