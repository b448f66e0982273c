"""Reliability suite. The 20-kill driver test is long (every driver start brings up a Ray): it is
marked `reliability` and runs only when asked for:

    .venv/bin/python -m pytest tests/reliability -m reliability

Everything else here runs in the default test run."""
from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line("markers", "reliability: long fault-injection runs (select with -m reliability)")


def pytest_collection_modifyitems(config, items):
    # Until addopts deselects it, keep the long suite out of runs that did not mention it.
    if "reliability" in (config.option.markexpr or ""):
        return
    keep = [i for i in items if i.get_closest_marker("reliability") is None]
    dropped = [i for i in items if i.get_closest_marker("reliability") is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
