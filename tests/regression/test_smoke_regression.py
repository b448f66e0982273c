"""Every study's smoke-scale metrics equal the recorded baseline (smoke_baseline.json): a
refactoring of the workloads must not change a number. Regenerate the baseline only for an
intended change of results: `python -m tests.regression.smoke_cases --write`."""
from __future__ import annotations

import pytest

from tests.regression.smoke_cases import load_baseline, run_case, same, study_files

BASELINE = load_baseline()
CASES = [(study, i, case) for study, cases in sorted(BASELINE.items()) for i, case in enumerate(cases)]


def test_baseline_covers_every_study():
    assert {p.stem for p in study_files()} == set(BASELINE)


@pytest.mark.parametrize("study,i,case", CASES, ids=[f"{s}-{i}" for s, i, _ in CASES])
def test_smoke_metrics_unchanged(study, i, case, monkeypatch):
    monkeypatch.setenv("OVERNIGHT_DATA", str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data"))
    got = run_case(case["workload"], case["config"], case["seed"])
    want = case["metrics"]
    assert set(got) == set(want), f"metric names changed: +{sorted(set(got) - set(want))} -{sorted(set(want) - set(got))}"
    diffs = {k: (want[k], got[k]) for k in want if not same(want[k], got[k])}
    assert not diffs, f"{study} case {i}: {diffs}"
