# One task runner. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA_VERSION := 4.1.1
JARS := .runstate/jars/kafka-$(KAFKA_VERSION)/.complete
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install jars browser lint test test-fast demo faults mutation bench bench-quick bench-steps bench-deps bench-scale broker-start broker-stop clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install runstate with every extra (processor, s3, console) and the test tools

$(JARS): | $(STAMP)
	$(BIN)/runstate broker fetch

jars: $(JARS) ## fetch the Kafka broker jars from Maven Central (once)

# The console's browser tests (tests/console, marker `browser`) drive Debian's Chromium
# through Debian's chromedriver; Selenium is told both paths and never downloads anything.
BROWSER_PACKAGES := chromium chromium-driver
browser: ## install Debian's chromium and chromium-driver for the browser tests (apt-get, once)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
		else echo "browser: need root or sudo to apt-get install $(BROWSER_PACKAGES)" >&2; exit 1; fi; \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q $(BROWSER_PACKAGES); }

lint: $(STAMP) ## ruff (lint + format check) and mypy strict
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint $(JARS) browser ## lint, then every test (integration tests start their own broker; browser tests Chromium)
	$(BIN)/pytest -m "not faults" $(PYTEST_ARGS)

test-fast: $(STAMP) ## unit tests only, no broker
	$(BIN)/pytest -m "not integration and not faults" $(PYTEST_ARGS)

demo: $(STAMP) $(JARS) ## start the local broker and run the main job end to end
	$(BIN)/runstate demo

faults: $(STAMP) $(JARS) ## the fault battery (long); writes docs/reliability.md
	$(BIN)/pytest -m faults tests/faults $(PYTEST_ARGS)

mutation: $(STAMP) ## mutation testing of the modules that keep the promises (MODULES=a.b to narrow); docs/testing.md
	$(BIN)/pip install -q -c constraints.txt -e '.[test,mutation]'
	nice -n 10 timeout 45m $(BIN)/python -m tests.mutation $(MODULES)

bench: $(STAMP) $(JARS) bench-deps ## the full benchmarks; writes benchmarks/results and docs/benchmarks.md
	$(BIN)/python -m benchmarks.run --full
	$(BIN)/python -m benchmarks.steps

bench-quick: $(STAMP) $(JARS) bench-deps ## the benchmarks in a few minutes
	$(BIN)/python -m benchmarks.run --quick

bench-steps: $(STAMP) $(JARS) bench-deps ## only the durable-step costs beside Redis, PostgreSQL, Restate, DBOS
	$(BIN)/python -m benchmarks.steps

# The step benchmark's anchors: Redis and PostgreSQL from Debian, Restate's server from npm
# (its SDK, DBOS Transact and the Python clients come with the bench extra). What fails to install is
# reported as unavailable by the benchmark, the rest still runs.
bench-deps: $(STAMP) ## install what the benchmarks compare against
	$(BIN)/pip install -q -c constraints.txt -e '.[test,bench]'
	@command -v redis-server >/dev/null && command -v initdb >/dev/null || \
		{ apt-get update -q && apt-get install -y -q redis-server postgresql; } || \
		echo "bench-deps: apt-get failed; the Redis/PostgreSQL anchors will say unavailable"
	@test -x .runstate/restate/node_modules/@restatedev/restate-server-linux-x64/bin/restate-server || \
		npm install --no-audit --no-fund --prefix .runstate/restate @restatedev/restate-server@1.7.12 || \
		echo "bench-deps: npm failed; the Restate anchor will say unavailable"

bench-scale: $(STAMP) $(JARS) ## the runtime at 1,000,000 runs against 10,000 (long; RUNS=N for another size)
	$(BIN)/python -m benchmarks.scale --runs $(or $(RUNS),1000000)

broker-start: $(STAMP) $(JARS) ## start the local broker on 127.0.0.1:9092
	$(BIN)/runstate broker start

broker-stop: ## stop the local broker
	-$(BIN)/runstate broker stop

clean: ## remove caches (keeps .venv, the jars and broker data)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis
