"""Orchestrator overhead: a sweep of N trials of ~1 s CPU work through `overnight run` (Ray Tune on
an embedded local Ray, Parquet rows, checkpoints) against a plain loop over the same trials with the
same parallelism (a process pool of P workers calling the same workload), measured side by side.

    .venv/bin/python tests/benchmarks/bench_orchestrator.py [--trials 200] [--units 400] [--parallel 2]

Prints the wall times, the ideal (sum of single-trial times / P) and the ratios.
"""
from __future__ import annotations

import os

# One BLAS thread per process on both sides, set before numpy loads (trials get the same from
# the orchestrator); otherwise each pool process would start a thread per core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def one_trial(cfg: dict) -> float:
    from orchestrator.study.contract import LocalContext
    from workloads.synthetic import Synthetic

    return Synthetic().run(Synthetic.Params.model_validate(cfg), LocalContext(seed=cfg["seed"]))["loss"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--units", type=int, default=400, help="work units per trial (about 1 ms each)")
    ap.add_argument("--parallel", type=int, default=2)
    a = ap.parse_args()

    configs = [{"steps": 1, "work_units": a.units, "lr": 0.1, "seed": i} for i in range(a.trials)]

    # single-trial time, to state the ideal
    t = time.perf_counter()
    for cfg in configs[:3]:
        one_trial(cfg)
    single = (time.perf_counter() - t) / 3

    # plain loop: a pool of P processes over the same trials (process start included)
    t = time.perf_counter()
    with ProcessPoolExecutor(a.parallel) as pool:
        list(pool.map(one_trial, configs, chunksize=1))
    plain = time.perf_counter() - t

    # overnight: the real CLI in a fresh process, embedded Ray started and stopped inside
    with tempfile.TemporaryDirectory() as tmp:
        study = {"name": "overhead", "workload": "synthetic", "metric": "loss", "mode": "min",
                 "fixed": {"steps": 1, "work_units": a.units, "lr": 0.1},
                 "grid": {"seed": list(range(a.trials))}, "resources": {"cpu": 1}}
        path = Path(tmp) / "overhead.yaml"
        path.write_text(yaml.safe_dump(study))
        cmd = [str(Path(sys.executable).with_name("overnight")), "run", str(path), "--results", f"{tmp}/res",
               "--no-report", "--num-cpus", str(a.parallel)]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        sweep = time.perf_counter() - t
        if proc.returncode != 0:
            sys.exit(proc.stderr[-2000:])
        import pandas as pd

        rows = pd.concat(pd.read_parquet(p) for p in Path(f"{tmp}/res/overhead/fast/trials").glob("*.parquet"))
        span = (rows["finished_at"].max() - rows["started_at"].min()).total_seconds()

    ideal = single * a.trials / a.parallel
    out = {
        "trials": a.trials, "parallel": a.parallel, "single_trial_s": round(single, 3), "ideal_s": round(ideal, 1),
        "plain_loop_s": round(plain, 1), "overnight_s": round(sweep, 1),
        "overnight_first_start_to_last_finish_s": round(span, 1),
        "overnight_over_plain": round(sweep / plain, 3), "overnight_over_ideal": round(sweep / ideal, 3),
        "plain_over_ideal": round(plain / ideal, 3), "steady_state_over_plain": round(span / plain, 3),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
