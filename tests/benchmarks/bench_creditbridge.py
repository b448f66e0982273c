"""Credit-bridge workload timings: training step per method and depth, the end-of-training metrics,
and whole trials at the smoke and fast scales of configs/studies/credit_*.yaml.

    .venv/bin/python tests/benchmarks/bench_creditbridge.py [--steps 20] [--skip-trials]

One CPU thread (torch.set_num_threads(1)), as one trial of a study gets. Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
import yaml

from orchestrator.study.contract import LocalContext
from workloads.creditbridge import CreditBridge
from workloads.creditbridge.metrics import evaluate_credit
from workloads.creditbridge.params import resolve
from workloads.creditbridge.train import Trainer, load_task

STUDIES = Path(__file__).resolve().parents[2] / "configs" / "studies"


def step_ms(cfg: dict, steps: int) -> float:
    s = resolve(cfg)
    tr = Trainer(s, 0, load_task(s, LocalContext(), 0), "cpu")
    noise = torch.Generator().manual_seed(0)
    x, y = tr.x_train[:128], tr.y_train[:128]
    tr.warm_steps = 0  # time the method's own credit, not the DFA warm-up
    for _ in range(3):
        tr.train_step(x, y, noise)
    t0 = time.perf_counter()
    for _ in range(steps):
        tr.train_step(x, y, noise)
    return 1000 * (time.perf_counter() - t0) / steps


def eval_s(cfg: dict) -> float:
    s = resolve(cfg)
    tr = Trainer(s, 0, load_task(s, LocalContext(), 0), "cpu")
    t0 = time.perf_counter()
    hs, grads, credits, y = tr.credit_on(s.n_eval)
    evaluate_credit(tr.net, hs, grads, credits, y, tr.net.credit_layers, directions=s.rho_directions,
                    eps=s.rho_eps, seed=0, rho_reference=True)
    return time.perf_counter() - t0


def study_config(name: str, scale: str, **pick) -> dict:
    raw = yaml.safe_load((STUDIES / f"{name}.yaml").read_text())
    cfg = {**raw["fixed"], **raw["scales"][scale].get("fixed", {})}
    cfg.update(pick)
    return cfg


def trial_s(cfg: dict) -> float:
    t0 = time.perf_counter()
    CreditBridge().run(CreditBridge.Params.model_validate(cfg), LocalContext(seed=int(cfg.get("seed", 0))))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--skip-trials", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OVERNIGHT_OFFLINE", "1")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, 1 thread\n")

    print("## Training step (batch 128), ms\n")
    methods = ["bp", "dfa", "fa", "sb", "cb"]
    print("| task | d | L | " + " | ".join(methods) + " |")
    print("|---|---|---|" + "---|" * len(methods))
    base = dict(task="synthetic", width=128, n_train=512, n_test=256, vnet_hidden=256, epochs=1)
    for depth in (2, 4, 8, 12):
        cells = [f"{step_ms(dict(base, method=m, depth=depth), args.steps):.1f}" for m in methods]
        print(f"| synthetic | 128 | {depth} | " + " | ".join(cells) + " |")
    cif = dict(task="cifar10", data="standin", width=512, standin_train=512, standin_test=256, vnet_hidden=256, epochs=1)
    for depth in (4, 12):
        cells = [f"{step_ms(dict(cif, method=m, depth=depth), max(5, args.steps // 2)):.1f}" for m in methods]
        print(f"| cifar10 (stand-in) | 512 | {depth} | " + " | ".join(cells) + " |")

    print("\n## End-of-training metrics (Gamma, rho with M=32 plus the BP reference, nudging), s\n")
    print("| task | d | L | n_eval | cb |")
    print("|---|---|---|---|---|")
    for depth in (4, 12):
        cfg = dict(base, method="cb", depth=depth, n_test=1024, n_eval=1024)
        print(f"| synthetic | 128 | {depth} | 1024 | {eval_s(cfg):.2f} |")

    if args.skip_trials:
        return
    print("\n## Whole trials (LocalContext, no Ray), s\n")
    print("| study | scale | config | bp | dfa | sb | cb |")
    print("|---|---|---|---|---|---|---|")
    for scale in ("smoke", "fast"):
        for depth in ((2,) if scale == "smoke" else (2, 12)):
            cells = []
            for m in ("bp", "dfa", "sb", "cb"):
                cfg = study_config("credit_ladder", scale, method=m, alpha=1.0, depth=depth, seed=0)
                cells.append(f"{trial_s(cfg):.2f}")
            print(f"| credit_ladder | {scale} | alpha=1, L={depth} | " + " | ".join(cells) + " |")
    for scale in ("smoke", "fast"):
        cells = ["–" if m == "sb" else f"{trial_s(study_config('credit_cifar', scale, method=m, depth=4, data='standin')):.2f}"
                 for m in ("bp", "dfa", "sb", "cb")]
        print(f"| credit_cifar | {scale} | stand-in, L=4 | " + " | ".join(cells) + " |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
