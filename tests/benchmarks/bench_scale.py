"""Scale: studies of 100, 1,000 and 10,000 tiny trials (synthetic, one step, no work) through the
real CLI, then `overnight status` and `overnight report` on each finished dataset.

    .venv/bin/python tests/benchmarks/bench_scale.py                       # 100, 1,000, 10,000
    .venv/bin/python tests/benchmarks/bench_scale.py --trials 100,1000 --bundle 1   # one trial per Tune trial
    .venv/bin/python tests/benchmarks/bench_scale.py --tune 100,1000       # also plain Ray Tune's driver

Prints, per size: the wall time of `overnight run` and per trial, the driver's peak RSS (VmHWM
of the driver process, sampled from /proc while it runs; Ray's own processes not included), the
time from the start to the first trial row and from the last row to the exit, and the wall times
of `overnight status` and `overnight report` (fresh processes, imports included). With --tune, the
peak RSS of a plain Ray Tune driver (`Tuner` + `grid_search`, reuse_actors) running the same
trials, for Ray's open issue on driver memory growing with the trial count.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
OVERNIGHT = str(Path(sys.executable).with_name("overnight"))
LRS = [0.1, 0.2, 0.3, 0.4, 0.5]


def study(n: int) -> dict:
    return {"name": f"scale{n}", "workload": "synthetic", "metric": "loss", "mode": "min",
            "fixed": {"steps": 1, "work_units": 0},
            "grid": {"lr": LRS, "seed": list(range(n // len(LRS)))},
            "report": [{"title": "Loss by lr", "by": ["lr"], "values": ["loss"], "stats": ["mean", "std", "n"]},
                       {"plot": "line", "title": "Loss by lr", "x": "lr", "y": "loss"}]}


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_sampled(cmd: list[str], log: Path, env: dict | None = None) -> tuple[float, float, int]:
    """(wall seconds, the process's peak RSS in MiB, exit code)."""
    peak = [0.0]
    t = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env or os.environ.copy())

        def sample() -> None:
            while proc.poll() is None:
                rss = peak_rss_mib(proc.pid)
                if rss:
                    peak[0] = max(peak[0], rss)
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        sampler.join()
    return time.perf_counter() - t, peak[0], code


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t


def bench(n: int, tmp: Path, bundle: str | None, parallel: int) -> dict:
    import pandas as pd

    path = tmp / f"scale{n}.yaml"
    path.write_text(yaml.safe_dump(study(n)))
    res = tmp / f"res{n}"
    cmd = [OVERNIGHT, "run", str(path), "--results", str(res), "--no-report", "--num-cpus", str(parallel)]
    if bundle:
        cmd += ["--bundle", bundle]
    t0 = time.time()
    wall, peak, code = run_sampled(cmd, tmp / f"run{n}.log")
    end = time.time()
    if code != 0:
        sys.exit((tmp / f"run{n}.log").read_text()[-3000:])
    location = res / f"scale{n}" / "fast"
    rows = pd.read_parquet(location / "trials", columns=["status", "started_at", "finished_at"])
    assert len(rows) == n and (rows["status"] == "completed").all()
    first = rows["started_at"].min().timestamp() - t0
    tail = end - rows["finished_at"].max().timestamp()
    record = json.loads(sorted((location / "runs").glob("*.json"))[-1].read_text())
    status_s = timed([OVERNIGHT, "status", str(location)])
    report_s = timed([OVERNIGHT, "report", str(location)])
    out = {"trials": n, "run_s": round(wall, 1), "per_trial_ms": round(wall / n * 1000, 1),
           "steady_per_trial_ms": round((wall - first - tail) / n * 1000, 2),
           "driver_peak_rss_mib": round(peak), "to_first_row_s": round(first, 1), "after_last_row_s": round(tail, 1),
           "tune_trials": record.get("bundles"), "bundle_size": record.get("bundle_size"),
           "status_s": round(status_s, 2), "report_s": round(report_s, 2), "load_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(out), flush=True)
    return out


TUNE_DRIVER = """
import os, sys, tempfile
import ray
from ray import tune

def trainable(config):
    from orchestrator.study.contract import LocalContext
    from workloads.synthetic import Synthetic
    tune.report(Synthetic().run(Synthetic.Params.model_validate(config), LocalContext(seed=config["seed"])))

n, parallel = int(sys.argv[1]), int(sys.argv[2])
ray.init(num_cpus=parallel)
tuner = tune.Tuner(trainable, param_space={"steps": 1, "work_units": 0, "lr": 0.1, "seed": tune.grid_search(list(range(n)))},
                   tune_config=tune.TuneConfig(reuse_actors=True),
                   run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), name="scale", verbose=0))
assert not tuner.fit().errors
"""


def bench_tune(n: int, tmp: Path, parallel: int) -> dict:
    script = tmp / "tune_driver.py"
    script.write_text(TUNE_DRIVER)
    wall, peak, code = run_sampled([sys.executable, str(script), str(n), str(parallel)], tmp / f"tune{n}.log")
    if code != 0:
        sys.exit((tmp / f"tune{n}.log").read_text()[-3000:])
    out = {"plain_tune_trials": n, "run_s": round(wall, 1), "per_trial_ms": round(wall / n * 1000, 1),
           "driver_peak_rss_mib": round(peak), "load_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", default="100,1000,10000")
    ap.add_argument("--bundle", default=None, help="passed to overnight run --bundle (default: the study's, auto)")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--tune", default="", help="sizes to run with plain Ray Tune too, e.g. 100,1000")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"{time.strftime('%Y-%m-%d %H:%M')}: {os.cpu_count()} CPUs, load {os.getloadavg()}, in {tmp}", flush=True)
    results = [bench(int(n), tmp, a.bundle, a.parallel) for n in a.trials.split(",")]
    results += [bench_tune(int(n), tmp, a.parallel) for n in a.tune.split(",") if n]
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
