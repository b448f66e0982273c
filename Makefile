# Set-up is part of every target: a fresh machine needs only `make demo` or `make test`.
# The environment is installed from requirements/lock.txt: exact versions, with hashes, of every
# direct and transitive dependency (and of maturin and uv themselves), so a result can be
# reproduced and a new upstream release cannot turn CI red. pyproject.toml keeps compatible ranges
# for `pip install overnight`; `make lock` refreshes the lock on purpose, `make test-latest` tries
# the newest versions those ranges allow (docs/reproducibility.md).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
LOCK    := requirements/lock.txt
# the uv that installs the lock is itself pinned in it
UV_PIN  := $(shell sed -n 's/^\(uv==[^ ;\\]*\).*/\1/p' $(LOCK))
SOURCES := pyproject.toml $(LOCK) $(wildcard native/Cargo.toml native/src/*.rs native/src/*/*.rs)
LATEST  := .venv-latest
# the smoke suite `make test-latest` runs: every workload end to end at smoke scale, and the regression
SMOKE_SUITE := tests/regression tests/quantcorr tests/geometry tests/ramlm tests/creditbridge tests/data \
	tests/orchestrator/test_end_to_end.py

.PHONY: install lock demo test test-native lint test-reliability test-latest results bench bench-peers bench-scale clean-results

$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(UV_PIN)"
	$(BIN)/uv pip sync --quiet --python $(BIN)/python --require-hashes $(LOCK)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Re-resolve the lock from pyproject.toml and requirements/build.in, for Linux and macOS, x86-64
# and arm64, Python 3.11 and later; then `make install` and re-record the smoke baseline
# (tests/regression/smoke_cases.py) in the new environment.
lock:
	test -x $(BIN)/uv || { test -x $(BIN)/python || $(PY) -m venv $(VENV); $(BIN)/python -m pip install --quiet uv; }
	$(BIN)/uv pip compile pyproject.toml requirements/build.in --extra test --extra cluster --universal \
		--python-version 3.11 --generate-hashes --upgrade --quiet -o $(LOCK)

# The newest versions pyproject.toml's ranges allow, in a separate virtualenv (.venv-latest), then the
# smoke suite and the smoke regression, compared with the measured tolerances where the results
# differ. Shows, before users meet it, when an upstream release changes results. Not part of CI.
# (The editable install rebuilds native/_core in place from the same sources, for the same Python.)
test-latest:
	test -x $(LATEST)/bin/python || $(PY) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade uv
	$(LATEST)/bin/uv pip install --quiet --python $(LATEST)/bin/python --upgrade "maturin>=1.7,<2"
	$(LATEST)/bin/uv pip install --quiet --python $(LATEST)/bin/python --upgrade --no-build-isolation -e ".[test,cluster]"
	$(LATEST)/bin/python -c "from orchestrator.results.environment import package_versions as v; print('latest:', v())"
	$(LATEST)/bin/python -m pytest -q -p no:cacheprovider $(SMOKE_SUITE)

# Re-run one study at fast scale from scratch, commit-ready: its export under docs/results/data/, its
# page docs/results/<study>_fast.md (claims, tables, plots) and the findings index, all generated.
# make results STUDY=geometry [ARGS='--set bits=[8]'] [RESUME=1 keeps the rows of an interrupted run]
SCALE ?= fast
PAGES := results/pages
results: $(STAMP)
	@test -n "$(STUDY)" || { echo "usage: make results STUDY=<name> [ARGS=...] [RESUME=1]" >&2; exit 2; }
	test -n "$(RESUME)" || rm -rf $(PAGES)/$(STUDY)/$(SCALE)
	$(BIN)/overnight run $(STUDY) --scale $(SCALE) --results $(PAGES) $(ARGS)
	$(BIN)/overnight export $(PAGES)/$(STUDY)/$(SCALE) --out docs/results/data/$(STUDY)_$(SCALE).parquet
	$(BIN)/overnight report docs/results/data/$(STUDY)_$(SCALE).parquet --out docs/results/$(STUDY)_$(SCALE).md > /dev/null
	$(BIN)/overnight findings --out docs/results/README.md > /dev/null

# The main job: the seed-000 Hydra sweep on spirals (126 trials) on an embedded local Ray, offline,
# then its report. Run it again to see resume: finished trials are not run twice.
demo: $(STAMP)
	$(BIN)/overnight run hydra_classification --scale fast

# The Rust core's own tests (native/tests, native/src), then the Python suite. A test that needs the
# native extension fails, never skips, when it is missing (tests/conftest.py require_native).
# The suite runs on $(TEST_WORKERS) pytest-xdist workers, a test file each at a time (module fixtures,
# such as a killed sweep several tests read, are built once): most tests wait on Ray processes
# starting and on trial subprocesses, so a second worker uses the time one leaves idle: on the
# 2-core dev VM the default run took 1128 s on two workers (.ci/run at 64c88d0) against 1703 s on
# one (.ci/run at f4a89c2). TEST_WORKERS=1 runs it in one process.
TEST_WORKERS ?= 2
test: test-native $(STAMP)
	$(BIN)/python -m pytest -q $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test-native: $(STAMP)
	cd native && PYO3_PYTHON="$(abspath $(BIN)/python)" cargo test --quiet

# Static checks, CI's step before the tests: ruff with the bug-finding rules of pyproject.toml's
# [tool.ruff] (no formatting, no import order), mypy over orchestrator/ ([tool.mypy]), and clippy
# on the Rust core with every warning an error. clippy builds pyo3, so it needs the same
# interpreter as test-native.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	cd native && PYO3_PYTHON="$(abspath $(BIN)/python)" cargo clippy --quiet --all-targets -- -D warnings

# The long fault-injection suite (20 driver SIGKILLs, about 8 minutes), left out of `make test`.
test-reliability: $(STAMP)
	$(BIN)/python -m pytest -q tests/reliability -m reliability

bench: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_orchestrator.py

# overnight against a process pool and plain Ray Tune, interleaved (about 45 minutes on 2 cores;
# --quick for a smoke check), and studies of 100 / 1,000 / 10,000 tiny trials (docs/benchmarks.md)
bench-peers: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_peers.py

bench-scale: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_scale.py

clean-results:
	rm -rf results/*/ results/_cache
