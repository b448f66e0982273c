"""Every study's smoke-scale metrics against the recorded baseline (smoke_baseline.json).

In the environment the baseline was recorded in (the same numeric packages, CPU, instruction set
and BLAS kernels: orchestrator/results/environment.py numeric_key) every number must be the same (rel
1e-6), so a refactoring of the workloads cannot change a result unnoticed. Elsewhere (another
torch, another CPU class) each metric may move by the tolerance measured for it between
environments (smoke_cases.py --tolerances; the rule is in the baseline file), and the run says so
in its summary. A changed metric name, or a change of more than 5 %, fails everywhere.
Regenerate the baseline only for an intended change of results, in the locked environment:
`python -m tests.regression.smoke_cases --write`."""
from __future__ import annotations

import pytest

from orchestrator.results.environment import describe, differences
from tests.regression.smoke_cases import (CAP_REL, EXACT_REL, compare, load_baseline, measured_environments,
                                          run_case, study_files, tolerances)

BASELINE = load_baseline()
CASES = [(study, i, case) for study, cases in sorted(BASELINE["cases"].items()) for i, case in enumerate(cases)]
ENV_DIFFERENCES = differences(BASELINE["environment"], describe())
EXACT = not ENV_DIFFERENCES


def test_baseline_covers_every_study():
    assert {p.stem for p in study_files()} == set(BASELINE["cases"])


def test_baseline_records_the_environment_it_was_made_in():
    env = BASELINE["environment"]
    assert {"torch", "numpy", "scipy", "pandas", "pyarrow"} <= {k for k, v in env["packages"].items() if v}
    assert env["torch_cpu_capability"] and env["cpu"] and env["blas"]
    assert env["torch_threads"] == 1 and env["torch_interop_threads"] >= 1  # run_case pins one thread


def test_tolerances_are_the_ones_measured_from_the_recorded_environments():
    others = measured_environments()
    assert len(others) >= 2, "tolerances need at least two environments besides the baseline's"
    for name, other in others.items():  # a measurement of other cases (a stale one) measures nothing
        assert {s: [(c["workload"], c["config"], c["seed"], sorted(c["metrics"])) for c in cs]
                for s, cs in other["cases"].items()} == \
               {s: [(c["workload"], c["config"], c["seed"], sorted(c["metrics"])) for c in cs]
                for s, cs in BASELINE["cases"].items()}, f"environments/{name}.json measured other cases: measure it again"
    assert BASELINE["tolerances"] == tolerances(BASELINE, others), \
        "smoke_baseline.json's tolerances are not the measured ones: python -m tests.regression.smoke_cases --tolerances"
    assert all(EXACT_REL <= t <= CAP_REL for ms in BASELINE["tolerances"].values() for t in ms.values())


def test_compare_is_exact_here_and_tolerant_elsewhere_but_never_for_names_or_large_changes():
    case = {"workload": "w", "metrics": {"loss": 1.0, "name": "bpe", "n": 10}}
    tol = {"w": {"loss": 1e-4}}
    assert compare(case, {"loss": 1.0 + 5e-7, "name": "bpe", "n": 10}, True, tol) == []
    assert compare(case, {"loss": 1.00005, "name": "bpe", "n": 10}, False, tol) == []
    assert compare(case, {"loss": 1.00005, "name": "bpe", "n": 10}, True, tol)[0].startswith("loss: 1.0 -> 1.00005")
    assert compare(case, {"loss": 1.02, "name": "bpe", "n": 10}, False, tol)          # 2 %: fails everywhere
    assert compare(case, {"loss": 1.0, "name": "word", "n": 10}, False, tol)          # strings stay exact
    assert compare(case, {"loss": 1.0, "n": 10, "renamed": "bpe"}, False, tol)[0].startswith("metric names changed")


@pytest.mark.parametrize("study,i,case", CASES, ids=[f"{s}-{i}" for s, i, _ in CASES])
def test_smoke_metrics_unchanged(study, i, case, monkeypatch):
    monkeypatch.setenv("OVERNIGHT_DATA", str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data"))
    got = run_case(case["workload"], case["config"], case["seed"])
    diffs = compare(case, got, EXACT, BASELINE["tolerances"])
    where = "exact: the baseline's environment" if EXACT else "with measured tolerances: " + "; ".join(ENV_DIFFERENCES)
    assert not diffs, f"{study} case {i} ({where}):\n  " + "\n  ".join(diffs)
