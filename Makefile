# The two commands a newcomer needs: `make dev` runs the platform, `make test` runs the tests.
# Both create the virtualenv (.venv) and install the project into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: dev test lint test-cluster bench clean

$(INSTALLED): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

dev: $(INSTALLED)
	$(BIN)/m2m dev

lint: $(INSTALLED)
	$(BIN)/ruff check m2m tests bench
	$(BIN)/ruff format --check m2m tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# Three Cassandra nodes on 127.0.0.1-3 take the single-node stack's addresses: stop it.
test-cluster: $(INSTALLED)
	$(BIN)/m2m stack down
	$(BIN)/pytest -m cluster tests/cluster -s

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
