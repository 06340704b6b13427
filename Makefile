# modeldeploy — developer entry points. Everything installs into .venv from PyPI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install test lint fmt clean controlplane helm healthtools demo demo-project demo-cluster down \
	reliability gitops-engines redis gitops-e2e image image-if-root image-test node node-if-root

install: $(VENV)/.installed

# requirements/dev.txt (hack/lock.sh) pins every package, so pip resolves nothing and a new
# upstream release cannot change or stall a fresh install.
$(VENV)/.installed: pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint requirements/dev.txt -e '.[dev,report]'
	touch $@

# kube-apiserver, etcd and kubectl, built from the Go module proxy (cold: ~8 min on 2 cores);
# before pytest, because a cold build is longer than any test timeout.
controlplane:
	hack/build-controlplane.sh >/dev/null

# helm v3, built from the Go module proxy, for the chart's lint and render tests.
helm:
	hack/build-helm.sh >/dev/null

# luahealth (Argo CD's Lua health runtime on gopher-lua) and kstatus (sigs.k8s.io/cli-utils),
# from the Go module proxy (cold: ~1 min on 2 cores), for the GitOps health tests.
healthtools:
	hack/build-healthtools.sh >/dev/null

test: install lint controlplane helm healthtools image-if-root node-if-root
	$(BIN)/pytest -q -ra

# The slow tier of the reliability suite, not in `make test` (~15 min on 2 cores): 20
# ModelDeployments through 20 % injected AWS faults, then 50 `kill -9` of the operator across
# four pipelines, an API server outage and a registry loss. Figures in bench/results/.
reliability: install controlplane
	$(BIN)/python bench/faults.py
	$(BIN)/python bench/chaos.py

# Flux (source- and kustomize-controller v1.9) and Argo CD (v3.6.1), built from the Go module
# proxy (cold: ~15-20 min and 2.4 GB on 2 cores; cached under .cache/gitops by their pins).
gitops-engines:
	hack/build-gitops.sh >/dev/null

# Argo CD's cache: Debian's redis-tools carries the server binary and starts no service.
redis:
	@dpkg -s redis-tools >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-tools)

# The GitOps end-to-end tier, not in `make test` (the engines' cold build alone is longer than
# the rest of CI): five commit-driven scenarios through the real Flux and Argo CD
# (tests/test_gitops_e2e.py). Health sequences in bench/results/gitops_e2e.json.
gitops-e2e: install controlplane gitops-engines redis
	$(BIN)/pytest -q -ra -m gitops_e2e tests/test_gitops_e2e.py

# The operator image from the Dockerfile with podman (root; podman, mmdebstrap and runc come
# from apt when missing), on a Debian base made by mmdebstrap when no registry serves the
# Dockerfile's. Output: .cache/image/<key>/modeldeploy.oci.tar and localhost/modeldeploy:<version>.
image:
	hack/build-image.sh >/dev/null

# `make test` builds it before pytest when it can (root), so tests/test_image.py finds it current;
# without root those tests skip and say why.
image-if-root:
	@if [ "$$(id -u)" = 0 ]; then hack/build-image.sh >/dev/null; \
	else echo "make image: skipped (needs root: podman is rootful); tests/test_image.py skips"; fi

# A real node's binaries (kubelet, kube-proxy, scheduler, controller-manager, pause, CoreDNS)
# and containerd, the CNI plugins and iptables from apt when missing, for `modeldeploy cluster up --with-node` and the node tests. `make
# test` does this when it runs as root; without root those tests skip and say why.
node: install
	@missing=""; command -v containerd >/dev/null || missing="$$missing containerd"; \
	[ -x /usr/lib/cni/bridge ] || missing="$$missing containernetworking-plugins"; \
	command -v iptables >/dev/null || missing="$$missing iptables"; \
	if [ -n "$$missing" ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi
	hack/build-node.sh >/dev/null

node-if-root:
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory node; \
	else echo "make node: skipped (needs root: kubelet, containerd); tests/test_node*.py skip"; fi

# The image checked by running it: non-root, read-only root, `modeldeploy run` healthy against a
# real API server, no compiler, pip cache or source tree (also part of `make test`).
image-test: install controlplane image
	$(BIN)/pytest -q -ra -s tests/test_image.py

# The whole pipeline on this machine: control plane, operator (local provider), a trained
# model through staging to production. Leaves it running; `make down` stops it.
demo: install controlplane
	$(BIN)/python hack/demo.py up

# The same model through project mode: a local project's pipeline deploys, the operator decides
# its ApproveDeployment gate. `make down` stops it too.
demo-project: install controlplane
	$(BIN)/python hack/demo.py up --project

# The same seed pipeline with everything in pods on a real node (operator, staging and
# production endpoints), installed by the Helm chart; needs root. `make down` stops it too.
demo-cluster: install controlplane helm node image
	$(BIN)/python hack/demo_cluster.py up

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python hack/demo.py down; fi
	@if [ -d .cache/demo-cluster ]; then $(BIN)/python hack/demo_cluster.py down; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
