# The two commands of the quick start: `make run` and `make test`; `make unit` while developing.
# Each bootstraps .venv from pyproject.toml first (re-installed when pyproject.toml changes).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test unit integration chaos lint bench clean native

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tierfaas needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The call path compiled with mypyc (tierfaas.native, docs/operations.md): built again when a
# source it compiles changed (~1 min), a no-op otherwise; without a C compiler it says so and
# the node runs the same code interpreted.
native: $(STAMP)
	$(BIN)/python -m tierfaas.native.build

run: $(STAMP) native
	$(BIN)/tierfaas up --nodes 5 --release examples/demo --port 8080

# Every tier: unit, integration, e2e (real node processes) and the chaos suite's short
# versions (~2.5 min on their own), on the compiled call path when it is built; the unit tier
# first on the interpreted sources too (~30 s), as a machine without a compiler runs them.
# Spread over JOBS pytest-xdist workers (see tests/conftest.py for how tests are grouped onto
# workers). Two on two cores: the cluster tests bound how fast membership, failover and a heal
# converge, and three workers of sandboxed node clusters oversubscribe two cores enough to push
# those past their bounds.
JOBS ?= 2
test: $(STAMP) native
	TIERFAAS_NATIVE=0 $(BIN)/python -m pytest -q -n $(JOBS) tests/unit
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadgroup tests/unit tests/integration tests/e2e tests/chaos

# The unit tier alone (under a minute): in-process, with FakeClock and the in-memory fakes of
# tierfaas.testing; no process is started, no socket opened, nothing sleeps.
unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

# Real sockets, kinship nodes and forked instances, in one process; no node process.
integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

# The chaos suite's long versions (about 20 min: the soak alone is 10), then the report:
# docs/reliability.md's table is rewritten from test-artifacts/chaos/*.json, even when a
# scenario fails (its row shows what happened); the exit code is pytest's.
chaos: $(STAMP)
	rm -f test-artifacts/chaos/*.json
	TIERFAAS_CHAOS=long $(BIN)/python -m pytest tests/chaos -q -rs --timeout 1500; \
	status=$$?; $(BIN)/python -m tests.chaos.report && exit $$status

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# The bench extra (matplotlib, for the plots in docs/) on top of dev, once.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

# Every benchmark in full (about 31 min); `make bench QUICK=--quick` for a look in ~5 min.
BENCHMARKS := runtime membership control_plane frontdoor routing rollout capacity scale async
bench: $(BENCH_STAMP)
	@for b in $(BENCHMARKS); do echo "== benchmarks/$$b.py $(QUICK)"; \
	  $(BIN)/python benchmarks/$$b.py $(QUICK) || exit 1; done
	@echo "== benchmarks/routing.py --workload io $(QUICK)"
	@$(BIN)/python benchmarks/routing.py --workload io $(QUICK)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
