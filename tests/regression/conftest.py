"""Says in the run's summary how the smoke regression compared: exactly, or with tolerances and why."""
from __future__ import annotations


def pytest_terminal_summary(terminalreporter):
    ran = [r for k in ("passed", "failed") for r in terminalreporter.stats.get(k, [])
           if "test_smoke_metrics_unchanged" in getattr(r, "nodeid", "")]
    if not ran:
        return
    from tests.regression.test_smoke_regression import ENV_DIFFERENCES

    if ENV_DIFFERENCES:
        terminalreporter.write_line("smoke regression compared WITH MEASURED TOLERANCES: this environment differs "
                                    "from the baseline's in " + "; ".join(ENV_DIFFERENCES))
    else:
        terminalreporter.write_line("smoke regression compared exactly: this is the baseline's environment")
