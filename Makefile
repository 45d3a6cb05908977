# The two entry points of the README: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1

.PHONY: setup demo test lint bench clean

$(BIN)/pennflow: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

setup: $(BIN)/pennflow node_modules/.package-lock.json

demo: $(BIN)/pennflow
	$(BIN)/python -m pip install -q -e '.[examples]'
	$(BIN)/python processors/make_example_dataset.py demo-data/recordings
	$(BIN)/pennflow run workflows/eeg-quality.yaml --input demo-data/recordings

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup lint
	$(BIN)/pytest -n 2 tests

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) node_modules cdk.out .pytest_cache
