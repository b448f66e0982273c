"""Benchmark of the native RAM-neuron memory against the numpy reference.

Prints, for the native memory and for ``tests.oracles.memory_reference`` in the same run:
  1. lookups/s on one core for each backend (dense / sparse / lsh), measured by forward_counts;
  2. tier0_20bit (``100,15,20;400,10,12;rest,5,8``, context 4, top-100 negatives, frequency
     tiers) on a synthetic Zipf stream over 50,257 tokens: training and evaluation examples/s,
     heap bytes and peak RSS. The reference runs on a prefix of the stream (it is far slower);
     rates are per example, so the ratio is still like for like.

Every phase runs in its own subprocess so that peak RSS belongs to that phase alone. Times are
wall-clock and CPU (process) seconds; on a shared machine the CPU figure is the steadier one.

    .venv/bin/python tests/benchmarks/bench_native.py                 # full: 2.4M tokens
    .venv/bin/python tests/benchmarks/bench_native.py --tokens 200000 # quicker
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

V = 50257
SPEC = "100,15,20;400,10,12;rest,5,8"
CONTEXT, BPT, TOP_K = 4, 16, 100


def zipf_stream(n: int, seed: int = 0, s: float = 1.0) -> np.ndarray:
    """i.i.d. tokens with P(rank r) ~ r^-s; ranks are assigned to random token ids."""
    rng = np.random.default_rng(seed)
    p = np.arange(1, V + 1, dtype=np.float64) ** -s
    p /= p.sum()
    ids = rng.permutation(V)
    return ids[rng.choice(V, n, p=p)].astype(np.int64)


def frequency_order(tokens: np.ndarray) -> np.ndarray:
    """Descending train count, ties (and unseen tokens) by increasing id
    (docs/studies/ramlm.md, 'Tiered architecture')."""
    counts = np.bincount(tokens, minlength=V)
    return np.lexsort((np.arange(V), -counts)).astype(np.int64)


class Timer:
    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w
        self.cpu = time.process_time() - self.c


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def impl(name: str):
    if name == "native":
        import native
        return native.TieredMemory, native.encode_contexts
    from tests.oracles.memory_reference import ReferenceMemory, encode_contexts
    return ReferenceMemory, encode_contexts


# ---- phases (each in its own process) -----------------------------------------------------------

def phase_lookups(args) -> dict:
    """forward_counts on one core; lookups = examples x neurons. The reference gets the same
    cells (loaded from the native memory's bytes), so both read identical memories."""
    import native
    from tests.oracles.memory_reference import ReferenceMemory
    native.set_num_threads(1)
    rng = np.random.default_rng(1)
    t = 64
    out = {}
    cases = {
        # label: (tiers, backend, train examples); negatives = the first 100 clusters
        "dense_8bit": ([(2000, 5, 8)], "dense", 20000),
        "sparse_20bit_tables": ([(2000, 5, 20)], "sparse", 20000),    # per-neuron hash tables
        "sparse_20bit_promoted": ([(100, 5, 20)], "sparse", 60000),   # tier-0-like, promoted to arrays
        "lsh_40bit": ([(2000, 5, 40)], "lsh", 20000),
    }
    for label, (tiers, backend, n_train) in cases.items():
        c = sum(x[0] for x in tiers)
        m = native.TieredMemory(tiers, t, backends=backend, seed=3)
        bits = (rng.random((n_train, t)) < 0.5).astype(np.uint8)
        m.train(bits, rng.integers(0, c, n_train).astype(np.int64), np.arange(min(c, TOP_K), dtype=np.int64))
        r = ReferenceMemory.from_bytes(m.to_bytes())
        row = {"neurons": m.num_neurons, "written": int(m.written_cells().sum())}
        for name, mem, b in (("native", m, args.lookup_examples), ("reference", r, args.ref_lookup_examples)):
            q = (rng.random((b, t)) < 0.5).astype(np.uint8)
            mem.forward_counts(q[: min(b, 8)])  # warm-up
            with Timer() as tm:
                mem.forward_counts(q)
            n = b * m.num_neurons
            row[name] = dict(examples=b, wall_s=tm.wall, cpu_s=tm.cpu, lookups_per_s_wall=n / tm.wall,
                             lookups_per_s_cpu=n / max(tm.cpu, 1e-9))
        out[label] = row
    return out


def phase_tiered(name: str, args) -> dict:
    if name == "native":
        import native
        native.set_num_threads(args.threads)
    cls, encode = impl(name)
    tokens = zipf_stream(args.tokens, seed=0)
    test = zipf_stream(args.eval_examples + 2 * CONTEXT, seed=1)
    order = frequency_order(tokens)
    top = order[:TOP_K].copy()
    tiers = [(100, 15, 20), (400, 10, 12), (V - 500, 5, 8)]
    n_train = len(tokens) - CONTEXT if name == "native" else min(args.ref_train_examples, len(tokens) - CONTEXT)
    n_eval = args.eval_examples if name == "native" else args.ref_eval_examples
    bits, targets = encode(tokens[: n_train + CONTEXT], CONTEXT, BPT)
    ebits, etargets = encode(test, CONTEXT, BPT)
    ebits, etargets = ebits[:n_eval], etargets[:n_eval]
    one_thread = {}
    if name == "native" and args.threads != 1:
        # the same training on one thread first, for the scaling figure
        native.set_num_threads(1)
        m1 = cls(tiers, CONTEXT * BPT, cluster_order=order, seed=0)
        with Timer() as t1:
            m1.train(bits, targets, top)
        del m1
        native.set_num_threads(args.threads)
        one_thread = dict(train_1thread_ex_per_s_wall=n_train / t1.wall, train_1thread_ex_per_s_cpu=n_train / t1.cpu)
    with Timer() as tb:
        m = cls(tiers, CONTEXT * BPT, cluster_order=order, seed=0)
    with Timer() as tt:
        m.train(bits, targets, top)
    with Timer() as te:
        ce, pred = m.evaluate(ebits, etargets, 0.0)
    with Timer() as ts:
        m.forward_scores(ebits[: min(n_eval, 256)], 0.0)
    res = dict(
        backends=m.backends, train_examples=int(n_train), eval_examples=int(n_eval),
        build_s=tb.wall,
        train_wall_s=tt.wall, train_cpu_s=tt.cpu, train_ex_per_s_wall=n_train / tt.wall,
        train_ex_per_s_cpu=n_train / max(tt.cpu, 1e-9),
        eval_wall_s=te.wall, eval_cpu_s=te.cpu, eval_ex_per_s_wall=n_eval / te.wall,
        eval_ex_per_s_cpu=n_eval / max(te.cpu, 1e-9),
        eval_lookups_per_s_wall=n_eval * m.num_neurons / te.wall,
        scores_ex_per_s_wall=min(n_eval, 256) / ts.wall,
        written_cells=[int(x) for x in m.written_cells()],
        heap_mb=m.heap_bytes / 2**20, peak_rss_mb=peak_rss_mb(),
        eval_ce_clamped=float(np.minimum(ce, np.log(V)).mean()), eval_acc=float((pred == etargets).mean()),
        **one_thread,
    )
    return res


def phase_candidates(args) -> dict:
    """Parallel candidate evaluation (docs/studies/ramlm.md, 'Fitness and candidate evaluation'):
    K genomes, each a fresh tier0_20bit memory trained on a 10K-token window set and scored
    (softmax CE) on 4K tokens. Native only: the reference's cost per candidate is its train +
    evaluate cost measured above."""
    import native
    native.set_num_threads(args.threads)
    tokens = zipf_stream(args.tokens, seed=0)
    order = frequency_order(tokens)
    tb, tt = native.encode_contexts(tokens[:10_000], CONTEXT, BPT)
    eb, et = native.encode_contexts(zipf_stream(4_000, seed=2), CONTEXT, BPT)
    m = native.TieredMemory([(100, 15, 20), (400, 10, 12), (V - 500, 5, 8)], CONTEXT * BPT, cluster_order=order, seed=0)
    rng = np.random.default_rng(3)
    g = m.connection_count
    base = m.connectivity_flat()
    cands = np.repeat(base[None, :], args.candidates, axis=0)
    flip = rng.random(cands.shape) < 0.01
    cands[flip] = rng.integers(0, CONTEXT * BPT, int(flip.sum()))
    with Timer() as tm:
        ce = m.evaluate_candidates(cands, tb, tt, order[:TOP_K].copy(), eb, et, 0.0, True)
    return dict(candidates=args.candidates, genome=g, wall_s=tm.wall, cpu_s=tm.cpu,
                candidates_per_s_wall=args.candidates / tm.wall, ce=[float(x) for x in ce],
                peak_rss_mb=peak_rss_mb())


# ---- driver -------------------------------------------------------------------------------------

def run_child(phase: str, name: str, argv: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--impl", name, *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{phase}/{name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} CPUs visible, {platform.system()} {platform.release()}, load average {load:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2_400_000, help="synthetic train stream length")
    ap.add_argument("--threads", type=int, default=2, help="native threads for the tiered phase")
    ap.add_argument("--eval-examples", type=int, default=2000)
    ap.add_argument("--ref-train-examples", type=int, default=5000, help="reference trains on this prefix")
    ap.add_argument("--ref-eval-examples", type=int, default=64)
    ap.add_argument("--lookup-examples", type=int, default=4096)
    ap.add_argument("--ref-lookup-examples", type=int, default=256)
    ap.add_argument("--skip-lookups", action="store_true")
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--phase", choices=["lookups", "tiered", "candidates"], help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=["native", "reference"], help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args()
    if args.phase:
        if args.phase == "lookups":
            res = phase_lookups(args)
        elif args.phase == "candidates":
            res = phase_candidates(args)
        else:
            res = phase_tiered(args.impl, args)
        print(json.dumps(res))
        return

    argv = [a for a in sys.argv[1:]]
    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    results = {"machine": machine()}
    if not args.skip_lookups:
        print("\n== lookups on one core (forward_counts; lookups = examples x neurons) ==")
        res = run_child("lookups", "native", argv)
        results["lookups"] = res
        print(f"{'backend':<24}{'native M/s cpu':>16}{'native M/s wall':>17}{'ref M/s cpu':>13}{'speedup cpu':>13}")
        for k, row in res.items():
            n, r = row["native"], row["reference"]
            print(f"{k:<24}{n['lookups_per_s_cpu'] / 1e6:>16.1f}{n['lookups_per_s_wall'] / 1e6:>17.1f}"
                  f"{r['lookups_per_s_cpu'] / 1e6:>13.2f}{n['lookups_per_s_cpu'] / r['lookups_per_s_cpu']:>12.0f}x", flush=True)

    print(f"\n== tier0_20bit ({SPEC}), context {CONTEXT}, top-{TOP_K} negatives, Zipf stream of {args.tokens:,} tokens ==")
    sys.stdout.flush()
    nat = run_child("tiered", "native", argv)
    ref = run_child("tiered", "reference", argv)
    results["tiered"] = {"native": nat, "reference": ref}
    for label, r in (("native", nat), ("reference", ref)):
        print(f"{label}: backends {r['backends']}; train {r['train_examples']:,} ex in {r['train_wall_s']:.2f} s wall "
              f"/ {r['train_cpu_s']:.2f} s cpu -> {r['train_ex_per_s_wall']:,.0f} ex/s wall, "
              f"{r['train_ex_per_s_cpu']:,.0f} ex/cpu-s")
        if "train_1thread_ex_per_s_wall" in r:
            print(f"    same training on 1 thread: {r['train_1thread_ex_per_s_wall']:,.0f} ex/s wall, "
                  f"{r['train_1thread_ex_per_s_cpu']:,.0f} ex/cpu-s")
        print(f"    evaluate {r['eval_examples']:,} ex: {r['eval_ex_per_s_wall']:,.1f} ex/s wall, "
              f"{r['eval_ex_per_s_cpu']:,.1f} ex/cpu-s ({r['eval_lookups_per_s_wall'] / 1e6:,.1f} M lookups/s wall); "
              f"forward_scores {r['scores_ex_per_s_wall']:,.1f} ex/s")
        print(f"    written cells per tier {r['written_cells']}; heap {r['heap_mb']:,.0f} MiB; "
              f"peak RSS {r['peak_rss_mb']:,.0f} MiB; eval CE {r['eval_ce_clamped']:.4f}, acc {r['eval_acc']:.4f}")
    print(f"speedup (per example, cpu): train {nat['train_ex_per_s_cpu'] / ref['train_ex_per_s_cpu']:,.0f}x, "
          f"evaluate {nat['eval_ex_per_s_cpu'] / ref['eval_ex_per_s_cpu']:,.0f}x")
    cand = run_child("candidates", "native", argv)
    results["candidates"] = cand
    print(f"\ncandidate evaluation: {cand['candidates']} tier0_20bit genomes, 10K train / 4K eval tokens, "
          f"{args.threads} threads: {cand['wall_s']:.1f} s wall, {cand['cpu_s']:.1f} s cpu "
          f"({cand['candidates_per_s_wall']:.2f} candidates/s); peak RSS {cand['peak_rss_mb']:,.0f} MiB")
    out = os.environ.get("BENCH_NATIVE_JSON")
    if out:
        Path(out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
