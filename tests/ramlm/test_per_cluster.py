"""PC fitness functions on crafted votes, the surrogate's votes, and a small optimisation run."""
import numpy as np
import pytest

from workloads.ramlm.per_cluster import PCConfig, per_cluster_optimise
from workloads.ramlm.surrogate import Baseline, SurrogateProblem, addresses, score_votes
from workloads.ramlm.tiers import uniform_tiers

V = 5
TARGETS = np.array([0, 1, 0, 2])
BASE_VOTES = np.array([[1, 2, 0], [0, 3, 1], [2, 0, 0], [0, 0, 1]], dtype=np.int16)   # clusters 0, 1, 2; 3, 4 vote 0
CANDIDATES = np.array([[3, 1, 0, 2], [3, 0, 2, 0]], dtype=np.float64)                  # votes of cluster 0


def make_cache():
    base = Baseline(V, np.array([0, 1, 2]), BASE_VOTES, {0: 0, 1: 1, 2: 2})
    return base, {"lse": base.lse(), "top2": base.top2(), "target_vote": base.target_votes(TARGETS)}


def fitness(mode):
    base, cache = make_cache()
    is_pos = TARGETS == 0
    return score_votes(CANDIDATES, mode, is_pos, base, cache, 0, np.nonzero(~is_pos)[0], len(TARGETS))


def test_simple():
    assert fitness("SIMPLE").tolist() == pytest.approx([(3 + 0 - 1 - 2) / 4, (3 + 2 - 0 - 0) / 4])


def test_accuracy_strictly_beats_every_other_baseline_vote():
    # positives x0 (others' best 2) and x2 (others' best 0: an inactive cluster also counts)
    assert fitness("ACCURACY").tolist() == pytest.approx([0.5, 1.0])


def test_penalize():
    assert fitness("PENALIZE").tolist() == pytest.approx([(3 + 0) / 2 - (1 + 2) / 2, (3 + 2) / 2 - 0.0])


def test_ce_matches_a_full_softmax_with_the_cluster_swapped_in():
    got = fitness("CE")
    for k, cand in enumerate(CANDIDATES):
        logits = np.zeros((4, V))
        logits[:, :3] = BASE_VOTES
        logits[:, 0] = cand
        lse = np.log(np.exp(logits).sum(1))
        ce = (lse - logits[np.arange(4), TARGETS]).mean()
        assert got[k] == pytest.approx(-ce, rel=1e-12)


def test_surrogate_votes_count_neurons_that_saw_the_address():
    # 4 input bits; neuron A reads bits (0,1), neuron B reads bits (2,3)
    train_bits = np.array([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=np.uint8)
    train_tg = np.array([0, 1, 0])
    eval_bits = np.array([[1, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 1, 1]], dtype=np.uint8)
    prob = SurrogateProblem(train_bits, train_tg, eval_bits, np.zeros(4, dtype=np.int64), vocab_size=2)
    conn = np.array([[[0, 1], [2, 3]]])
    assert addresses(train_bits, conn[0]).tolist() == [[2, 3], [0, 0], [3, 3]]
    # cluster 0 saw A in {2, 3}, B in {3}
    assert prob.votes(0, conn).tolist() == [[1, 2, 0, 1]]
    # cluster 1 saw A in {0}, B in {0}
    assert prob.votes(1, conn).tolist() == [[1, 0, 0, 1]]


@pytest.mark.parametrize("mode", ["SIMPLE", "ACCURACY", "CE", "PENALIZE"])
def test_optimisation_never_lowers_the_surrogate_fitness(mode):
    rng = np.random.default_rng(0)
    v, t = 12, 24
    # the target depends on the first 4 bits only, so connectivity on them is what helps
    bits = rng.integers(0, 2, size=(900, t)).astype(np.uint8)
    tg = (bits[:, :4] @ np.array([1, 2, 4, 8])) % v
    tiers = uniform_tiers(v, 4, 7)   # enough neurons and bits that votes do not saturate (ACCURACY needs a strict win)
    conn = [rng.integers(4, t, size=(v * 4, 7))]          # start far from the informative bits
    prob = SurrogateProblem(bits[:600], tg[:600], bits[600:], tg[600:], v)
    cfg = PCConfig(fitness=mode, generations=8, population=8, ts_iterations=4, ts_neighbors=10, group_size=1)
    new_conn, stats = per_cluster_optimise(tiers, conn, prob, t, cfg)
    assert stats["clusters_optimised"] == v
    assert stats["clusters_improved"] > 0
    assert new_conn[0].shape == conn[0].shape and new_conn[0].max() < t
    if mode == "SIMPLE":   # informative bits are picked up
        assert (new_conn[0] < 4).mean() > (conn[0] < 4).mean()


def test_groups_optimise_jointly():
    rng = np.random.default_rng(1)
    v, t = 8, 16
    bits = rng.integers(0, 2, size=(300, t)).astype(np.uint8)
    tg = (bits[:, :3] @ np.array([1, 2, 4])) % v
    tiers = uniform_tiers(v, 2, 3)
    conn = [rng.integers(3, t, size=(v * 2, 3))]
    prob = SurrogateProblem(bits[:200], tg[:200], bits[200:], tg[200:], v)
    _, stats = per_cluster_optimise(tiers, conn, prob, t, PCConfig(generations=5, population=6, ts_iterations=2,
                                                                   ts_neighbors=5, group_size=4))
    assert stats["clusters_optimised"] == v
    assert stats["clusters_improved"] in (0, 4, 8)     # groups are accepted or rejected as a whole


@pytest.mark.parametrize("group_size,units", [(1, 8), (4, 2)])
def test_evaluations_count_every_candidate_of_every_unit(group_size, units):
    """pc_evaluations reports what the per-cluster search spent: per unit the GA's start
    population (6) and its offspring (5 generations of 5 beside 1 elite), then at most 2 TS
    iterations of 5 neighbours (repeats are not evaluated twice)."""
    rng = np.random.default_rng(1)
    v, t = 8, 16
    bits = rng.integers(0, 2, size=(300, t)).astype(np.uint8)
    tg = (bits[:, :3] @ np.array([1, 2, 4])) % v
    conn = [rng.integers(3, t, size=(v * 2, 3))]
    prob = SurrogateProblem(bits[:200], tg[:200], bits[200:], tg[200:], v)
    _, stats = per_cluster_optimise(uniform_tiers(v, 2, 3), conn, prob, t,
                                    PCConfig(generations=5, population=6, ts_iterations=2, ts_neighbors=5,
                                             group_size=group_size))
    assert units * (6 + 5 * 5) < stats["evaluations"] <= units * (6 + 5 * 5 + 2 * 5)
