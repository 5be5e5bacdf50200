# `make run` and `make test` each do their own set-up: a virtual environment in .venv with the
# project and its test dependencies installed (again whenever pyproject.toml changes).
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run lint test test-unit check bench k8s clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Serves configs/azure_openai_model.yaml; with no env.yaml (no credentials) it runs on the
# built-in Azure simulator. Extra arguments: make run ARGS="--port 8001 +policy_model_name=..."
run: $(STAMP)
	$(PYTHON) -m serve_app serve $(if $(wildcard env.yaml),,--simulate) $(ARGS)

# The gates CI runs before any test: lint, format and strict types.
lint: $(STAMP)
	$(VENV)/bin/ruff check serve_app tests k8s
	$(VENV)/bin/ruff format --check serve_app tests k8s
	$(VENV)/bin/mypy

# Everything CI runs, lint first; the tests marked `serve` start Ray.
test: lint
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# The quick loop: every test that needs no Ray (seconds, not minutes).
test-unit: $(STAMP)
	$(PYTHON) -m pytest -q -m "not serve" $(PYTEST_ARGS)

check: lint test

# The full benchmark (about 10-15 minutes on 2 cores): prints the tables and writes them with the
# machine's details to tests/benchmark/RESULTS.md. A smoke run: make bench BENCH_ARGS=--quick
bench: $(STAMP)
	$(PYTHON) -m tests.benchmark.bench $(BENCH_ARGS)

# After editing configs/serve_config.yaml: copy it into the RayService's serveConfigV2.
k8s: $(STAMP)
	$(PYTHON) k8s/sync_serve_config.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
