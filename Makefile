# Set-up is part of every target: a fresh machine needs only `make demo` or `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SOURCES := pyproject.toml $(wildcard native/Cargo.toml native/src/*.rs native/src/*/*.rs)

.PHONY: install demo test test-native test-reliability bench bench-peers bench-scale clean-results

$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,cluster]"
	touch $(STAMP)

install: $(STAMP)

# The main job: the seed-000 Hydra sweep on spirals (126 trials) on an embedded local Ray, offline,
# then its report. Run it again to see resume: finished trials are not run twice.
demo: $(STAMP)
	$(BIN)/overnight run hydra_classification --scale fast

# The Rust core's own tests (native/tests, native/src), then the Python suite. A test that needs the
# native extension fails, never skips, when it is missing (tests/conftest.py require_native).
test: test-native $(STAMP)
	$(BIN)/python -m pytest -q

test-native: $(STAMP)
	cd native && PYO3_PYTHON="$(abspath $(BIN)/python)" cargo test --quiet

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
