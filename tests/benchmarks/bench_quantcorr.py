"""Per-trial wall time of a quantcorr study at a given scale, measured in-process (no Ray) on one
thread, and the study wall time it implies on N parallel workers.

    .venv/bin/python tests/benchmarks/bench_quantcorr.py --study hydra_classification --scale fast

By default it runs a stratified sample (every architecture, at each bits value, one trial per
correction setting listed in --sample-settings and the baseline) with the stage cache shared across
the sampled trials as in a real sweep, and with --no-cache each trial trains its own backbone. The
estimate weights each sampled trial by how many trials of the study it stands for.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.quantcorr.test_studies import expand  # noqa: E402
from workloads.base import LocalContext  # noqa: E402
from workloads.quantcorr import QuantCorr  # noqa: E402

STUDIES = Path(__file__).resolve().parents[2] / "configs" / "studies"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="hydra_classification")
    ap.add_argument("--scale", default="fast")
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--all", action="store_true", help="run every trial instead of a sample")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--overhead", type=float, default=0.5, help="orchestrator seconds per trial")
    ap.add_argument("--strata", default="", help="comma list of config keys that define cost strata")
    args = ap.parse_args()
    torch.set_num_threads(1)

    spec = yaml.safe_load((STUDIES / f"{args.study}.yaml").read_text())
    configs = expand(spec, args.scale)
    for c in configs:
        c["stage_cache"] = not args.no_cache
    strata = [s for s in args.strata.split(",") if s] or [
        k for k in ("width", "depth", "hidden", "latent", "d_model", "n_layers", "correct_every")
        if k in configs[0]]  # bits and corrector size barely change the cost
    groups: dict[tuple, list[dict]] = {}
    for c in configs:
        groups.setdefault(tuple(repr(c.get(k)) for k in strata), []).append(c)
    picked = [(g[0], len(g)) for g in groups.values()] if not args.all else [(c, 1) for c in configs]

    ctx = LocalContext(scale=args.scale)
    total, times, rows = 0.0, [], []
    t_all = time.perf_counter()
    for cfg, weight in picked:
        t = time.perf_counter()
        row = QuantCorr().run(cfg, ctx if not args.no_cache else LocalContext(scale=args.scale))
        dt = time.perf_counter() - t
        times.append(dt)
        total += weight * (dt + args.overhead)
        rows.append((cfg, row, dt))
    wall = time.perf_counter() - t_all
    print(f"study={args.study} scale={args.scale} cache={'off' if args.no_cache else 'on'} "
          f"strata={strata} sampled={len(picked)} of {len(configs)} trials, sample wall {wall:.1f} s")
    print(f"per-trial s: mean {statistics.mean(times):.2f} median {statistics.median(times):.2f} "
          f"max {max(times):.2f} min {min(times):.2f}")
    print(f"estimated study wall on {args.workers} workers incl. {args.overhead}s/trial overhead: "
          f"{total / args.workers / 60:.1f} min")
    rec = [r["recovery_pct"] for c, r, _ in rows if r.get("num_correction_layers")]
    if rec:
        print(f"sampled correction runs: mean recovery {statistics.mean(rec):.1f}% (n={len(rec)})")


if __name__ == "__main__":
    main()
