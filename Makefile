# `make demo` and `make test` do every set-up step themselves on a fresh machine
# (they need python3.11 and Go on PATH; CGO is off); each step is
# cached, so a second run only pays for what changed.
SHELL := bash
.DEFAULT_GOAL := help

PYTHON3 ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# What pytest runs; e.g. make test PYTEST_ARGS="tests/integration/controlplane -x"
PYTEST_ARGS ?= tests
CLUSTER_DIR ?= .cache/cluster
STAGE := hack/stage.sh
DEPS_STAMP := $(VENV)/.fms-deps
DEPS_INPUTS := constraints.txt requirements-test.txt operator/pyproject.toml worker/pyproject.toml

.PHONY: help setup venv deps binaries models prometheus test demo up down status constraints chart

help:
	@echo "make demo        local control plane + simulated GPU fleet, operator, samples, then a real chat completion"
	@echo "make test        set up, then pytest $(PYTEST_ARGS) (PYTEST_ARGS=... to narrow)"
	@echo "make up|down|status   the local control plane in $(CLUSTER_DIR) (down also stops the demo's workers)"
	@echo "make constraints regenerate constraints.txt from the current .venv"
	@echo "make chart       copy the generated CRD and RBAC rules into charts/fms-operator and regenerate its README"

$(PY):
	@$(STAGE) venv $(PYTHON3) -m venv $(VENV)

venv: $(PY)

# Reinstalls only when one of DEPS_INPUTS is newer than the stamp.
deps: venv
	@$(STAGE) deps bash -c 'if [ -f $(DEPS_STAMP) ] && [ -z "$$(find $(DEPS_INPUTS) -newer $(DEPS_STAMP))" ]; then \
	  echo "python packages up to date"; else \
	  { [ -f $(DEPS_STAMP) ] || bash hack/check-disk.sh $(VENV) 10; } && \
	  $(PY) -m pip install -q --no-cache-dir -c constraints.txt -e operator -e worker -r requirements-test.txt && touch $(DEPS_STAMP); fi'

binaries:
	@$(STAGE) binaries bash hack/build-binaries.sh

models: deps
	@$(STAGE) models $(PY) hack/prepare_models.py

# Debian's prometheus server, for tests/integration/autoscale (idempotent).
prometheus:
	@$(STAGE) prometheus bash hack/install-prometheus.sh

setup: deps binaries models prometheus

# pytest's own exit codes pass through, so "no tests collected" (5) fails too.
test: setup
	@$(STAGE) pytest $(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	@$(STAGE) demo bash hack/demo.sh $(CLUSTER_DIR)

up: deps binaries
	@$(STAGE) cluster-up $(PY) hack/localcluster up --dir $(CLUSTER_DIR)

down:
	@if [ -x $(PY) ]; then $(PY) hack/localcluster down --dir $(CLUSTER_DIR); fi

status:
	@$(PY) hack/localcluster status --dir $(CLUSTER_DIR)

constraints:
	{ echo "# Exact pins of the tested environment (python 3.11). Regenerate from a working .venv: make constraints"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v -E '^(-e |#)'; } > constraints.txt

# The chart's CRD, RBAC rules and README come from the operator (hack/chart_sync.py; --check in the unit tests).
chart: deps
	$(PY) hack/chart_sync.py
