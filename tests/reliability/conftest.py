"""Reliability suite. The 20-kill driver test is long (every driver start brings up a Ray): it is
marked `reliability`, which pyproject's addopts leave out of the default run; `make
test-reliability` (run by CI) selects it:

    .venv/bin/python -m pytest tests/reliability -m reliability

Everything else here runs in the default test run."""
