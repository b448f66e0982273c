"""Peer benchmark: the same sweep run three ways, interleaved, on one machine.

    A  a plain process pool of P workers calling the workload (the floor: no tool at all);
    B  plain Ray Tune 2.60 as a user would write it: `Tuner` + `grid_search`, `reuse_actors=True`,
       an embedded Ray (`ray.init(num_cpus=P)`), Tune's defaults otherwise;
    C  overnight: `overnight run STUDY --no-report --num-cpus P`, the real CLI (a row, history and
       checkpoints per trial, bundling on auto).

Every run is a fresh process timed end to end from outside (interpreter start, imports, Ray start
and stop included). Runs go A B C A B C ... for each trial length, so a drift in machine speed hits
the three alike; the figures are the median over rounds of the per-round ratios.

    .venv/bin/python tests/benchmarks/bench_peers.py                    # 0.1 s x 600, 1 s x 200, 10 s x 20; 3 rounds
    .venv/bin/python tests/benchmarks/bench_peers.py --quick            # a smoke check (about 3 minutes)
    .venv/bin/python tests/benchmarks/bench_peers.py --sizes 1:200 --rounds 5 --out peers.json

The workload is `synthetic` (workloads/synthetic): fixed CPU work (64x64 matrix products, one BLAS
thread), its size calibrated here to the asked trial length.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
PY = sys.executable


def one_trial(cfg: dict) -> float:
    from orchestrator.study.contract import LocalContext
    from workloads.synthetic import Synthetic

    return Synthetic().run(Synthetic.Params.model_validate(cfg), LocalContext(seed=cfg["seed"]))["loss"]


def _import_workload() -> None:
    import orchestrator.study.contract  # noqa: F401
    import workloads.synthetic  # noqa: F401


def timed_trial(cfg: dict) -> tuple[float, float]:
    """One trial; its start and end (wall clock), for the first start -> last finish span."""
    t0 = time.time()
    one_trial(cfg)
    return t0, time.time()


def configs(n: int, units: int, steps: int) -> list[dict]:
    return [{"steps": steps, "work_units": units, "lr": 0.1, "seed": i} for i in range(n)]


# ---- the three runners, each in its own process ------------------------------------------------
def run_pool(n: int, units: int, steps: int, parallel: int, spans: str) -> None:
    from concurrent.futures import ProcessPoolExecutor

    # the workers import the workload before their first trial (as a Ray worker does before its
    # first trial starts), so that the spans compare the same thing
    with ProcessPoolExecutor(parallel, initializer=_import_workload) as pool:
        times = list(pool.map(timed_trial, configs(n, units, steps), chunksize=1))
    assert len(times) == n
    Path(spans).write_text(json.dumps(times))


def _tune_trainable(config: dict) -> None:
    from ray import tune

    from orchestrator.study.contract import LocalContext
    from workloads.synthetic import Synthetic

    t0 = time.time()
    metrics = Synthetic().run(Synthetic.Params.model_validate(config), LocalContext(seed=config["seed"]))
    tune.report({**metrics, "t0": t0, "t1": time.time()})


def run_tune(n: int, units: int, steps: int, parallel: int, storage: str, spans: str) -> None:
    import ray
    from ray import tune

    ray.init(num_cpus=parallel)
    tuner = tune.Tuner(
        _tune_trainable,
        param_space={"steps": steps, "work_units": units, "lr": 0.1, "seed": tune.grid_search(list(range(n)))},
        tune_config=tune.TuneConfig(metric="loss", mode="min", reuse_actors=True),
        run_config=tune.RunConfig(name="peer", storage_path=storage),
    )
    results = tuner.fit()
    assert len(results) == n and not results.errors, results.errors
    Path(spans).write_text(json.dumps([(r.metrics["t0"], r.metrics["t1"]) for r in results]))


def overnight_cmd(study: Path, results: Path, parallel: int) -> list[str]:
    return [str(Path(PY).with_name("overnight")), "run", str(study), "--results", str(results), "--no-report",
            "--num-cpus", str(parallel)]


# ---- driver ------------------------------------------------------------------------------------
def calibrate(seconds: float, steps: int) -> tuple[int, float]:
    """Work units per step for a trial of about ``seconds`` in ``steps`` equal steps; and the
    estimated trial time. One step is calibrated (a trial's time is linear in its steps), and
    measured again until it is within 30% of its target: the shared VM's speed drifts."""
    per_step = seconds / steps
    probe = 200
    one_trial({"steps": 1, "work_units": 1, "lr": 0.1, "seed": 0})   # imports
    t = time.perf_counter()
    one_trial({"steps": 1, "work_units": probe, "lr": 0.1, "seed": 0})
    units = max(1, round(per_step * probe / (time.perf_counter() - t)))
    reps = 3 if per_step <= 2 else 1
    for attempt in range(4):
        t = time.perf_counter()
        for i in range(reps):
            one_trial({"steps": 1, "work_units": units, "lr": 0.1, "seed": i})
        measured = (time.perf_counter() - t) / reps
        if 0.7 <= measured / per_step <= 1.3 or attempt == 3:
            break
        units = max(1, round(units * per_step / measured))
    return units, measured * steps


def timed(cmd: list[str], cwd: Path, log: Path) -> tuple[float, float]:
    """(wall seconds, when it started: wall clock)."""
    start = time.time()
    t = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    return wall, start


def span_of(pairs: list) -> tuple[float, float]:
    """(first start, last finish) of the trials."""
    return min(p[0] for p in pairs), max(p[1] for p in pairs)


def bench_length(seconds: float, n: int, rounds: int, parallel: int, tmp: Path) -> dict:
    steps = 10 if seconds >= 10 else 1
    units, single = calibrate(seconds, steps)
    study = {"name": "peers", "workload": "synthetic", "metric": "loss", "mode": "min",
             "fixed": {"steps": steps, "work_units": units, "lr": 0.1}, "grid": {"seed": list(range(n))},
             "resources": {"cpu": 1}}
    import yaml

    study_path = tmp / f"peers-{seconds:g}.yaml"
    study_path.write_text(yaml.safe_dump(study))
    me = str(Path(__file__).resolve())
    args = ["--n", str(n), "--units", str(units), "--steps", str(steps), "--parallel", str(parallel)]
    out = {"seconds": seconds, "trials": n, "steps": steps, "work_units": units, "single_trial_s": round(single, 3),
           "ideal_s": round(single * n / parallel, 1), "rounds": []}
    print(f"\n== trials of ~{seconds:g} s (measured {single:.3f} s): {n} trials, {parallel} at once, "
          f"ideal {single * n / parallel:.1f} s", flush=True)
    for r in range(rounds):
        times, spans, fixed = {}, {}, {}
        loads = []
        for name in ("pool", "tune", "overnight"):
            run_dir = tmp / f"{seconds:g}-{r}-{name}"
            run_dir.mkdir()
            span_file = run_dir / "spans.json"
            if name == "overnight":
                cmd = overnight_cmd(study_path, run_dir / "results", parallel)
            else:
                cmd = [PY, me, f"_{name}", *args, "--spans", str(span_file)]
                cmd += ["--storage", str(run_dir / "ray")] if name == "tune" else []
            loads.append(os.getloadavg()[0])
            times[name], started = timed(cmd, ROOT, run_dir / "log.txt")
            if name == "overnight":
                first, last = _check_rows(run_dir / "results" / "peers" / "fast", n)
            else:
                pairs = json.loads(span_file.read_text())
                first, last = span_of(pairs)
                if name == "pool":   # what a trial really took this round (the VM's speed drifts)
                    trial_s = sum(b - a for a, b in pairs) / len(pairs)
            spans[name] = last - first
            fixed[name] = times[name] - spans[name]   # start-up before the first trial, shut-down after the last
        loads.append(os.getloadavg()[0])
        row = {**{k: round(v, 2) for k, v in times.items()},
               **{f"{k} span": round(v, 2) for k, v in spans.items()},
               **{f"{k} fixed": round(v, 2) for k, v in fixed.items()},
               "overnight/pool": round(times["overnight"] / times["pool"], 3),
               "overnight/tune": round(times["overnight"] / times["tune"], 3),
               "tune/pool": round(times["tune"] / times["pool"], 3),
               "span overnight/pool": round(spans["overnight"] / spans["pool"], 3),
               "span overnight/tune": round(spans["overnight"] / spans["tune"], 3),
               "pool_trial_s": round(trial_s, 3), "load_1min": [round(x, 2) for x in loads]}
        out["rounds"].append(row)
        print(f"  round {r + 1}: pool {times['pool']:.1f} s | tune {times['tune']:.1f} s | overnight "
              f"{times['overnight']:.1f} s | overnight/pool {row['overnight/pool']:.3f} | overnight/tune "
              f"{row['overnight/tune']:.3f} | tune/pool {row['tune/pool']:.3f} | first start -> last finish: "
              f"overnight/pool {row['span overnight/pool']:.3f}, overnight/tune {row['span overnight/tune']:.3f} | "
              f"fixed s: pool {fixed['pool']:.1f}, tune {fixed['tune']:.1f}, overnight {fixed['overnight']:.1f} | "
              f"pool's mean trial {trial_s:.2f} s | load {min(loads):.1f}-{max(loads):.1f}", flush=True)
    for key in ("overnight/pool", "overnight/tune", "tune/pool", "pool", "tune", "overnight",
                "span overnight/pool", "span overnight/tune", "pool fixed", "tune fixed", "overnight fixed"):
        out[f"median {key}"] = round(statistics.median(r[key] for r in out["rounds"]), 3)
    print(f"  median: overnight/pool {out['median overnight/pool']:.3f} | overnight/tune "
          f"{out['median overnight/tune']:.3f} | tune/pool {out['median tune/pool']:.3f}", flush=True)
    return out


def _check_rows(location: Path, n: int) -> tuple[float, float]:
    """Every trial completed; (first start, last finish) from the rows."""
    import pandas as pd

    rows = pd.read_parquet(location / "trials")
    assert len(rows) == n and (rows["status"] == "completed").all(), rows["status"].value_counts()
    return rows["started_at"].min().timestamp(), rows["finished_at"].max().timestamp()


def table(results: list[dict], parallel: int) -> str:
    lines = ["| trial | trials | ideal (N·t/P) | pool | Ray Tune | overnight | overnight / pool | overnight / Tune | "
             "Tune / pool | first start → last finish: overnight / pool | … overnight / Tune | "
             "fixed s: pool / Tune / overnight |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['single_trial_s']:.2f} s | {r['trials']} | {r['ideal_s']:.1f} s | {r['median pool']:.1f} s | "
                     f"{r['median tune']:.1f} s | {r['median overnight']:.1f} s | **{r['median overnight/pool']:.3f}** | "
                     f"**{r['median overnight/tune']:.3f}** | {r['median tune/pool']:.3f} | "
                     f"{r['median span overnight/pool']:.3f} | {r['median span overnight/tune']:.3f} | "
                     f"{r['median pool fixed']:.1f} / {r['median tune fixed']:.1f} / {r['median overnight fixed']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="0.1:600,1:200,10:20", help="LENGTH_S:TRIALS,... (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a smoke check: 0.1 s x 60, 1 s x 16, 10 s x 4, one round")
    ap.add_argument("--out", default=None, help="also write the figures as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the run folders (logs, results)")
    a = ap.parse_args()
    if a.quick:
        a.sizes, a.rounds = "0.1:60,1:16,10:4", 1
    sizes = [(float(s.split(":")[0]), int(s.split(":")[1])) for s in a.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    started = time.strftime("%Y-%m-%d %H:%M")
    print(f"{started}: {os.cpu_count()} CPUs, load {os.getloadavg()}, runs in {tmp}", flush=True)
    results = [bench_length(s, n, a.rounds, a.parallel, tmp) for s, n in sizes]
    print("\n" + table(results, a.parallel))
    print(f"\nstarted {started}, finished {time.strftime('%H:%M')}, load at the end {os.getloadavg()}")
    if a.out:
        Path(a.out).write_text(json.dumps({"started": started, "parallel": a.parallel, "cpu_count": os.cpu_count(),
                                           "results": results}, indent=1))
    if not a.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def child() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode")
    ap.add_argument("--n", type=int)
    ap.add_argument("--units", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--parallel", type=int)
    ap.add_argument("--storage", default=None)
    ap.add_argument("--spans", default=None)
    a = ap.parse_args()
    if a.mode == "_pool":
        run_pool(a.n, a.units, a.steps, a.parallel, a.spans)
    else:
        run_tune(a.n, a.units, a.steps, a.parallel, a.storage, a.spans)


if __name__ == "__main__":
    child() if len(sys.argv) > 1 and sys.argv[1] in ("_pool", "_tune") else main()
