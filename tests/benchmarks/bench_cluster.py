"""Throughput of GPU packing: the same study with `gpu: 1` (one trial per GPU) against `gpu: 1/k`
(k trials share a GPU), each from an empty results directory, through the real CLI.

On a GPU machine (the figure that matters):
    .venv/bin/python tests/benchmarks/bench_cluster.py --study hydra_classification --scale fast --fractions 1 0.25
Plumbing check on a CPU machine with fake GPUs (numbers mean nothing there):
    .venv/bin/python tests/benchmarks/bench_cluster.py --study synthetic --scale smoke --fake-gpus 2
Prints one line per setting and a Markdown table for docs/bench/cluster.md.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
OVERNIGHT = str(Path(sys.executable).with_name("overnight"))


def gpu_names() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return "; ".join(line.strip() for line in out.stdout.splitlines() if line.strip()) or "none"
    except (OSError, subprocess.TimeoutExpired):
        return "none (no nvidia-smi)"


def run_once(study: str, scale: str, fraction: float, fake_gpus: int | None, extra: list[str]) -> dict:
    results = Path(tempfile.mkdtemp(prefix="bench-pack-"))
    cmd = [OVERNIGHT, "run", study, "--scale", scale, "--results", str(results), "--no-report",
           "--set", f"resources.gpu={fraction:g}", *extra]
    if fake_gpus:
        cmd += ["--num-gpus", str(fake_gpus)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    try:
        trials = next(results.glob("*/*/trials"))
        rows = pd.read_parquet(trials)
    except (StopIteration, OSError):
        rows = pd.DataFrame()
    finally:
        shutil.rmtree(results, ignore_errors=True)
    if proc.returncode not in (0, 1):
        sys.exit(f"gpu={fraction:g}: overnight exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    done = int((rows["status"] == "completed").sum()) if not rows.empty else 0
    return {"gpu": fraction, "per_gpu": round(1 / fraction, 2) if fraction else 0, "trials": len(rows),
            "completed": done, "wall_s": round(wall, 1),
            "trials_per_min": round(60 * done / wall, 2) if wall else 0.0,
            "mean_trial_s": round(float(rows["wall_s"].mean()), 2) if not rows.empty else float("nan"),
            "devices": ",".join(sorted(set(rows["device"]))) if not rows.empty else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="hydra_classification")
    ap.add_argument("--scale", default="fast")
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.25])
    ap.add_argument("--fake-gpus", type=int, default=None, help="embedded Ray with this many fake GPUs (CPU check)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to overnight run (e.g. to shrink the grid)")
    a = ap.parse_args()
    extra = [x for s in a.sets for x in ("--set", s)]
    print(f"study {a.study} --scale {a.scale}; GPUs: {gpu_names()}", flush=True)
    out = []
    for f in a.fractions:
        r = run_once(a.study, a.scale, f, a.fake_gpus, extra)
        out.append(r)
        print(f"gpu={f:g}: {r['completed']}/{r['trials']} trials in {r['wall_s']} s -> {r['trials_per_min']} trials/min "
              f"(mean trial {r['mean_trial_s']} s, device {r['devices']})", flush=True)
    table = pd.DataFrame(out)
    base = table.iloc[0]["trials_per_min"]
    table["speedup"] = (table["trials_per_min"] / base).round(2) if base else float("nan")
    print()
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
