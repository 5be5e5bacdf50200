# `make run` and `make test` each do their own set-up: a virtual environment in .venv with the
# project and its test dependencies installed (again whenever pyproject.toml changes).
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run lint test test-unit check test-clients test-py313 test-nemo-gym test-gcs-ft bench bench-py313 bench-nemo-gym bench-pool k8s clean

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

# Python 3.13, the version NeMo Gym 0.7 (from PyPI) runs: a venv of its own with this project and nemo-gym,
# since gym's Ray cluster runs the Python gym runs from and its workers import serve_app from there.
# test-py313 runs the whole suite there, the real NeMo Gym driving our component included; test-nemo-gym
# only that part. nemo-gym's metadata asks for Python >= 3.13.14: pip takes the 3.13 at hand with
# --ignore-requires-python, and uv (gym builds server venvs with it) resolves as for 3.13.14 through
# tests/nemo_gym_uv.toml.
PYTHON313 ?= $(or $(shell ls -d $$(pyenv root 2>/dev/null)/versions/3.13*/bin/python3.13 2>/dev/null | tail -n 1),$(shell command -v python3.13 2>/dev/null))
GYM_VENV  := .venv-py313
GYM_STAMP := $(GYM_VENV)/.installed

$(GYM_STAMP): pyproject.toml
	@test -n "$(PYTHON313)" || { echo "make test-py313 needs Python 3.13 (python3.13 on PATH, or PYTHON313=...)"; exit 1; }
	$(PYTHON313) -m venv $(GYM_VENV)
	$(GYM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(GYM_VENV)/bin/python -m pip install --quiet --ignore-requires-python 'nemo-gym==0.7.0' 'uv>=0.9' -e '.[test]'
	touch $(GYM_STAMP)

test-py313: $(GYM_STAMP)
	SERVE_APP_REQUIRE_NEMO_GYM=1 $(GYM_VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-nemo-gym: $(GYM_STAMP)
	SERVE_APP_REQUIRE_NEMO_GYM=1 $(GYM_VENV)/bin/python -m pytest tests/test_nemo_gym.py $(PYTEST_ARGS)

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

# Head failure (tests/test_gcs_fault_tolerance.py): a Ray cluster of its own, its GCS backed by Debian's
# redis-server, killed and restarted under load. Installs redis-server when missing (as root, else through
# sudo); if that fails the test fails saying so (SERVE_APP_REQUIRE_REDIS), where plain pytest would skip.
APT := $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get

test-gcs-ft: $(STAMP)
	command -v redis-server >/dev/null || $(APT) install -y -qq redis-server \
		|| { $(APT) update -qq && $(APT) install -y -qq redis-server; } \
		|| echo "installing redis-server failed: test-gcs-ft will fail"
	SERVE_APP_REQUIRE_REDIS=1 $(PYTHON) -m pytest -m gcs_ft tests/test_gcs_fault_tolerance.py $(PYTEST_ARGS)

# The full benchmark (about 10-15 minutes on 2 cores): prints the tables and writes them with the
# machine's details to tests/benchmark/RESULTS_py311.md, and its targets to the 3.11 section of
# tests/benchmark/RESULTS.md. A smoke run: make bench BENCH_ARGS=--quick
bench: $(STAMP)
	$(PYTHON) -m tests.benchmark.bench $(BENCH_ARGS)

# The same benchmark on Python 3.13 (the venv of test-py313): writes RESULTS_py313.md and its section of RESULTS.md.
bench-py313: $(GYM_STAMP)
	$(GYM_VENV)/bin/python -m tests.benchmark.bench $(BENCH_ARGS)

# The NeMo Gym front (its port, calling replicas through the handle) against Serve's HTTP path, in one run;
# writes tests/benchmark/RESULTS_nemo_gym.md. BENCH_ARGS=--quick for a smoke run.
bench-nemo-gym: $(STAMP)
	$(PYTHON) -m tests.benchmark.nemo_gym_front $(BENCH_ARGS)

# A model server over three simulated regions: choosing an upstream, throughput against the summed
# budgets, a 429 storm and an outage; writes tests/benchmark/RESULTS_pool.md. BENCH_ARGS=--quick for a smoke run.
bench-pool: $(STAMP)
	$(PYTHON) -m tests.benchmark.pool $(BENCH_ARGS)

# After editing configs/serve_config.yaml: copy it into the RayService's serveConfigV2.
k8s: $(STAMP)
	$(PYTHON) k8s/sync_serve_config.py

clean:
	rm -rf $(VENV) $(GYM_VENV) .pytest_cache .hypothesis
