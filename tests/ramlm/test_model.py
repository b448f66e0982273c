"""The model on the native memory: the analytical PPL floor, GA/TS on real candidate evaluation."""
import math

import numpy as np
import pytest

from workloads.data.wikitext import zipf_stream
from workloads.ramlm.encoding import bits_per_token
from workloads.ramlm.metrics import ppl_floor
from workloads.ramlm.model import TieredRAMLM, make_memory
from workloads.ramlm.search import GAConfig, TSConfig, genetic_algorithm, tabu_search
from workloads.ramlm.tiers import ClusterMap, parse_tiers, top_k, uniform_tiers

from tests.conftest import require_native

native = require_native()  # fails (never skips) without the extension


def de_bruijn(k: int, n: int) -> list[int]:
    """Cyclic sequence over k symbols in which every length-n word occurs exactly once."""
    a, seq = [0] * k * n, []

    def db(t, p):
        if t > n:
            if n % p == 0:
                seq.extend(a[1:p + 1])
        else:
            a[t] = a[t - p]
            db(t + 1, p)
            for j in range(a[t - p] + 1, k):
                a[t] = j
                db(t + 1, t)
    db(1, 1)
    return seq


def build(tokens, vocab, tiers, context, empty_value=0.0, k=10, order="frequency", seed=0, connectivity=None):
    cmap = ClusterMap.build(tiers, tokens, order)
    bpt = bits_per_token(vocab)
    mem = make_memory(tiers, cmap, context * bpt, seed, "auto", connectivity)
    return TieredRAMLM(mem, cmap, context, bpt, top_k(tokens, vocab, k), empty_value)


def test_perfect_memorisation_reaches_the_analytical_floor():
    vocab, context = 16, 2
    tokens = np.array(de_bruijn(vocab, 2) + [0], dtype=np.int64)   # every 2-token context once
    t = context * bits_per_token(vocab)
    tiers = uniform_tiers(vocab, 1, t)
    conn = [np.tile(np.arange(t), (vocab, 1))]                     # each neuron reads the whole context
    model = build(tokens, vocab, tiers, context, connectivity=conn)
    model.train(tokens)
    res = model.evaluate(tokens)
    assert res["acc"] == 1.0
    assert res["ppl"] == pytest.approx(ppl_floor(vocab), rel=1e-9)
    # the same through the [B, V] scores path
    seed, _ = model.evaluate_scored(tokens, None)
    assert seed["ppl"] == pytest.approx(ppl_floor(vocab), rel=1e-6)
    # an untrained model is uniform: PPL = V
    model.memory.reset()
    assert model.evaluate(tokens)["ppl"] == pytest.approx(vocab, rel=1e-9)


def test_frequency_tiers_give_capacity_to_frequent_tokens():
    vocab = 64
    tokens = zipf_stream(6000, vocab, seed=3)
    tiers = parse_tiers("8,6,10;rest,2,6", vocab)
    freq = build(tokens[:5000], vocab, tiers, 2)
    legacy = build(tokens[:5000], vocab, tiers, 2, order="token_id")
    for m in (freq, legacy):
        m.train(tokens[:5000])
    f, lg = freq.evaluate(tokens[5000:]), legacy.evaluate(tokens[5000:])
    # tier 0 stores the 8 most frequent train tokens (by target), not token ids 0..7
    eval_targets = tokens[5002:]
    in_top8 = np.isin(eval_targets, top_k(tokens[:5000], vocab, 8))
    assert f["tiers"][0]["share"] == pytest.approx(in_top8.mean())
    assert f["tiers"][0]["share"] + f["tiers"][1]["share"] == pytest.approx(1.0)
    # and the memory's own tier assignment agrees with the workload's mapping
    assert np.array_equal(freq.memory.cluster_tiers(), freq.cmap.tier_of_token)
    # legacy storage gives tier 0's capacity to token ids 0..7 ...
    assert np.array_equal(legacy.memory.cluster_tiers(), legacy.cmap.tier_of_token)
    assert legacy.cmap.tier_of_token.tolist() == [0] * 8 + [1] * (vocab - 8)
    assert (eval_targets < 8).mean() < in_top8.mean() - 0.1        # which are not the frequent ones here
    # ... but its per-tier metrics bucket targets by frequency rank, as the original's tables did
    assert lg["tiers"][0]["share"] == pytest.approx(in_top8.mean())
    assert np.array_equal(legacy.cmap.metric_tier_of_token, freq.cmap.tier_of_token)
    # so both rows' tier 0 is the same examples, scored by differently stored models
    assert f["tiers"][0]["n"] == lg["tiers"][0]["n"] and f["tiers"][0]["ce"] != lg["tiers"][0]["ce"]


def test_ga_and_ts_lower_the_windowed_ce_through_the_native_evaluator():
    vocab, context = 32, 2
    tokens = zipf_stream(4000, vocab, follow_prob=0.9, seed=5)       # the next token mostly follows the last
    tiers = uniform_tiers(vocab, 2, 4)
    t = context * bits_per_token(vocab)
    conn = [np.random.default_rng(0).integers(0, bits_per_token(vocab), size=(vocab * 2, 4))]  # oldest token only
    model = build(tokens[:3000], vocab, tiers, context, connectivity=conn, k=5)
    tr_bits, tr_tg = model.examples(tokens[:3000]).all()
    ev_bits, ev_tg = model.examples(tokens[3000:]).all()

    def fitness(genomes):
        return model.memory.evaluate_candidates(np.ascontiguousarray(genomes), tr_bits, tr_tg, model.negatives,
                                                ev_bits, ev_tg, 0.0, True)

    start = model.memory.connectivity_flat()
    start_ce = float(fitness(start[None])[0])
    ga = genetic_algorithm(start, fitness, np.arange(0, start.size, 4), t,
                           GAConfig(population=8, generations=6, mutation_rate=0.05, patience=5), start_ce=start_ce)
    assert ga.ce < start_ce - 0.01
    ts = tabu_search(ga.genome, fitness, t, TSConfig(iterations=6, neighbors=8, mutation_rate=0.05, patience=5),
                     start_ce=ga.ce)
    assert ts.start_ce == ga.ce and ts.ce <= ga.ce
    # the evaluator's CE is the model's CE after training on the same data
    model.memory.set_connectivity_flat(ts.genome)
    model.train(tokens[:3000])
    assert model.evaluate(tokens[3000:])["ce"] == pytest.approx(ts.ce, rel=1e-9)
    assert math.isfinite(ts.ce)
