# `make demo` and `make test` work on a fresh clone: they create .venv, install the project with
# what it needs (Debian packages included), then run.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kubeflower-installed
# operator/ and workload/ are not packages themselves (they hold kubeflower_operator and
# kubeflower_workload), so `python -m` from here keeps the standard library's `operator`.
PIP := $(VENV)/bin/pip
PYTEST := $(VENV)/bin/pytest
APT_PACKAGES := iproute2 procps

.PHONY: setup system lint test test-in-engine test-unit demo crd bench clean images lock engine-stop

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

# Debian packages the tests use: `ip netns` (pods as local processes), `ps`.
system:
	@missing=""; command -v ip >/dev/null || missing="$$missing iproute2"; \
	 command -v ps >/dev/null || missing="$$missing procps"; \
	 if [ -n "$$missing" ]; then \
	   if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q $$missing; \
	   else sudo apt-get update -q && sudo apt-get install -y -q $$missing; fi; fi

setup: $(STAMP) system

# Formatter, linter, strict type checks of the packages, import contracts (pyproject.toml).
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The whole suite, the image tests included: the project's own Docker engine (scripts/engine.sh:
# Debian's docker.io, a private data root and socket under .engine/) is started for the run and
# stopped after it; both images are built first (without writing archives).
test: setup
	scripts/with-engine.sh $(MAKE) --no-print-directory test-in-engine

test-in-engine:
	@if [ -z "$$KUBEFLOWER_NO_ENGINE" ]; then SAVE=0 scripts/images.sh; fi
	$(PYTEST) -q -rs

test-unit: setup
	$(PYTEST) -q -m "not slow and not e2e and not images"

# Both images, tagged with the project's version, and their archives in dist/ (scripts/images.sh
# says which base and which torch; REGISTRY, BASE_IMAGE and TORCH=cpu|cuda choose).
images:
	scripts/with-engine.sh scripts/images.sh

# The images' lock files (requirements/), from pyproject.toml.
lock:
	python3 scripts/lock.py

engine-stop:
	scripts/engine.sh stop

demo: setup
	$(VENV)/bin/kubeflower run examples/digits-fedavg.yaml --output runs/digits-fedavg

# Regenerate the committed Kubernetes core schemas (from the Kubernetes client's models) and the
# CRD from the API model (a test fails when either differs).
crd: setup
	$(PY) scripts/corev1.py > kubeflower/core/corev1.json
	$(VENV)/bin/kubeflower crd > crds/federatedtrainingjobs.kubeflower.io.yaml

bench: setup
	$(PY) -m bench.operator_scale
	$(PY) bench/round_overhead.py

clean: engine-stop
	rm -rf $(VENV) runs .pytest_cache dist .engine
