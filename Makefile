# The README's two entry points: `make demo` and `make test`. Everything installs from scratch.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PENNFLOW_HOME ?= $(CURDIR)/.pennflow
export PENNFLOW_HOME
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1

.PHONY: setup demo test lint bench synth deploy lambda-deps clean sandbox-tool

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Stamps record which extras are installed, so `make demo` stays light and `make test` adds the rest.
$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[examples]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

# The local processor sandbox is bubblewrap (Debian/Ubuntu package `bubblewrap`). Installed when
# missing and apt-get can (as root, or through sudo without a password); otherwise processors run
# unsandboxed and each run says so.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
sandbox-tool:
	@command -v bwrap >/dev/null || { command -v apt-get >/dev/null && \
		{ $(SUDO) apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
		  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq bubblewrap >/dev/null; }; }; } || \
		echo "bubblewrap not installed: local processors will run unsandboxed (install the bubblewrap package)"

setup: $(VENV)/.dev node_modules/.package-lock.json sandbox-tool

demo: $(VENV)/.demo sandbox-tool
	$(BIN)/python processors/make_example_dataset.py demo-data/recordings
	$(BIN)/pennflow run workflows/eeg-quality.yaml --input demo-data/recordings
	$(BIN)/pennflow report last -o demo-data/report.html

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# Infrastructure tests share one synthesized app: --dist loadgroup keeps them on one worker.
test: setup lint
	$(BIN)/pytest -n 2 --dist loadgroup tests

bench: setup
	$(BIN)/python benchmarks/run_all.py

# What the Lambdas import beyond the Powertools layer (which brings pydantic), built for arm64 Lambda.
lambda-deps: $(BIN)/python
	rm -rf build/lambda-deps
	$(BIN)/pip install -q --platform manylinux2014_aarch64 --implementation cp --python-version 3.12 \
		--only-binary=:all: --target build/lambda-deps/python pyyaml==6.0.3 requests==2.34.2

synth: setup lambda-deps
	npx cdk synth --quiet

deploy: setup lambda-deps
	npx cdk deploy

clean:
	rm -rf $(VENV) node_modules cdk.out .pytest_cache build
