# The two commands of the README: `make demo` and `make test`. Both create or reuse .venv first.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: install demo test test-stack stack-up stack-down lint bench-precompute clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	$(VENV)/bin/python -m nightrec.ops.spark_archive
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/nightrec run --demo

test: install
	$(VENV)/bin/python -m pytest

# The production shape as processes on this machine (nightrec/ops/stack.py, infra/README.md): Postgres, SeaweedFS,
# Prefect and MLflow servers, a Spark master and two workers, a Prefect worker per pool, the API.
stack-up: install
	$(VENV)/bin/nightrec stack up

stack-down:
	$(VENV)/bin/nightrec stack down

# Brings a stack of its own up, runs two nights of the modular chain on it (losing a Spark worker and the batch
# worker on the way), tears it down.
test-stack: install
	$(VENV)/bin/python -m pytest -m stack tests/stack

lint: install
	$(VENV)/bin/ruff check nightrec flows tasks schemas tests bench
	$(VENV)/bin/lint-imports

clean:
	rm -rf .nightrec
