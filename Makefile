# Set-up is part of every target: a fresh machine needs only `make demo` or `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SOURCES := pyproject.toml $(wildcard native/Cargo.toml native/src/*.rs native/src/*/*.rs)

.PHONY: install demo test bench clean-results

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

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_orchestrator.py

clean-results:
	rm -rf results/*/ results/_cache
