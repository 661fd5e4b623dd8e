# Quick start: `make dev` runs the platform, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
DEV_PORT ?= 3000

.PHONY: install dev test test-fast graph-snapshot bench validate clean

$(BIN)/dagster: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/dagster

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -h 127.0.0.1 -p $(DEV_PORT)

test: install
	$(BIN)/python -m pytest

test-fast: install   # seconds, no server: the definitions against ops_platform_tests/graph_snapshot.txt
	$(BIN)/python -m pytest -q ops_platform_tests/test_graph.py ops_platform_tests/test_cli_help.py

graph-snapshot: install   # after an intended change of the definitions
	UPDATE_GRAPH_SNAPSHOT=1 $(BIN)/python -m pytest -q ops_platform_tests/test_graph.py

validate: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster definitions validate

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .dagster_home .pytest_cache
