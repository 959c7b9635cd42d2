# flashcall-router: `make run` shows a verification end to end, `make test` checks everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test unit lint install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

## run: start redis-server, the sandbox and a worker; verify a phone end to end; stop them all
run: install
	$(BIN)/flashcall demo

## test: lint, then every test (integration tests start their own redis-server and sandbox)
test: lint
	$(BIN)/pytest -q

## unit: the tests that need no Redis and no sandbox
unit: install
	$(BIN)/pytest -q -m "not integration"

lint: install
	$(BIN)/ruff check worker tests
	$(BIN)/ruff format --check worker tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
