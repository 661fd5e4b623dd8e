# Quick start: `make dev` runs the platform, `make test` runs every test.
# Database URLs have no default here: with none set, ops_platform/config.py makes development the
# demo database (the one default, shared by make dev, the UI and the CLI).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
DEV_HOST ?= 127.0.0.1
DEV_PORT ?= 3000

# What the tests run besides Python, as Debian packages (.ci/run installs them).
TEST_PACKAGES_MISSING = $(strip \
  $(if $(shell command -v pg_dump),,postgresql-client) \
  $(if $(shell command -v zstd),,zstd) \
  $(if $(wildcard /usr/bin/chromium),,chromium) \
  $(if $(shell command -v systemd-analyze),,systemd))

.PHONY: install dev test test-tools test-fast graph-snapshot bench validate clean

$(BIN)/dagster: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/dagster

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	install -d -m 700 $(DAGSTER_HOME)
	install -m 600 dagster.yaml $@

# The demo database when no database URL is set, then a code server, dagster-webserver and dagster-daemon (ops_platform/dev.py).
# Their log shows warnings, errors and one line per run; make dev DEV_VERBOSE=1 shows every line.
dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m ops_platform.dev --host $(DEV_HOST) --port $(DEV_PORT) $(if $(DEV_VERBOSE),--verbose)

test-tools:
	@test -z "$(TEST_PACKAGES_MISSING)" || { echo "make test needs Debian packages that are missing: sudo apt-get install $(TEST_PACKAGES_MISSING)"; exit 1; }

# Two test sessions side by side, each module whole in one of them (its module fixtures set up once):
# the tests wait on servers and subprocesses as much as they compute. Modules that share something
# outside the test's own names (make dev's demo database) are one group (pytest.mark.xdist_group).
test: install test-tools
	$(BIN)/python -m pytest -n 2 --dist loadgroup --no-loadscope-reorder

test-fast: install   # seconds, no server: the definitions against ops_platform_tests/graph_snapshot.txt
	$(BIN)/python -m pytest -q ops_platform_tests/test_graph.py ops_platform_tests/test_cli_help.py

graph-snapshot: install   # after an intended change of the definitions
	UPDATE_GRAPH_SNAPSHOT=1 $(BIN)/python -m pytest -q ops_platform_tests/test_graph.py

validate: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster definitions validate -w workspace.yaml

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .dagster_home .pytest_cache
