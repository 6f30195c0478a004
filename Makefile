# nicotask: `make run` starts the whole system locally, `make test` runs every check.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUN_DIR ?= $(CURDIR)/.run/dev
PYTEST_ARGS ?=
SOAK_ARGS ?=

# Go binaries (kube-apiserver, etcd, helm, promtool) are cached in ~/.cache/nicotask, keyed by version.
.PHONY: help venv lock lock-check binaries temporal-server integration-server helm promtool docs-values lint typecheck crds crds-check unit integration test test-slow run stop status bench soak argocd flux gitops-e2e kind-image kind-e2e image node-binaries node-e2e node-e2e-server clean

help: ## Show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

# Two distributions: the runtime nicotask (operator/, what the image ships) with its
# test tools, and the dev tooling nicotask-dev (dev/: `nicotask dev`, `nicotask crds`).
# Every package comes from the lock requirements/dev.txt (pinned, hash-checked); the two
# distributions themselves are installed editable on top, without resolving anything.
$(STAMP): pyproject.toml dev/pyproject.toml requirements/dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements/dev.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e '.[server,dev]' -e ./dev
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv from the lock (requirements/dev.txt): nicotask and nicotask-dev, both editable

lock: $(STAMP) ## Resolve requirements/*.txt (pinned, with hashes) from the pyproject files with uv (LOCK_ARGS=--upgrade)
	$(BIN)/python -m nicotask_dev.lock $(LOCK_ARGS)

lock-check: $(STAMP) ## Fail when a pyproject's dependencies changed without `make lock`
	$(BIN)/python -m nicotask_dev.lock --check

binaries: $(STAMP) ## Build (once, cached in ~/.cache/nicotask) etcd and kube-apiserver from Go modules
	$(BIN)/nicotask dev build

temporal-server: $(STAMP) ## Build (once, cached in ~/.cache/nicotask) the Temporal server and its SQL tool from go.temporal.io/server
	$(BIN)/python -c 'from nicotask_dev.devenv.temporalserver import main; main()'

helm: $(STAMP) ## Build (once, cached in ~/.cache/nicotask) the pinned helm from the Go module proxy
	$(BIN)/python -m nicotask_dev.devenv.helm

promtool: $(STAMP) ## promtool (cached in ~/.cache/nicotask): out of Debian's prometheus package, else built from its Go module
	$(BIN)/python -m nicotask_dev.devenv.promtool

argocd: $(STAMP) ## Build (once, cached in ~/.cache/nicotask) Argo CD from github.com/argoproj/argo-cd/v3 (about 5 min the first time)
	$(BIN)/python -m nicotask_dev.devenv.argocdbuild

flux: $(STAMP) ## Build (once, cached in ~/.cache/nicotask) Flux's source-controller and kustomize-controller from their Go modules
	$(BIN)/python -m nicotask_dev.devenv.fluxbuild

docs-values: $(STAMP) ## Regenerate the configuration table in docs/deploy.md from values.yaml
	$(BIN)/python -m nicotask_dev.devenv.helm --write-docs docs/deploy.md

lint: $(STAMP) ## ruff: the linter, and the formatter's check (`ruff format` fixes it)
	$(BIN)/ruff check operator dev tests bench soak
	$(BIN)/ruff format --check operator dev tests bench soak

typecheck: $(STAMP) ## mypy
	$(BIN)/mypy

crds: $(STAMP) ## Regenerate crds/*.yaml and the chart's CRDs from the models
	$(BIN)/nicotask crds

crds-check: $(STAMP) ## Fail when crds/ drifted from the models
	$(BIN)/nicotask crds --check

unit: $(STAMP) helm promtool ## Unit tests (no servers; helm renders the chart, promtool checks the alerts)
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

integration: $(STAMP) binaries helm ## Integration and e2e tests on a real local control plane, Temporal and BMC emulators
	$(BIN)/pytest tests/integration tests/e2e -q -m "not slow and not gitops" $(PYTEST_ARGS)

test-slow: $(STAMP) binaries helm ## The long runs of e2e checks (e.g. 300 graceful-stop races)
	$(BIN)/pytest tests/e2e -q -m slow $(PYTEST_ARGS)

# The second pass: the tests marked temporal_server (tests/conftest.py) against a Temporal
# server on PostgreSQL (NICOTASK_TEMPORAL=server; installs PostgreSQL with apt-get as root).
# A real Argo CD (application controller, repo server, redis) and a real Flux (source- and
# kustomize-controller, Git over HTTP) apply tasks from a local Git repository
# (docs/gitops.md); installs redis-server with apt-get as root when missing.
gitops-e2e: $(STAMP) binaries argocd flux ## GitOps e2e: Argo CD and Flux apply, cancel and prune tasks by Git commits
	$(BIN)/pytest tests/e2e -q -s -m gitops $(PYTEST_ARGS)

integration-server: $(STAMP) binaries helm temporal-server ## Integration/e2e tests marked temporal_server, on the Temporal server + PostgreSQL
	NICOTASK_TEMPORAL=server $(BIN)/pytest tests/integration tests/e2e -q -m "temporal_server and not slow" $(PYTEST_ARGS)

test: lint typecheck crds-check lock-check unit integration ## Everything CI runs

run: $(STAMP) binaries ## Start the local system in the background (apiserver, etcd, Temporal, BMCs, operator, worker, shim; NICOTASK_TEMPORAL=server: Temporal server on PostgreSQL)
	$(BIN)/nicotask dev up --run-dir $(RUN_DIR) --with-system

stop: $(STAMP) ## Stop what `make run` started
	$(BIN)/nicotask dev down --run-dir $(RUN_DIR)

status: $(STAMP) ## Show what is running
	$(BIN)/nicotask dev status --run-dir $(RUN_DIR)

bench: $(STAMP) binaries ## Benchmarks: print figures and write bench/results/latest.json
	$(BIN)/python -m bench $(BENCH_ARGS)

soak: $(STAMP) binaries ## Fault soak: tasks, cancels on every path and random faults; exits 1 on a violation
	$(BIN)/python -m soak $(SOAK_ARGS)

image: $(STAMP) ## Build the image with podman (cached by content; installs podman/runc/mmdebstrap as root)
	PYTHON=$(BIN)/python bash hack/build-image.sh

node-binaries: $(STAMP) ## Build (once, cached) kubelet, kube-scheduler and kube-controller-manager
	$(BIN)/python -m nicotask_dev.devenv.node --build

node-e2e: $(STAMP) binaries helm image node-binaries ## The chart's pods on a real kubelet node (containerd, CNI): install, cancel, upgrade, uninstall
	$(BIN)/pytest tests/node -q $(PYTEST_ARGS)

# The same chart tests with the pods pointed at the Temporal server on PostgreSQL instead of
# the dev server (through the node's bridge, as before); root, like node-e2e.
node-e2e-server: $(STAMP) binaries helm image node-binaries temporal-server ## node-e2e (image, install, cancel, upgrade, uninstall) with the pods on the Temporal server + PostgreSQL
	NICOTASK_TEMPORAL=server $(BIN)/pytest tests/node -q $(PYTEST_ARGS)

kind-image: $(STAMP) ## Build (cached by content) the offline kind node image: Kubernetes v1.35.4 in one go build, Debian rootfs, component images (root)
	$(BIN)/python -m nicotask_dev.devenv.kindimage

kind-e2e: $(STAMP) helm ## kind cluster (Docker, or offline: podman + the kind-image as root), chart, helm test, e2e tests
	bash hack/kind-e2e.sh

clean: ## Remove the venv and run folders (the Go build cache in ~/.cache/nicotask stays)
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
