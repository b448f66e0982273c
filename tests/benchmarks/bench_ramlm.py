"""RAM-LM at full WikiText-2 size on the synthetic Zipf stream.

Trains tier0_20bit (``100,15,20;400,10,12;rest,5,8``, context 4, top-k negatives) on 2.4M tokens
with V = 50,257 through the native memory, then evaluates the full 288K-token test split (fused
native evaluation: softmax CE with the 1/V clamp, lowest-id argmax; no [B, V] matrix), and prints
train time, evaluation time, lookups/s and peak memory. Not collected by pytest.

    .venv/bin/python tests/benchmarks/bench_ramlm.py --threads 2
    .venv/bin/python tests/benchmarks/bench_ramlm.py --threads 2 --test-limit 5000   # quick look
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import time



def rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiers", default="100,15,20;400,10,12;rest,5,8")
    ap.add_argument("--context", type=int, default=4)
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--empty-value", type=float, default=0.0)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--sizes", default="2400000,251000,288000", help="train,val,test tokens")
    ap.add_argument("--test-limit", type=int, default=0, help="evaluate only this many test examples (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scores-sample", type=int, default=2000,
                    help="also time the [B, V] scores path (used by calibrated scoring) on this many examples")
    args = ap.parse_args()

    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
    import torch
    torch.set_num_threads(args.threads)
    import native
    from workloads.data.wikitext import zipf_stream
    from workloads.ramlm.encoding import bits_per_token
    from workloads.ramlm.metrics import SeedScorer, ppl_floor
    from workloads.ramlm.model import TieredRAMLM, make_memory
    from workloads.ramlm.tiers import ClusterMap, parse_tiers, top_k

    native.set_num_threads(args.threads)
    n_tr, n_va, n_te = (int(x) for x in args.sizes.split(","))
    print(f"load average now {os.getloadavg()}; wall times below include waiting for the CPU")
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"native threads {native.get_num_threads()}, load avg {os.getloadavg()[0]:.1f}")

    t0 = time.perf_counter()
    stream = zipf_stream(n_tr + n_va + n_te, args.vocab, seed=0)
    train, test = stream[:n_tr], stream[n_tr + n_va:]
    print(f"data: synthetic Zipf(0.95) stream {n_tr}/{n_va}/{n_te} tokens, V={args.vocab} "
          f"({time.perf_counter() - t0:.1f} s to generate)")

    tiers = parse_tiers(args.tiers, args.vocab)
    cmap = ClusterMap.build(tiers, train, "frequency")
    bpt = bits_per_token(args.vocab)
    t0 = time.perf_counter()
    mem = make_memory(tiers, cmap, args.context * bpt, seed=0)
    model = TieredRAMLM(mem, cmap, args.context, bpt, top_k(train, args.vocab, args.top_k), args.empty_value)
    print(f"model: tiers {args.tiers}, context {args.context}, {mem.num_neurons:,} neurons, "
          f"{mem.connection_count:,} connections, backends {mem.backends} ({time.perf_counter() - t0:.1f} s to build)")

    t0, c0 = time.perf_counter(), time.process_time()
    n_train = model.train(train)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    cells = mem.written_cells()
    print(f"train: {n_train:,} examples x (1 target + {args.top_k} negatives) in {train_s:.1f} s "
          f"= {n_train / train_s:,.0f} examples/s (encoding included; {train_cpu:.1f} s CPU over all threads); "
          f"written cells per tier {cells.tolist()}; "
          f"peak RSS {rss_peak_mib():,.0f} MiB")

    limit = args.test_limit or None
    t0, c0 = time.perf_counter(), time.process_time()
    res = model.evaluate(test, limit=limit)
    eval_s, eval_cpu = time.perf_counter() - t0, time.process_time() - c0
    lookups = res["n"] * mem.num_neurons
    print(f"test evaluation: {res['n']:,} examples in {eval_s:.1f} s = {res['n'] / eval_s:,.0f} examples/s, "
          f"{lookups / eval_s / 1e6:,.0f} M lookups/s ({lookups / eval_s / 1e6 / args.threads:,.0f} M per thread); "
          f"{eval_cpu:.1f} s CPU = {lookups / eval_cpu / 1e6:,.0f} M lookups per CPU-second")
    print(f"  test PPL {res['ppl']:,.0f} (floor {ppl_floor(args.vocab):,.0f}), acc {100 * res['acc']:.2f}%; per tier " +
          "; ".join(f"T{k}: {100 * t['share']:.1f}% of data, PPL {t['ppl']:,.0f}, acc {100 * t['acc']:.2f}%"
                    for k, t in enumerate(res["tiers"])))
    if limit:
        full = (num := len(test) - args.context) / res["n"] * eval_s
        print(f"  extrapolated full test ({num:,} examples): {full:.0f} s wall, "
              f"{num / res['n'] * eval_cpu / args.threads:.0f} s at {args.threads} fully available cores")

    if args.scores_sample:
        n = args.scores_sample
        scorer = SeedScorer(cmap.tier_of_token, len(tiers))
        t0 = time.perf_counter()
        for bits, tgt in model.examples(test).chunks(model.score_chunk, n):
            scorer.add(model.scores(bits), tgt)
        s_s = time.perf_counter() - t0
        same = math.isclose(scorer.seed.summary()["ce"], model.evaluate(test, limit=n)["ce"], rel_tol=1e-6)
        print(f"scores path ([B, V] float32 + torch softmax): {n:,} examples in {s_s:.1f} s "
              f"= {n / s_s:,.0f} examples/s; same CE as the fused path: {same}")
    print(f"peak RSS {rss_peak_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
