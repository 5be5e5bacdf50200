# `make run` and `make test` each do their own set-up: a virtual environment in .venv with the
# project and its test dependencies installed (again whenever pyproject.toml changes).
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-clients bench k8s clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Serves configs/azure_openai_model.yaml; with no env.yaml (no credentials) it runs on the
# built-in Azure simulator. Extra arguments: make run ARGS="--port 8001 +policy_model_name=..."
run: $(STAMP)
	$(PYTHON) -m serve_app serve $(if $(wildcard env.yaml),,--simulate) $(ARGS)

test: $(STAMP)
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# Real clients against the app on the simulator: the `clients` extra, and the Codex CLI from npm (its
# package carries the native binary) into build/codex. A client that fails to install is skipped by its
# tests, which quote the reason; the install is retried on the next run.
CLIENTS_STAMP := $(VENV)/.clients-installed
CODEX_VERSION := 0.171.0
CODEX_DIR     := build/codex
CODEX_STAMP   := $(CODEX_DIR)/.installed-$(CODEX_VERSION)

$(CLIENTS_STAMP): $(STAMP)
	$(PYTHON) -m pip install --quiet -e '.[test,clients]' || echo "pip install .[clients] failed: those tests will skip"
	$(PYTHON) -c 'import agents, langchain_openai' && touch $@ || true

$(CODEX_STAMP):
	rm -rf $(CODEX_DIR) && mkdir -p $(CODEX_DIR)
	if npm install --prefix $(CODEX_DIR) --no-audit --no-fund @openai/codex@$(CODEX_VERSION) \
		> $(CODEX_DIR)/install.log 2>&1; then touch $@; \
	else echo "npm install @openai/codex@$(CODEX_VERSION) failed: the Codex tests will skip"; fi

test-clients: $(CLIENTS_STAMP) $(CODEX_STAMP)
	CODEX_BIN=$(abspath $(CODEX_DIR))/node_modules/.bin/codex $(PYTHON) -m pytest -m clients $(PYTEST_ARGS)

# The full benchmark (about 10-15 minutes on 2 cores): prints the tables and writes them with the
# machine's details to tests/benchmark/RESULTS.md. A smoke run: make bench BENCH_ARGS=--quick
bench: $(STAMP)
	$(PYTHON) -m tests.benchmark.bench $(BENCH_ARGS)

# After editing configs/serve_config.yaml: copy it into the RayService's serveConfigV2.
k8s: $(STAMP)
	$(PYTHON) k8s/sync_serve_config.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
