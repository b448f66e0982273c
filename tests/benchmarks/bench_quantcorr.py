"""Per-trial cost of a quantcorr study at a given scale, measured in-process (no Ray, one torch
thread), and the study wall time it implies on N parallel workers, with and without the stage cache.

Costs are process CPU seconds (``--clock cpu``, the default): on a shared machine they stay close to
what the trial takes on an idle core, where wall time grows with everyone else's load. ``--clock wall``
uses wall time instead.

    .venv/bin/python tests/benchmarks/bench_quantcorr.py --study hydra_classification --scale fast

It runs one trial per cost stratum (architecture x correct_every x corrector size; bits, lambda and
the seed do not change the cost), sharing one in-memory stage cache, so each architecture's float
backbone is trained once. From each row: backbone time = ``float_phase_s`` of the trial that built
it; the rest of the trial = its wall time minus ``float_phase_s``. Estimates:
  cache on : (sum over trials of rest + overhead + sum over distinct backbones of backbone) / workers
  cache off: (sum over trials of rest + backbone + overhead) / workers
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.quantcorr.test_studies import expand
from orchestrator.study.contract import LocalContext
from orchestrator.run import registry

ARCH = ("width", "depth", "hidden", "latent", "d_model", "n_heads", "n_layers", "d_ff", "input_dim")
NOT_BACKBONE = {"bits", "correct_every", "correction_hidden", "lam", "legacy_prenorm_residual_bug",
                "legacy_h0_unquantized", "guard", "correction_init", "reliable_gap_rel", "stage_cache",
                "correction_steps", "correction_epochs", "correction_lr", "correction_sequences",
                "correction_batch_size", "correction_images", "calib_sequences"}


def key_of(cfg: dict, keys) -> tuple:
    return tuple(repr(cfg.get(k)) for k in keys)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="hydra_classification")
    ap.add_argument("--scale", default="fast")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--overhead", type=float, default=0.5, help="orchestrator seconds per trial")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)

    spec = yaml.safe_load((ROOT / "configs" / "studies" / f"{args.study}.yaml").read_text())
    configs = expand(spec, args.scale)
    arch = [k for k in ARCH if k in configs[0]]
    strata = arch + [k for k in ("correct_every", "correction_hidden") if k in configs[0]]
    bb_keys = sorted(k for k in configs[0] if k not in NOT_BACKBONE)
    samples: dict[tuple, dict] = {}
    for c in configs:
        samples.setdefault(key_of(c, strata), c)

    workload = registry.load(spec["workload"])()  # quantcorr.<task>
    ctx = LocalContext(scale=args.scale)
    rest: dict[tuple, float] = {}
    backbone_s: dict[tuple, float] = {}
    recov = []
    t_all = time.perf_counter()
    for s, cfg in samples.items():
        row = workload.run(workload.Params.model_validate({**cfg, "stage_cache": True}), ctx)
        dt, fl = ((row["total_cpu_s"], row["float_phase_cpu_s"]) if args.clock == "cpu"
                  else (row["total_s"], row["float_phase_s"]))
        a = key_of(cfg, arch)
        backbone_s[a] = max(backbone_s.get(a, 0.0), fl)
        rest[s] = dt - fl
        if row["num_correction_layers"]:
            recov.append(row["recovery_pct"])
        print(f"  {dict(zip(strata, s))}: {dt:.2f} s (float phase {fl:.2f} s) "
              f"recovery {row['recovery_pct']:.1f}%", flush=True)
    wall = time.perf_counter() - t_all

    n_backbones = len({key_of(c, bb_keys) for c in configs})
    per_trial_on = [rest[key_of(c, strata)] + 0.0 for c in configs]
    per_trial_off = [rest[key_of(c, strata)] + backbone_s[key_of(c, arch)] for c in configs]
    bb_total = sum(backbone_s[key_of(c, arch)] for c in {key_of(c, bb_keys): c for c in configs}.values())
    on = (sum(per_trial_on) + args.overhead * len(configs) + bb_total) / args.workers
    off = (sum(per_trial_off) + args.overhead * len(configs)) / args.workers
    print(f"study={args.study} scale={args.scale} clock={args.clock}: {len(configs)} trials, "
          f"{n_backbones} distinct backbones, {len(samples)} sampled in {wall:.1f} s wall, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("backbone training s by arch: " + ", ".join(f"{dict(zip(arch, a))}={v:.2f}" for a, v in backbone_s.items()))
    print(f"per-trial s without backbone: mean {statistics.mean(per_trial_on):.2f} max {max(per_trial_on):.2f}; "
          f"with its own backbone: mean {statistics.mean(per_trial_off):.2f} max {max(per_trial_off):.2f}")
    print(f"estimated study wall on {args.workers} workers (+{args.overhead} s/trial): "
          f"stage cache on {on / 60:.1f} min, off {off / 60:.1f} min")
    if recov:
        print(f"sampled correction runs: mean recovery {statistics.mean(recov):.1f}% (n={len(recov)})")


if __name__ == "__main__":
    main()
