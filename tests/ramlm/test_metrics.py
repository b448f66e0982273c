import math

import numpy as np
import pytest

from workloads.ramlm.metrics import Calibration, SeedScorer, TierAccumulator, ppl_floor, seed_ce, unigram_log_prior


def test_floor_value_for_gpt2_vocabulary():
    assert ppl_floor(50257) == pytest.approx(18489, abs=1)
    assert math.log(ppl_floor(50257)) == pytest.approx(9.825, abs=1e-3)


def test_perfect_scores_reach_the_floor_and_uniform_reaches_v():
    v, n = 300, 40
    rng = np.random.default_rng(0)
    tgt = rng.integers(0, v, n)
    perfect = np.zeros((n, v), dtype=np.float32)
    perfect[np.arange(n), tgt] = 1.0
    scorer = SeedScorer(np.zeros(v, dtype=np.int64), 1)
    scorer.add(perfect, tgt)
    s = scorer.seed.summary()
    assert s["ppl"] == pytest.approx(ppl_floor(v), rel=1e-5)
    assert s["acc"] == 1.0
    assert seed_ce(np.full((n, v), 0.5), tgt) == pytest.approx(math.log(v))


def test_clamp_caps_ce_at_log_v():
    v = 50
    scores = np.zeros((1, v))
    scores[0, 1:] = 1.0          # target 0 is the only cluster at 0: p < 1/V
    assert seed_ce(scores, np.array([0]), clamp=False) > math.log(v)
    assert seed_ce(scores, np.array([0]), clamp=True) == pytest.approx(math.log(v))


def test_accuracy_ties_go_to_lowest_token_id_and_per_tier_split():
    tier_of_token = np.array([0, 0, 1, 1, 2, 2])
    scores = np.array([[0.0, 0.5, 0.5, 0.5, 0.0, 0.0],     # tie 1/2/3 -> predicts 1
                       [0.0, 0.5, 0.5, 0.5, 0.0, 0.0],     # target 2 loses the tie
                       [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]])    # tie 0/5 -> predicts 0
    tgt = np.array([1, 2, 5])
    sc = SeedScorer(tier_of_token, 3)
    sc.add(scores, tgt)
    s = sc.seed.summary()
    assert s["acc"] == pytest.approx(1 / 3)
    assert [t["acc"] for t in s["tiers"]] == [1.0, 0.0, 0.0]
    assert [t["share"] for t in s["tiers"]] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    # per-tier CE is the mean over that tier's examples
    ce = -np.log(np.exp(scores[np.arange(3), tgt]) / np.exp(scores).sum(1))
    assert [t["ce"] for t in s["tiers"]] == pytest.approx(ce.tolist())


def test_tier_accumulator_handles_empty_tier():
    acc = TierAccumulator(2)
    acc.add(np.array([1.0, 3.0]), np.array([True, False]), np.array([0, 0]))
    s = acc.summary()
    assert s["ce"] == 2.0 and s["acc"] == 0.5
    assert math.isnan(s["tiers"][1]["ppl"]) and s["tiers"][1]["share"] == 0.0


def test_calibration_breaks_the_softmax_of_votes_floor():
    # votes that are right 90% of the time: seed scoring cannot go below the floor, a fitted
    # temperature can, and the unigram prior helps further when targets follow it
    v, n = 200, 3000
    rng = np.random.default_rng(1)
    prior = np.linspace(3.0, 0.1, v)
    prior /= prior.sum()
    tgt = rng.choice(v, size=n, p=prior)
    scores = np.zeros((n, v), dtype=np.float32)
    right = rng.random(n) < 0.9
    scores[np.arange(n), np.where(right, tgt, rng.integers(0, v, n))] = 1.0
    seed = seed_ce(scores, tgt)
    assert math.exp(seed) >= ppl_floor(v) * 0.999
    log_prior = unigram_log_prior(tgt, v)
    for mode in ("temperature", "temperature_prior"):
        cal = Calibration(log_prior, mode)
        cal.fit(scores.astype(np.float16), tgt)
        sc = SeedScorer(np.zeros(v, dtype=np.int64), 1, cal)
        sc.add(scores, tgt)
        assert cal.temperature < 0.5
        assert math.exp(sc.cal.summary()["ce"]) < ppl_floor(v) / 5
    assert cal.prior_weight > 0.1
