# flashcall-router: `make run` shows a verification end to end, `make test` checks everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test unit lint install bench chaos simulate soak capacity clean up down

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
	$(BIN)/ruff check worker tests bench
	$(BIN)/ruff format --check worker tests bench
	$(BIN)/mypy

## bench: the project against bare Dramatiq actors (~10 min); writes docs/benchmarks.md
bench: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench

## chaos: kill workers, restart and freeze Redis, break providers, flood it (~15 min); writes docs/reliability.md
chaos: install
	$(BIN)/python -m bench.chaos

## simulate: three routers through five scenarios in accelerated time (~15 min on 2 CPUs); writes docs/routing-quality.md
simulate: install
	$(BIN)/python -m bench.simulate

## soak: 30 min of steady mixed traffic on two worker groups under Sentinel, a planned failover and a restart on the way; writes docs/soak.md
soak: install
	$(BIN)/python -m bench.soak

## capacity: 1, 2 and 4 worker groups against one Redis, its CPU per verification (~10 min); writes docs/scaling.md
capacity: install
	$(BIN)/python -m bench.capacity

## up: the whole stack in containers (Redis, worker, callbacks, sandbox, Prometheus, Grafana)
up:
	FLASHCALL_CODE_SECRET=$${FLASHCALL_CODE_SECRET:-$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(32))')} \
		docker compose -f deploy/docker-compose.yml up -d --build

down:
	docker compose -f deploy/docker-compose.yml down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
