# flashcall-router: `make run` shows a verification end to end, `make test` checks everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# uv lives in a venv of its own: `uv sync` keeps $(VENV) to exactly the lock, uv included.
UV_HOME := .uv
UV := $(UV_HOME)/bin/uv
# The venv is the one uv.lock describes, on this machine's Python, never one uv downloads.
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never
# Bytecode compiled at install, as the image does (deploy/Dockerfile): a process that compiles
# its imports from source (PYTHONDONTWRITEBYTECODE, a read-only venv) keeps the compiler's
# memory (worker.actors: 107 MB RSS instead of 70) and starts 2 s later (2.5 s instead of 0.5).
export UV_COMPILE_BYTECODE := 1

.PHONY: run test unit lint lock-check lock lock-uv install redis-tools bench chaos simulate soak capacity clean up down

$(UV): requirements-uv.txt
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/python -m pip install --quiet --no-deps --require-hashes -r requirements-uv.txt
	touch $@

## install: .venv with exactly the versions of uv.lock (runtime and dev), the package editable.
# Run every time (a no-op sync takes milliseconds): a stamp file would miss a checkout that
# changed the lock or pyproject.toml behind make's back.
install: $(UV) lock-check
	$(UV) sync --locked --extra dev --python $(PYTHON) --quiet

## redis-tools: redis-server and redis-sentinel from Debian's packages, where missing (what .ci/run installs for the tests)
redis-tools:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v redis-sentinel >/dev/null 2>&1 || missing="$$missing redis-sentinel"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  root=""; [ "$$(id -u)" -eq 0 ] || root=sudo; \
	  $$root apt-get update -qq && $$root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## run: start redis-server, the sandbox and a worker; verify a phone end to end; stop them all
run: install
	$(BIN)/flashcall demo

## test: lint, then every test (integration tests start their own redis-server and sandbox)
test: lint
	$(BIN)/pytest -q

## unit: the tests that need no Redis and no sandbox
unit: install
	$(BIN)/pytest -q -m "not integration"

lint: install lock-check
	$(BIN)/ruff check worker flashcall_dev tests bench
	$(BIN)/ruff format --check worker flashcall_dev tests bench
	$(BIN)/mypy

# Fails when pyproject.toml asks for something uv.lock does not hold, or no longer asks for
# something it does; offline, so it checks the commit, not what PyPI has today.
lock-check: $(UV)
	@$(UV) lock --check --offline --quiet || { \
		echo "uv.lock does not match pyproject.toml: run 'make lock' and commit uv.lock" >&2; exit 1; }

## lock: move uv.lock to the newest releases pyproject.toml allows (PACKAGE=name moves one alone)
lock: $(UV)
	$(UV) lock $(if $(PACKAGE),--upgrade-package $(PACKAGE),--upgrade)

## lock-uv: pin uv itself at UV_VERSION, with its hashes, in requirements-uv.txt
lock-uv: $(UV)
	$(if $(UV_VERSION),,$(error give the version: make lock-uv UV_VERSION=X.Y.Z))
	echo "uv==$(UV_VERSION)" | $(UV) pip compile --quiet --generate-hashes --no-annotate \
		--custom-compile-command "make lock-uv UV_VERSION=$(UV_VERSION)" - -o requirements-uv.txt

## bench: the project against bare Dramatiq actors, start to approval, Redis per verification (~12 min); writes docs/benchmarks.md
bench: install redis-tools
	$(UV) sync --locked --extra dev --extra bench --python $(PYTHON)
	$(BIN)/python -m bench

## chaos: kill workers, restart and freeze Redis, break providers, flood it (~15 min); writes docs/reliability.md
chaos: install redis-tools
	$(BIN)/python -m bench.chaos

## simulate: three routers through five scenarios in accelerated time, and traffic pumping in real time (~17 min on 2 CPUs); writes docs/routing-quality.md
simulate: install
	$(BIN)/python -m bench.simulate

## soak: 30 min of steady mixed traffic on two worker groups under Sentinel, a planned failover and a restart on the way; writes docs/soak.md
soak: install redis-tools
	$(BIN)/python -m bench.soak

## capacity: 1, 2 and 4 worker groups against one Redis, its CPU per verification (~10 min); writes docs/scaling.md
capacity: install redis-tools
	$(BIN)/python -m bench.capacity

## up: the whole stack in containers (Redis, worker, callbacks, API, sandbox, Prometheus, Grafana)
up: deploy/.env
	FLASHCALL_CODE_SECRET=$${FLASHCALL_CODE_SECRET:-$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(32))')} \
		docker compose -f deploy/docker-compose.yml up -d --build

down:
	docker compose -f deploy/docker-compose.yml down

# The compose API's key and its Redis user's password, made once and kept (a new password
# at every `make up` would recreate Redis, a new key lock the client out); never committed.
deploy/.env:
	@umask 077; $(PYTHON) -c 'import secrets; \
		print(f"FLASHCALL_REDIS_API_PASSWORD={secrets.token_hex(32)}"); \
		print(f"FLASHCALL_API_KEYS=dev:{secrets.token_urlsafe(32)}")' > $@
	@echo "wrote $@: the API (http://127.0.0.1:8800) takes the key after 'dev:' in its FLASHCALL_API_KEYS"

clean:
	rm -rf $(VENV) $(UV_HOME) .pytest_cache .mypy_cache .ruff_cache
