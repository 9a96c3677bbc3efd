# buildkit-operator: everyday commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLUSTER_DIR ?= $(CURDIR)/.local-cluster
NODE_DIR ?= $(CURDIR)/.local-node
CLUSTER_TOOLS := kubernetes etcd kwok
USER_TOOLS := kubernetes helm buildkit
EXAMPLE ?= examples/builder.yaml
# Builders in the scale benchmark (`make bench N=500`).
N ?= $(or $(BENCH_N),100)
# `make fuzz`: examples per fuzzer, new random ones each run (BKO_FUZZ_RANDOM= : the pinned ones).
BKO_FUZZ_EXAMPLES ?= 100
BKO_FUZZ_RANDOM ?= 1

.PHONY: help venv tools cluster cluster-down up down operator-start operator-stop check test test-unit \
	test-smoke test-integration test-e2e test-node test-chaos fuzz node node-down lint format crd \
	manifests bench clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@echo "setting up $(VENV) (Python dependencies, pinned in pyproject.toml)" >&2
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]' >&2
	@touch $@

venv: $(VENV)/.installed ## create the virtualenv with the operator and the test tools

tools: ## build every pinned binary (cached); the node's runc needs libseccomp-dev (hack/install-runtime-deps.sh --node)
	@hack/build-tools.sh

cluster: $(VENV)/.installed ## start the local control plane; prints export lines for eval
	@cluster_path=$$(hack/build-tools.sh --print-path $(CLUSTER_TOOLS)) && \
	user_path=$$(hack/build-tools.sh --print-path $(USER_TOOLS)) && \
	$(PY) hack/cluster.py up --dir $(CLUSTER_DIR) --bin-path "$$cluster_path" >&2 && \
	echo "export KUBECONFIG=$(CLUSTER_DIR)/kubeconfig" && \
	echo "export PATH=$$user_path:$(CURDIR)/$(VENV)/bin:\$$PATH"

cluster-down: operator-stop node-down ## stop the local control plane (and the real node)
	@$(PY) hack/cluster.py down --dir $(CLUSTER_DIR) >&2

node: cluster ## start a real node (containerd, kubelet, kube-proxy) joined to the cluster (root)
	@hack/install-runtime-deps.sh --node
	@$(PY) hack/node.py up --dir $(NODE_DIR) --cluster-dir $(CLUSTER_DIR) >&2

node-down: ## stop the real node and remove its namespaces, mounts and cgroups
	@if [ -f $(NODE_DIR)/state.json ]; then $(PY) hack/node.py down --dir $(NODE_DIR) >&2; fi

up: ## newcomer's first run: cluster, CRD, operator, example Builder, shown Ready (NODE=1: on a real node)
	@hack/up.sh

down: cluster-down ## stop the operator and the local control plane

operator-stop: ## stop an operator started by `make up`
	@if [ -f $(CLUSTER_DIR)/operator.pid ]; then \
		kill $$(cat $(CLUSTER_DIR)/operator.pid) 2>/dev/null || true; rm -f $(CLUSTER_DIR)/operator.pid; fi

check: $(VENV)/.installed lint ## before a push (a few minutes): lint, the unit tier and the integration smoke tests
	$(PY) -m pytest tests/unit
	$(PY) -m pytest tests/integration -m smoke

test: $(VENV)/.installed lint ## run every test tier: unit, e2e (real BuildKit), integration (real control plane) beside node (real kubelet), chaos (one short round); prints each tier's time (BKO_TEST_SERIAL=1: one tier at a time)
	@PY=$(PY) hack/test-tiers.sh

test-unit: $(VENV)/.installed ## fast tests of the pure parts
	$(PY) -m pytest tests/unit

test-smoke: $(VENV)/.installed ## the integration tests marked smoke: the control plane works, a Builder is created, Ready, deleted
	$(PY) -m pytest tests/integration -m smoke

test-integration: $(VENV)/.installed ## tests against the local control plane
	$(PY) -m pytest tests/integration

test-e2e: $(VENV)/.installed ## tests with real buildkitd and buildctl
	$(PY) -m pytest tests/e2e

test-chaos: $(VENV)/.installed ## leader failover and rounds of faults (BKO_CHAOS_LONG=1: 10 rounds; BKO_CHAOS_ROUNDS=N)
	$(PY) -m pytest tests/chaos

test-node: $(VENV)/.installed ## tests on a real node: Builders' pods in containers, the operator's image
	$(PY) -m pytest tests/node

fuzz: $(VENV)/.installed ## the Hypothesis fuzzers, unit and integration, on new random examples (BKO_FUZZ_EXAMPLES=100)
	BKO_FUZZ_EXAMPLES=$(BKO_FUZZ_EXAMPLES) \
	$(if $(BKO_FUZZ_RANDOM),BKO_FUZZ_RANDOM=$(BKO_FUZZ_RANDOM),env -u BKO_FUZZ_RANDOM) \
	$(PY) -m pytest tests/unit tests/integration -m hypothesis

lint: $(VENV)/.installed ## ruff and mypy
	$(VENV)/bin/ruff check operator tests hack bench
	$(VENV)/bin/ruff format --check operator tests hack bench
	$(VENV)/bin/mypy

format: $(VENV)/.installed ## format the Python code
	$(VENV)/bin/ruff format operator tests hack bench
	$(VENV)/bin/ruff check --fix operator tests hack bench

crd: $(VENV)/.installed ## regenerate crds/ from the model
	$(VENV)/bin/buildkit-operator crd > crds/builders.buildkit.dev.yaml

manifests: $(VENV)/.installed ## regenerate manifests/ from the chart
	hack/gen-manifests.sh

bench: $(VENV)/.installed ## print the benchmark figures: pure paths, then N Builders on a local cluster (N=100)
	$(PY) bench/run.py
	$(PY) bench/scale.py --n $(N)

clean: ## remove the virtualenv and local cluster state (the tool cache stays)
	rm -rf $(VENV) $(CLUSTER_DIR) $(NODE_DIR)
