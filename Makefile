# mlwarden — developer entry points. `make demo` and `make test` work on a fresh clone:
# both create the virtual environment (.venv) and install what they need first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The sidecar's forwarding path compiled with mypyc (tools/build_native.py), rebuilt when
# forward.py changes; when it cannot be built (no C compiler or headers, a compile error) it
# says why, make goes on, and the sidecar runs forward.py interpreted.
NATIVE := src/mlwarden/sidecar/_native/forward.digest
PYTEST_ARGS ?=
# pytest-xdist workers for the suite; PYTEST_WORKERS=0 runs it in one process. Twice the 2
# cores of the machines it is sized for: the integration and operator tests spend most of their
# time waiting on the processes they start (operator tests and integration: 310 s on 2 workers,
# 190 s on 4). Tests are handed out one at a time, in collection order: in bigger chunks the
# operator tests (seconds each) pile up on one worker while another runs out of work, and the
# RBAC audit, which waits for every other operator test (tests/operator/conftest.py), idles one.
PYTEST_WORKERS ?= 4
XDIST := -n $(PYTEST_WORKERS) --maxschedchunk 1
PY_DIRS := $(wildcard src tests benchmarks charts tools)

.PHONY: install native test test-unit test-integration demo lint format bench bench-peers-env soak e2e clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

install: $(STAMP) $(NATIVE)  ## create .venv and install mlwarden (editable) with its test, lint and demo extras

native: $(STAMP)  ## compile the sidecar's forwarding path with mypyc (make install does it when forward.py changed)
	$(BIN)/python tools/build_native.py

$(NATIVE): src/mlwarden/sidecar/forward.py tools/build_native.py | $(STAMP)
	$(BIN)/python tools/build_native.py

# Re-installs only when the project's dependency declaration changed.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint,demo]'
	@touch $(STAMP)

test: install  ## run the whole test suite (unit + integration on loopback), on PYTEST_WORKERS workers
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-unit: install  ## pure-logic tests only
	$(BIN)/python -m pytest $(XDIST) tests/unit $(PYTEST_ARGS)

test-integration: install  ## tests that start real processes on loopback
	$(BIN)/python -m pytest $(XDIST) tests/integration $(PYTEST_ARGS)

demo: install  ## run the demo on this machine, no cluster needed
	$(BIN)/mlwarden demo

lint: install  ## ruff, mypy on src/ and tools/, the import contracts, the CRD and chart checks (helm lint, schemas, promtool)
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/mypy src
	$(BIN)/mypy --strict tools
	$(BIN)/lint-imports
	$(BIN)/python -m mlwarden.crd | cmp -s - crds/observedmodels.mlwarden.io.yaml || \
		{ echo "crds/ is stale: run $(BIN)/python -m mlwarden.crd > crds/observedmodels.mlwarden.io.yaml"; exit 1; }
	$(BIN)/python -m mlwarden.crd --incidents | cmp -s - crds/incidents.mlwarden.io.yaml || \
		{ echo "crds/ is stale: run $(BIN)/python -m mlwarden.crd --incidents > crds/incidents.mlwarden.io.yaml"; exit 1; }
	$(BIN)/python -m mlwarden.crd --docs | cmp -s - docs/observedmodel.md || { echo "docs/observedmodel.md is stale: run $(BIN)/python -m mlwarden.crd --docs > docs/observedmodel.md"; exit 1; }
	$(BIN)/python charts/sync-crds.py --check
	$(BIN)/python -m pytest tests/chart -q -p no:cacheprovider

format: install  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format $(PY_DIRS)
	$(BIN)/ruff check --fix $(PY_DIRS)

bench: install  ## run the benchmarks and rewrite benchmarks/RESULTS.md (needs nginx and hey: see benchmarks/README.md)
	$(BIN)/python benchmarks/run.py

soak: install  ## 10 minutes of steady traffic through the sidecar while its detector flaps (benchmarks/soak.py; MINUTES=...)
	$(BIN)/python benchmarks/soak.py --minutes $(or $(MINUTES),10)

bench-peers-env: install  ## create the peers' virtual environments for the drift benchmarks (benchmarks/.peers-venv)
	$(BIN)/python benchmarks/peers/envs.py

e2e: install  ## end-to-end on a kind cluster (needs a Docker engine, kind and kubectl; skips without)
	$(BIN)/python -m pytest tests/e2e -v -rs -p no:cacheprovider

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist src/*.egg-info src/mlwarden/sidecar/_native
