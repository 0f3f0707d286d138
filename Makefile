# The two commands of the README: `make run` (the whole service, in the foreground) and
# `make test` (the whole suite against real servers). Both set up .venv on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
# Reinstall when pyproject.toml changes.
STAMP := $(VENV)/.installed

.PHONY: run test lint fmt bench

## run: API, worker, Temporal dev server + UI and PostgreSQL, data kept in .data/
run: $(STAMP)
	$(PY) -m devstack

## test: the whole suite (pass pytest options as ARGS="-k orders -x")
test: $(STAMP)
	$(PY) -m pytest $(ARGS)

## bench: the on-sale benchmark on its own throwaway stack (ARGS="--quick" for a smoke run)
bench: $(STAMP)
	$(VENV)/bin/pip install -q -e '.[dev,bench]'
	$(PY) -m bench $(ARGS)

lint: $(STAMP)
	$(RUFF) check .
	$(RUFF) format --check .

fmt: $(STAMP)
	$(RUFF) check --fix .
	$(RUFF) format .

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
		echo "Python 3.11 or newer is needed, and '$(PYTHON)' is not on PATH."; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "Python 3.11 or newer is needed; '$(PYTHON)' is $$($(PYTHON) -V 2>&1)."; \
		echo "Install a newer one, or point to it: make PYTHON=python3.12 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@
