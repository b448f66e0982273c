"""Same machine, same numbers: one smoke trial of every workload, run twice in two fresh
interpreters, gives bit-identical metrics (timings left out). This is separate from the
cross-environment comparison in test_smoke_regression.py: there a tolerance may apply, here none."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT
from tests.regression.smoke_cases import first_per_workload


def run_once() -> dict:
    done = subprocess.run([sys.executable, "-m", "tests.regression.smoke_cases", "--first-per-workload"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_one_smoke_trial_of_every_workload_twice_gives_bit_identical_metrics():
    first, second = run_once(), run_once()
    workloads = {w for w, _, _ in first_per_workload()}
    assert set(first) == workloads and len(workloads) >= 7, sorted(first)
    for w in sorted(workloads):
        assert first[w], f"{w} returned no metrics"
        # JSON keeps a float's every bit (repr round-trips), so equal text is equal bits
        differ = {k: (first[w][k], second[w].get(k)) for k in first[w] if json.dumps(first[w][k]) != json.dumps(second[w].get(k))}
        assert not differ and set(first[w]) == set(second[w]), f"{w}: {differ}"
