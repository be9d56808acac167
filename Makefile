# Edge visual inspection: one Makefile for the whole project. `make help` lists the targets.
# Every target creates and fills the virtual environment it needs (uv), so a fresh clone needs nothing else.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
TRAIN_VENV ?= .venv-train
MODELS_DIR ?= models
export UV_PYTHON_DOWNLOADS := never

UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)

.PHONY: help run check-config test test-train test-unit lint format bench models fixtures clean lock up down deploy

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "}; /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

# The environment for serving, tests and lint; rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet -e '.[serving,orchestrator,interface,hub,dev]'
	touch $@

$(TRAIN_VENV)/.installed: pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(TRAIN_VENV)
	VIRTUAL_ENV=$(TRAIN_VENV) $(UV) pip install --quiet -e '.[train]'
	touch $@

run: $(VENV)/.installed ## Run the demo duck line: dashboard :8080, orchestrator :8000, model server :8501
	PY=$(VENV)/bin/python MODELS_DIR=$(MODELS_DIR) ./deployment/run-edge.sh

# The edge stack in containers (needs a Docker engine; see docker-compose.yml and deployment/Dockerfile.*).
COMPOSE ?= docker compose
up: ## Start the edge stack with Docker Compose (model serving, orchestrator, dashboard)
	$(COMPOSE) up -d --wait

down: ## Stop the edge stack started by `make up`
	$(COMPOSE) down

INVENTORY ?= hub/ansible/inventories/example/hosts.yml
deploy: $(VENV)/.installed ## Roll the edge out to a fleet: make deploy INVENTORY=path/to/hosts.yml
	cd hub/ansible && ../../$(VENV)/bin/ansible-playbook -i $(abspath $(INVENTORY)) deploy_edge.yml $(ANSIBLE_ARGS)

# Locked requirements per image (and `edge` for devices without Docker), for linux on amd64 and arm64.
LOCKS := model-serving:serving orchestrator:orchestrator interface:interface hub:hub edge:serving,orchestrator,interface
lock: | $(UV) ## Re-lock deployment/requirements/*.txt from pyproject.toml
	@for spec in $(LOCKS); do name=$${spec%%:*}; extras=$${spec#*:}; \
		$(UV) pip compile pyproject.toml $$(for e in $${extras//,/ }; do echo --extra $$e; done) \
			--python-version 3.11 --universal --no-header --quiet -o deployment/requirements/$$name.txt; done

check-config: $(VENV)/.installed ## Validate station and integrations files (STATIONS=..., INTEGRATIONS=...)
	$(VENV)/bin/python -m edge_orchestrator --check-config $(or $(STATIONS),deployment/stations/*.yaml) \
		--check-integrations $(or $(INTEGRATIONS),deployment/integrations/*.yaml)

# Browser tests drive Debian's chromium through Playwright (no browser download).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	./deployment/install-debian-packages.sh chromium

# The MQTT tests run a real broker: Debian's mosquitto, started by the tests on loopback.
MOSQUITTO := /usr/sbin/mosquitto
$(MOSQUITTO):
	./deployment/install-debian-packages.sh mosquitto

# The fleet proof (tests/fleet) runs each simulated device as an sshd in its own network namespace.
SSHD := /usr/sbin/sshd
$(SSHD):
	./deployment/install-debian-packages.sh openssh-server iproute2

# The hub's storage is tested against a real PostgreSQL server too (Debian's, started by the tests on loopback).
PG_CTL := /usr/lib/postgresql/15/bin/pg_ctl
$(PG_CTL):
	./deployment/install-debian-packages.sh postgresql

test: $(VENV)/.installed $(CHROMIUM) $(MOSQUITTO) $(SSHD) $(PG_CTL) ## Set up and run the whole test suite
	$(VENV)/bin/python -m pytest

test-train: $(VENV)/.installed $(TRAIN_VENV)/.installed $(PG_CTL) ## Hub dataset export -> model factory training (TensorFlow, slow)
	$(VENV)/bin/python -m pytest -m train tests/hub

test-unit: $(VENV)/.installed ## Unit tests only (seconds)
	$(VENV)/bin/python -m pytest tests/unit

lint: $(VENV)/.installed ## ruff (with the ASYNC rules) and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy edge_model_serving edge_orchestrator edge_interface hub bench tests

format: $(VENV)/.installed ## Format the code with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(VENV)/.installed ## Benchmark in-process vs served latency and throughput (writes bench/results/)
	@command -v wrk >/dev/null || ./deployment/install-debian-packages.sh wrk || \
		echo "wrk is not available: the benchmark falls back to a Python client (which competes for the CPU)"
	$(VENV)/bin/python -m bench.serving --out bench/results
	$(VENV)/bin/python -m bench.orchestrator --out bench/results
	$(VENV)/bin/python -m bench.integrations --broker-nodelay --out bench/results
	@command -v /usr/lib/postgresql/15/bin/pg_ctl >/dev/null || ./deployment/install-debian-packages.sh postgresql
	$(VENV)/bin/python -m bench.hub --postgres --out bench/results

models: $(TRAIN_VENV)/.installed ## Rebuild the bundled duck models (models/duck-*): generate, train, quantise, cards
	time $(TRAIN_VENV)/bin/python -m hub.model_factory bundled --out $(MODELS_DIR)

fixtures: $(TRAIN_VENV)/.installed ## Rebuild the .tflite test fixtures (needs the heavy `train` extra)
	$(TRAIN_VENV)/bin/python tests/fixtures/build_models.py --out tests/fixtures/models

clean: ## Remove virtual environments and caches
	rm -rf $(VENV) $(TRAIN_VENV) .tools .pytest_cache .mypy_cache .ruff_cache
