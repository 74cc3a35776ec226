# The two commands of the README: `make demo` and `make test`. Both create or reuse .venv first.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench-precompute clean

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

lint: install
	$(VENV)/bin/ruff check nightrec flows tasks schemas tests bench
	$(VENV)/bin/lint-imports

clean:
	rm -rf .nightrec
