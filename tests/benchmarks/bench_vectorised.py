"""Vectorised trials on the CPU: the transformer_grid's trials of one group (the three seeds
of one configuration) run member by member (A) and as one batched group (B), side by side and
interleaved (A B A B ..., ``--rounds``), in-process on ``--threads`` torch threads, and the fast
grid's wall time projected from the median times.

    .venv/bin/python tests/benchmarks/bench_vectorised.py                      # fast scale, 3 rounds, 2 threads
    .venv/bin/python tests/benchmarks/bench_vectorised.py --threads 1 --rounds 3

What is timed, per architecture (the grid's three zipped archs):
  trials     the group-shaped slice: the 3 seeds of (bits, correct_every, correction_hidden) =
             ``--stratum`` (default 4, 2, 32: the middle of the grid's cost range), with their float
             backbones already in a shared in-memory stage cache (as 26 of every 27 trials of an arch
             find them in the grid). A: ``Transformer.run`` per member; B: ``Transformer.run_group``.
  backbones  the 3 float backbones of the arch (one per seed), trained for ``--backbone-epochs``
             epochs (cost is linear in epochs; scaled to the grid's): A one after another, B batched.

Each is timed in wall seconds and in process CPU seconds (on a shared machine the CPU seconds are
the steadier figure; with more than one thread they include OpenMP's spinning).

Projection of the fast grid (243 trials = 81 groups of 3; 9 backbones), on ``--workers`` parallel
workers with ``--overhead`` s of orchestrator time per Tune trial (243 Tune trials unbatched, 81
batched): (sum over archs of 27 x trials time + backbones time) / workers + overhead. The cost of a
trial varies little between strata of one arch (bench/quantcorr.md), so one stratum per arch
stands for the arch's 27 configurations; ``--stratum all`` times all nine (slow).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OVERNIGHT_OFFLINE", "1")

import torch

from orchestrator.study.contract import LocalContext
from orchestrator.study.params import validate
from tests.quantcorr.test_studies import expand, load
from workloads.quantcorr import Transformer
from workloads.quantcorr.params import TRANSFORMER_PROTOCOL_DEFAULTS, TransformerParams, with_protocol_defaults
from workloads.quantcorr.transformer import backbone_recipe
from workloads.quantcorr.transformer_group import _Backbone, train_backbones
from workloads.substrate.char_transformer import _train_backbone, load_char_data
from workloads.substrate.stages import Checkpointer

ARCHS = ((64, 2), (128, 4), (256, 6))


def contexts(n: int, stages: dict, scale: str) -> list[LocalContext]:
    return [LocalContext(scale=scale, _stages=stages) for _ in range(n)]


def time_trials(w: Transformer, group: list[dict], stages: dict, scale: str, batched: bool) -> tuple[float, float, list]:
    """(wall s, process CPU s, rows)."""
    ctxs = contexts(len(group), stages, scale)
    t, c = time.perf_counter(), time.process_time()
    params = [w.Params.model_validate(cfg) for cfg in group]
    rows = w.run_group(params, ctxs) if batched else [w.run(p, x) for p, x in zip(params, ctxs)]
    return time.perf_counter() - t, time.process_time() - c, rows


def time_backbones(group: list[dict], scale: str, epochs: int, batched: bool) -> tuple[float, float]:
    ps = [with_protocol_defaults(TRANSFORMER_PROTOCOL_DEFAULTS[c["protocol"]], {**c, "float_epochs": epochs})
          for c in group]
    ctxs = contexts(len(group), {}, scale)
    data = load_char_data(ps[0], ctxs[0], test_limit=ps[0]["eval_sequences"])
    recipes = [backbone_recipe(p, p["seed"]) for p in ps]
    ckpts = [Checkpointer(x, {"bench": i}) for i, x in enumerate(ctxs)]
    t, c = time.perf_counter(), time.process_time()
    if batched:
        bbs = [_Backbone(r.stage_key(data, "cpu"), r, [i]) for i, r in enumerate(recipes)]
        train_backbones(bbs, data, ctxs, ckpts, "cpu", cache=True)
        assert all(b.error is None for b in bbs)
    else:
        for r, ck, x in zip(recipes, ckpts, ctxs):
            _train_backbone(r, data, ck, x)
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", default="fast")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--overhead", type=float, default=0.5, help="orchestrator seconds per Tune trial")
    ap.add_argument("--stratum", default="4,2,32", help="bits,correct_every,correction_hidden, or 'all'")
    ap.add_argument("--backbone-epochs", type=int, default=1)
    ap.add_argument("--archs", default="64,128,256")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w = Transformer()
    configs = [validate(TransformerParams, c) for c in expand(load("transformer_grid"), args.scale)]
    grid_epochs = configs[0]["float_epochs"]
    archs = [a for a in ARCHS if str(a[0]) in args.archs.split(",")]
    strata = None if args.stratum == "all" else tuple(int(v) for v in args.stratum.split(","))
    load0 = os.getloadavg()
    print(f"transformer_grid {args.scale}: {len(configs)} trials; torch {torch.__version__}, {args.threads} threads, "
          f"{os.cpu_count()} CPUs, load average {load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f}", flush=True)

    per_arch = {}
    for d, L in archs:
        mine = [c for c in configs if (c["d_model"], c["n_layers"]) == (d, L)]
        keys = sorted({(c["bits"], c["correct_every"], c["correction_hidden"]) for c in mine})
        chosen = keys if strata is None else [strata]
        groups = [[c for c in mine if (c["bits"], c["correct_every"], c["correction_hidden"]) == k] for k in chosen]
        stages: dict = {}
        t = time.perf_counter()
        for c in groups[0]:  # the arch's backbones, into the shared stage cache (not timed)
            w.run(w.Params.model_validate(c), LocalContext(scale=args.scale, _stages=stages))
        print(f"d_model {d}: backbones ready in {time.perf_counter() - t:.0f} s", flush=True)
        wall = {k: [] for k in ("ta", "tb", "ba", "bb")}
        cpu = {k: [] for k in ("ta", "tb", "ba", "bb")}
        diffs = []
        for r in range(args.rounds):
            sums = {k: [0.0, 0.0] for k in ("ta", "tb")}
            for g in groups:  # A B per group, interleaved
                *ta, rows_a = time_trials(w, g, stages, args.scale, batched=False)
                *tb, rows_b = time_trials(w, g, stages, args.scale, batched=True)
                for k, v in (("ta", ta), ("tb", tb)):
                    sums[k] = [sums[k][0] + v[0], sums[k][1] + v[1]]
                diffs += [abs(x["c"] - y["c"]) / abs(x["c"]) for x, y in zip(rows_a, rows_b)]
            for k in ("ta", "tb"):
                wall[k].append(sums[k][0] / len(groups))
                cpu[k].append(sums[k][1] / len(groups))
            for k, batched in (("ba", False), ("bb", True)):
                wv, cv = time_backbones(groups[0], args.scale, args.backbone_epochs, batched=batched)
                wall[k].append(wv)
                cpu[k].append(cv)
            print(f"  round {r + 1}: trials A {wall['ta'][-1]:.2f} s  B {wall['tb'][-1]:.2f} s wall "
                  f"(x{wall['ta'][-1] / wall['tb'][-1]:.2f}), CPU x{cpu['ta'][-1] / cpu['tb'][-1]:.2f}; "
                  f"backbones ({args.backbone_epochs} ep) A {wall['ba'][-1]:.2f} s  B {wall['bb'][-1]:.2f} s wall "
                  f"(x{wall['ba'][-1] / wall['bb'][-1]:.2f}), CPU x{cpu['ba'][-1] / cpu['bb'][-1]:.2f}; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
        med = statistics.median
        scale_bb = grid_epochs / args.backbone_epochs
        per_arch[d] = dict(trials_a=med(wall["ta"]), trials_b=med(wall["tb"]),
                           ratio=med(a / b for a, b in zip(wall["ta"], wall["tb"])),
                           cpu_ratio=med(a / b for a, b in zip(cpu["ta"], cpu["tb"])),
                           cpu_a=med(cpu["ta"]), cpu_b=med(cpu["tb"]),
                           bb_a=med(wall["ba"]) * scale_bb, bb_b=med(wall["bb"]) * scale_bb,
                           bb_cpu_a=med(cpu["ba"]) * scale_bb, bb_cpu_b=med(cpu["bb"]) * scale_bb,
                           bb_ratio=med(a / b for a, b in zip(wall["ba"], wall["bb"])),
                           bb_cpu_ratio=med(a / b for a, b in zip(cpu["ba"], cpu["bb"])), max_rel_c=max(diffs))

    print(f"\n| d_model | group of 3: unbatched / batched, wall | median ratio, wall | CPU | "
          f"3 backbones ({grid_epochs} ep): unbatched / batched, wall | median ratio, wall | CPU | max rel. diff of c |")
    print("|---|---|---|---|---|---|---|---|")
    for d, v in per_arch.items():
        print(f"| {d} | {v['trials_a']:.2f} / {v['trials_b']:.2f} s | x{v['ratio']:.2f} | x{v['cpu_ratio']:.2f} | "
              f"{v['bb_a']:.1f} / {v['bb_b']:.1f} s | x{v['bb_ratio']:.2f} | x{v['bb_cpu_ratio']:.2f} | {v['max_rel_c']:.1e} |")
    if len(per_arch) == len(ARCHS):
        n_groups = len(configs) // 3 // len(ARCHS)  # 27 groups per arch
        for clock, (ka, kb, ba, bb) in (("wall", ("trials_a", "trials_b", "bb_a", "bb_b")),
                                        ("CPU", ("cpu_a", "cpu_b", "bb_cpu_a", "bb_cpu_b"))):
            work_a = sum(n_groups * v[ka] + v[ba] for v in per_arch.values())
            work_b = sum(n_groups * v[kb] + v[bb] for v in per_arch.values())
            wall_a = (work_a + args.overhead * len(configs)) / args.workers
            wall_b = (work_b + args.overhead * len(configs) / 3) / args.workers
            print(f"projected fast grid ({clock} times) on {args.workers} workers (+{args.overhead} s per Tune trial): "
                  f"unbatched {wall_a / 60:.1f} min, vectorised {wall_b / 60:.1f} min: x{wall_a / wall_b:.2f} "
                  f"(compute only x{work_a / work_b:.2f})")
    print(f"load average at the end {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
