"""GPU figures for vectorised trials: the transformer_grid at its full budget,
four ways, on one GPU, in about 8 minutes. Run it with ``bash tests/benchmarks/gpu_vectorised.sh``.

  gpu: 1                one trial at a time on the GPU
  gpu: 0.25 packing     4 worker processes share the GPU (each capped at 0.2375 of its memory, as
                        orchestrator/run/trial.py caps a trial with gpu: 0.25), one trial each at a time
  vectorised            one process; each work item is a group (the 3 seeds of one configuration)
                        run as one batched computation (Transformer.run_group)
  vectorised + packing  4 processes, a group each at a time

Per way, two timed phases, each started once the workers are warm (imports, CUDA context, data:
Ray reuses its worker processes, so their start-up is not part of a trial's cost):

  backbones  the 9 float backbones of the grid (3 seeds x 3 archs) built cold into a fresh stage
             cache: 9 builds (one per item), or 3 batched builds of 3 (vectorised). Trained for
             ``--backbone-epochs`` epochs; float training costs the same per epoch, so the full
             budget's 10 epochs are projected by scaling.
  trials     the grid's trials at the full budget (5 corrector epochs over the whole train split,
             batch 64, every evaluation on the whole test split), on those backbones, for
             ``--window`` seconds: items are handed out until the window closes (archs interleaved,
             so every arch gets its share), the items in flight finish, and trials per hour =
             finished trials / elapsed.

Reported per way: trials per hour, peak GPU memory (torch.cuda.max_memory_allocated: the largest
worker's and the sum over the workers), and the projected wall time of the 243-trial grid:
9 backbones (scaled to the full epochs) + 243 / (trials per hour), against the seed's 55 h.

Without a GPU (or with ``--cpu``) it runs the same harness on the CPU at the smoke scale with short
windows: a check of the script, not a figure. ``--dry-run`` prints the plan and exits.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SEED_HOURS = 55.0  # the seed's wall time for the 243-run grid
WAYS = [("gpu: 1", 1, False), ("gpu: 0.25 packing", 4, False), ("vectorised", 1, True),
        ("vectorised + packing", 4, True)]
ARCHS = ((64, 2), (128, 4), (256, 6))


def find_data_root() -> Path | None:
    for cand in (os.environ.get("OVERNIGHT_DATA"), ROOT / ".data", ROOT.parent / "shared" / "data"):
        if cand and (Path(cand) / "tinyshakespeare" / "input.txt").exists():
            return Path(cand)
    return None


def grid_configs(scale: str, data: str, backbone_epochs: int, bits: int) -> list[dict]:
    """The grid's configs at ``scale`` for one bit width, float epochs set to ``backbone_epochs``,
    ordered stratum by stratum with the archs interleaved and the 3 seeds of a group together."""
    import yaml

    from tests.quantcorr.test_studies import expand

    spec = yaml.safe_load((ROOT / "configs" / "studies" / "transformer_grid.yaml").read_text())
    cfgs = [dict(c, data=data, float_epochs=backbone_epochs) for c in expand(spec, scale) if c["bits"] == bits]
    key = lambda c: (c["correct_every"], c["correction_hidden"], c["d_model"], c["seed"])  # noqa: E731
    return sorted(cfgs, key=key)


def groups_of(cfgs: list[dict]) -> list[list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for c in cfgs:
        out.setdefault((c["correct_every"], c["correction_hidden"], c["d_model"]), []).append(c)
    return list(out.values())


# -------------------------------------------------------------------------------- worker process
def worker(rank: int, procs: int, args: dict, tasks, results, ready) -> None:
    os.environ.setdefault("OVERNIGHT_OFFLINE", "1")
    import torch

    from orchestrator.run.cache import StageCache
    from orchestrator.study.contract import LocalContext
    from workloads.quantcorr import Transformer

    torch.set_num_threads(args["threads"])
    device = args["device"]
    if device == "cuda" and procs > 1:  # Ray's fractional GPUs are logical: cap as orchestrator/run/trial.py does
        torch.cuda.set_per_process_memory_fraction(max(0.05, 0.95 / procs), 0)

    class Ctx(LocalContext):
        def __init__(self, cache: str):
            super().__init__(device=device, scale=args["scale"], data_root=Path(args["data_root"]),
                             cache_dir=Path(cache) / "scratch")
            self.cache = StageCache(cache)

        def stage(self, key, build):
            return self.cache.get(key, build)

    w = Transformer()
    # warm-up: CUDA context and kernels, the data (a smoke-sized group on the CPU-side loader)
    if device == "cuda":
        torch.zeros(1, device="cuda").sum().item()
    ready.put(rank)
    while True:
        item = tasks.get()
        if item is None:
            break
        kind, cache, payload = item
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        n, err, summary = 0, "", {}
        try:
            if kind == "backbones":
                _build_backbones(payload, Ctx, cache, device)
                n = len(payload)
            elif args["vectorised"]:
                rows = w.run_group([w.Params.model_validate(c) for c in payload], [Ctx(cache) for _ in payload])
                bad = [r for r in rows if isinstance(r, BaseException)]
                if bad:
                    raise bad[0]
                n, summary = len(rows), {"c": [r["c"] for r in rows], "f": [r["f"] for r in rows]}
            else:
                row = w.run(w.Params.model_validate(payload[0]), Ctx(cache))
                n, summary = 1, {"c": [row["c"]], "f": [row["f"]]}
        except Exception as e:  # noqa: BLE001 - reported, not fatal for the figures of the other items
            err = f"{type(e).__name__}: {e}"[:500]
        if device == "cuda":
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() if device == "cuda" else 0
        results.put({"rank": rank, "kind": kind, "n": n, "s": time.perf_counter() - t0, "peak": peak,
                     "error": err, **summary})


def _build_backbones(cfgs: list[dict], Ctx, cache: str, device: str) -> None:
    """The float phase of ``cfgs`` (one item: one backbone unbatched, or a group's backbones)."""
    from orchestrator.study.params import validate
    from workloads.quantcorr.params import TRANSFORMER_PROTOCOL_DEFAULTS, TransformerParams, with_protocol_defaults
    from workloads.quantcorr.transformer import backbone_recipe
    from workloads.quantcorr.transformer_group import _Backbone, float_phase
    from workloads.substrate.char_transformer import load_char_data, trained_backbone
    from workloads.substrate.stages import Checkpointer

    ps = [with_protocol_defaults(TRANSFORMER_PROTOCOL_DEFAULTS["grid"], validate(TransformerParams, c)) for c in cfgs]
    ctxs = [Ctx(cache) for _ in ps]
    data = load_char_data(ps[0], ctxs[0], test_limit=ps[0]["eval_sequences"])
    recipes = [backbone_recipe(p, p["seed"]) for p in ps]
    ckpts = [Checkpointer(x, {"bench": i}) for i, x in enumerate(ctxs)]
    if len(cfgs) == 1:
        trained_backbone(recipes[0], data, ctxs[0], ckpts[0], True)
        return
    bbs = [_Backbone(r.stage_key(data, device), r, [i]) for i, r in enumerate(recipes)]
    float_phase(bbs, data, ps[0], ctxs, ckpts, device)
    errors = [b.error for b in bbs if b.error is not None]
    if errors:
        raise errors[0]


# -------------------------------------------------------------------------------- one way
def run_way(name: str, procs: int, vectorised: bool, args, cfgs: list[dict], log) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    tasks, results, ready = ctx.Queue(), ctx.Queue(), ctx.Queue()
    wargs = {"threads": args.threads, "device": args.device, "scale": args.scale, "data_root": str(args.data_root),
             "vectorised": vectorised}
    t_start = time.perf_counter()
    workers = [ctx.Process(target=worker, args=(r, procs, wargs, tasks, results, ready), daemon=True)
               for r in range(procs)]
    for p in workers:
        p.start()
    for _ in workers:
        ready.get(timeout=180)
    log(f"{name}: {procs} worker(s) warm in {time.perf_counter() - t_start:.1f} s")
    cache = tempfile.mkdtemp(prefix="gpu-vec-cache-", dir=args.tmp)
    groups = groups_of(cfgs)
    out = {"way": name, "procs": procs, "vectorised": vectorised}

    def phase(kind: str, items: list, window: float | None) -> dict:
        pending = list(items)
        t0 = time.perf_counter()
        in_flight, done, peaks, errors, cs = 0, 0, {}, [], []
        while pending and in_flight < procs:
            tasks.put((kind, cache, pending.pop(0)))
            in_flight += 1
        while in_flight:
            try:
                r = results.get(timeout=args.item_timeout)
            except queue.Empty:
                errors.append(f"no result within {args.item_timeout} s")
                break
            in_flight -= 1
            done += r["n"]
            peaks[r["rank"]] = max(peaks.get(r["rank"], 0), r["peak"])
            cs += [(f, c) for f, c in zip(r.get("f", []), r.get("c", []))]
            if r["error"]:
                errors.append(r["error"])
            if pending and (window is None or time.perf_counter() - t0 < window):
                tasks.put((kind, cache, pending.pop(0)))
                in_flight += 1
        s = time.perf_counter() - t0
        return {"n": done, "s": s, "peak_max": max(peaks.values(), default=0), "peak_sum": sum(peaks.values()),
                "errors": errors, "mean_c_over_f": (sum(c / f for f, c in cs) / len(cs)) if cs else None}

    # the 9 backbones: one item per backbone, or per arch (its 3 seeds batched)
    first_stratum = [g for g in groups if (g[0]["correct_every"], g[0]["correction_hidden"]) ==
                     (groups[0][0]["correct_every"], groups[0][0]["correction_hidden"])]
    bb_items = [g for g in first_stratum] if vectorised else [[c] for g in first_stratum for c in g]
    out["backbones"] = phase("backbones", bb_items, None)
    log(f"{name}: 9 backbones x {args.backbone_epochs} epoch(s) in {out['backbones']['s']:.1f} s")
    items = groups if vectorised else [[c] for g in groups for c in g]
    out["trials"] = phase("trials", items, args.window)
    t = out["trials"]
    log(f"{name}: {t['n']} trials in {t['s']:.1f} s; peak GPU memory {t['peak_max'] / 2**30:.2f} GiB per worker, "
        f"{t['peak_sum'] / 2**30:.2f} GiB in all" + (f"; errors: {t['errors'][:2]}" if t["errors"] else ""))
    for _ in workers:
        tasks.put(None)
    for p in workers:
        p.join(timeout=30)
        if p.is_alive():
            p.terminate()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    ap.add_argument("--cpu", action="store_true", help="the harness on the CPU at smoke scale (a check, not a figure)")
    ap.add_argument("--window", type=float, default=None, help="seconds of trials per way (GPU default 60, CPU 8)")
    ap.add_argument("--backbone-epochs", type=int, default=1)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads per worker")
    ap.add_argument("--item-timeout", type=float, default=240)
    ap.add_argument("--ways", default="1,2,3,4", help="which of the four ways, by number")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--allow-standin", action="store_true",
                    help="without tinyshakespeare, time the stand-in corpus (36 KB: NOT the full budget)")
    args = ap.parse_args()

    gpu = False
    if not args.dry_run and not args.cpu:
        import torch
        gpu = torch.cuda.is_available()
    args.device = "cuda" if gpu else "cpu"
    args.scale = "full" if gpu or args.dry_run else "smoke"
    args.window = args.window if args.window is not None else (60.0 if args.scale == "full" else 8.0)
    args.data_root = find_data_root()
    data = "real"
    if args.data_root is None:
        if args.scale == "full" and not (args.allow_standin or args.dry_run):
            sys.exit("tinyshakespeare not found (OVERNIGHT_DATA, ./.data/tinyshakespeare or ../shared/data): copy "
                     "../shared/data/tinyshakespeare to .data/ and carry .data, or pass --allow-standin")
        data, args.data_root = "standin", Path(tempfile.gettempdir())
    if args.scale == "smoke":
        data = "standin"
    args.tmp = tempfile.mkdtemp(prefix="gpu-vec-")
    cfgs = grid_configs(args.scale, data, args.backbone_epochs, args.bits)
    ways = [WAYS[int(i) - 1] for i in args.ways.split(",")]
    grid_epochs = 10 if args.scale == "full" else 1
    log = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True)  # noqa: E731
    log(f"device {'(not checked)' if args.dry_run else args.device}, scale {args.scale}, data {data} ({args.data_root}), {len(cfgs)} trials at {args.bits} bits "
        f"in {len(groups_of(cfgs))} groups of 3 seeds; backbones at {args.backbone_epochs} of {grid_epochs} epochs; "
        f"trial window {args.window:.0f} s per way; ways: {', '.join(w[0] for w in ways)}")
    if args.dry_run:
        for g in groups_of(cfgs)[:4]:
            print("  group:", {k: g[0][k] for k in ("d_model", "n_layers", "correct_every", "correction_hidden", "bits")},
                  "seeds", [c["seed"] for c in g])
        print(f"  ... {len(groups_of(cfgs))} groups; nothing run (--dry-run)")
        return
    if gpu:
        import torch
        log(f"GPU: {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")

    header = (f"| way | trials/hour | peak GPU memory per worker / all workers | 9 backbones ({grid_epochs} ep, "
              f"projected) | projected 243-trial grid | vs the seed's {SEED_HOURS:.0f} h |\n|---|---|---|---|---|---|")
    figures, rows = [], []
    for name, procs, vec in ways:
        f = run_way(name, procs, vec, args, cfgs, log)
        t, b = f["trials"], f["backbones"]
        rate = 3600 * t["n"] / t["s"] if t["n"] else float("nan")
        bb_full = b["s"] * grid_epochs / args.backbone_epochs
        grid_h = (bb_full + 243 * 3600 / rate) / 3600 if t["n"] else float("nan")
        f.update(trials_per_hour=rate, backbones_full_s=bb_full, grid_hours=grid_h)
        figures.append(f)
        rows.append(f"| {f['way']} | {rate:.0f} | {t['peak_max'] / 2**30:.2f} / {t['peak_sum'] / 2**30:.2f} GiB | "
                    f"{bb_full:.0f} s | {grid_h:.2f} h | x{SEED_HOURS / grid_h:.0f} faster |")
        print(header.split("\n")[0] + "\n" + rows[-1], flush=True)  # a way's figures as soon as it is done
        if args.json:
            Path(args.json).write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                   "figures": figures}, indent=1, default=str))
    print("\n" + header + "\n" + "\n".join(rows))
    if args.scale != "full":
        print("\n(CPU / smoke-scale check of the harness: these numbers are not GPU figures.)")


if __name__ == "__main__":
    main()
