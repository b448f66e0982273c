"""Training rule, scoring and state handling of native.TieredMemory on hand-checked cases, and the
order/batch/thread independence of training (docs/studies/ramlm.md, 'Memory' and
'Seed scoring')."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tests.conftest import require_native

native = require_native()  # fails (never skips) without the extension

FALSE, TRUE, EMPTY = native.FALSE, native.TRUE, native.EMPTY


def one_neuron_memory(backend="auto", bits=2):
    # 2 clusters x 1 neuron, bits connected to inputs 0..bits-1 (input row = address, MSB first)
    conn = np.tile(np.arange(bits, dtype=np.int64), (2, 1))
    return native.TieredMemory([(2, 1, bits)], bits, connectivity=[conn], backends=backend)


def row(addr, bits=2):
    return np.array([[(addr >> (bits - 1 - i)) & 1 for i in range(bits)]], dtype=np.uint8)


def cell_map(m, tier=0):
    j, a, s = m.cells(tier)
    return {(int(x), int(y)): int(z) for x, y, z in zip(j, a, s)}


@pytest.mark.parametrize("backend", ["dense", "sparse", "lsh"])
def test_true_dominates_false_in_any_order(backend):
    m = one_neuron_memory(backend)
    # FALSE first (cluster 1 as negative of an example of cluster 0), then TRUE for cluster 1
    m.train(row(3), np.array([0]), np.array([1]))
    assert cell_map(m) == {(0, 3): TRUE, (1, 3): FALSE}
    m.train(row(3), np.array([1]), np.array([0]))
    assert cell_map(m) == {(0, 3): TRUE, (1, 3): TRUE}  # TRUE overrides FALSE, FALSE never overrides TRUE
    # FALSE only into EMPTY; a target inside the negatives still ends TRUE
    m.train(row(1), np.array([0]), np.array([0, 1]))
    assert cell_map(m)[(0, 1)] == TRUE and cell_map(m)[(1, 1)] == FALSE
    assert m.written_cells().tolist() == [4] and m.true_cells().tolist() == [3]


def test_counts_scores_and_evaluate_by_hand():
    # 3 clusters, 2 neurons each, 2 input bits; neuron 0 reads bit 0, neuron 1 reads bit 1
    conn = np.array([[0], [1]] * 3, dtype=np.int64)
    m = native.TieredMemory([(3, 2, 1)], 2, connectivity=[conn])
    m.train(np.array([[1, 0]], np.uint8), np.array([0]), np.array([1]))
    x = np.array([[1, 0], [1, 1]], np.uint8)
    t, e = m.forward_counts(x)
    # row 0: cluster 0 both TRUE; cluster 1 both FALSE; cluster 2 EMPTY
    assert t.tolist() == [[2, 0, 0], [1, 0, 0]]
    assert e.tolist() == [[0, 0, 2], [1, 1, 2]]
    s = m.forward_scores(x, 0.5)
    np.testing.assert_array_equal(s, np.array([[1.0, 0.0, 0.5], [0.75, 0.25, 0.5]], np.float32))
    ce, pred = m.evaluate(x, np.array([2, 1]), 0.5)
    want = [np.log(np.exp([1, 0, .5]).sum()) - .5, np.log(np.exp([.75, .25, .5]).sum()) - .25]
    np.testing.assert_allclose(ce, want, rtol=1e-14)
    assert pred.tolist() == [0, 0]
    # ties go to the lowest token id; untouched clusters score exactly empty_value
    _, pred = m.evaluate(np.array([[0, 0]], np.uint8), np.array([0]), 0.0)
    assert pred.tolist() == [0]
    assert m.forward_scores(np.array([[0, 1]], np.uint8), 0.3)[0, 2] == np.float32(0.3)


def test_cluster_order_maps_tiers_and_outputs_to_token_ids():
    # logical 0 (tier 0, 2 neurons) is token 2; logical 1..2 (tier 1, 1 neuron) are tokens 0, 1
    order = np.array([2, 0, 1], np.int64)
    m = native.TieredMemory([(1, 2, 3), (2, 1, 5)], 6, cluster_order=order, seed=3)
    assert m.cluster_tiers().tolist() == [1, 1, 0]
    assert m.cluster_order().tolist() == [2, 0, 1]
    x = np.array([[1, 0, 1, 1, 0, 1]], np.uint8)
    m.train(x, np.array([2]))
    t, _ = m.forward_counts(x)
    assert t.tolist() == [[0, 0, 2]]  # token 2 is the 2-neuron tier-0 cluster
    assert m.written_cells().tolist() == [2, 0]


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from(["auto", "dense", "sparse", "lsh"]), st.sampled_from(["shared", "per_example"]))
def test_memory_independent_of_order_batching_and_threads(seed, backend, neg_kind):
    rng = np.random.default_rng(seed)
    tiers, t, c, b = [(4, 3, 9), (6, 2, 13), (10, 2, 4)], 24, 20, 3000
    bits = (rng.random((b, t)) < 0.4).astype(np.uint8)
    targets = rng.integers(0, c, b).astype(np.int64)
    neg = (rng.integers(0, c, 5) if neg_kind == "shared" else rng.integers(0, c, (b, 3))).astype(np.int64)
    kw = dict(backends=backend, seed=seed % 1000, cluster_order=rng.permutation(c).astype(np.int64))
    old = native.get_num_threads()
    try:
        native.set_num_threads(1)
        one = native.TieredMemory(tiers, t, **kw)
        one.train(bits, targets, neg)
        native.set_num_threads(3)
        split = native.TieredMemory(tiers, t, **kw)
        perm = rng.permutation(b)
        cuts = np.sort(rng.choice(np.arange(1, b), 4, replace=False))
        for part in np.split(perm, cuts)[::-1]:
            split.train(bits[part], targets[part], neg if neg.ndim == 1 else neg[part])
    finally:
        native.set_num_threads(old)
    assert one.to_bytes() == split.to_bytes()


def test_large_batch_crosses_internal_chunks():
    # more examples than one internal training chunk (16384), shared negatives
    rng = np.random.default_rng(1)
    b, t = 40_000, 16
    bits = (rng.random((b, t)) < 0.5).astype(np.uint8)
    targets = rng.integers(0, 50, b).astype(np.int64)
    neg = np.arange(5, dtype=np.int64)
    a = native.TieredMemory([(10, 2, 12), (40, 1, 6)], t, seed=2)
    a.train(bits, targets, neg)
    c = native.TieredMemory([(10, 2, 12), (40, 1, 6)], t, seed=2)
    for s in range(0, b, 999):
        c.train(bits[s:s + 999], targets[s:s + 999], neg)
    assert a.to_bytes() == c.to_bytes()


def test_memorisation():
    """Every training context read back: the target cluster is all TRUE (TRUE-dominance)."""
    rng = np.random.default_rng(4)
    b, t, c = 500, 32, 30
    bits = (rng.random((b, t)) < 0.5).astype(np.uint8)
    targets = rng.integers(0, c, b).astype(np.int64)
    m = native.TieredMemory([(c, 4, 20)], t, seed=1)
    m.train(bits, targets, np.arange(c, dtype=np.int64))
    tc, _ = m.forward_counts(bits)
    assert (tc[np.arange(b), targets] == 4).all()
    _, pred = m.evaluate(bits, targets, 0.0)
    assert (pred == targets).mean() > 0.9


def test_reset_connectivity_and_pickle(tmp_path):
    m = native.TieredMemory([(3, 2, 12), (2, 2, 6)], 10, seed=7)
    x = (np.random.default_rng(0).random((40, 10)) < 0.5).astype(np.uint8)
    y = np.arange(40, dtype=np.int64) % 5
    m.train(x, y, np.array([0, 4]))
    assert m.written_cells().sum() > 0
    clone = pickle.loads(pickle.dumps(m))
    assert isinstance(clone, native.TieredMemory) and clone.to_bytes() == m.to_bytes()
    m.save(tmp_path / "m.bin")
    assert native.TieredMemory.load(tmp_path / "m.bin").to_bytes() == m.to_bytes()
    conn = m.connectivity(0)
    m.reset()
    assert m.written_cells().tolist() == [0, 0]
    np.testing.assert_array_equal(m.connectivity(0), conn)  # connectivity kept
    m.train(x, y)
    new = (conn + 1) % 10
    m.set_connectivity(0, new)
    assert m.written_cells()[0] == 0 and m.written_cells()[1] > 0  # only that tier reset
    np.testing.assert_array_equal(m.connectivity(0), new)
    flat = m.connectivity_flat()
    assert flat.size == m.connection_count == 3 * 2 * 12 + 2 * 2 * 6
    m.set_connectivity_flat(flat[::-1].copy())
    np.testing.assert_array_equal(m.connectivity_flat(), flat[::-1])
    assert m.written_cells().sum() == 0


def test_properties_and_backends():
    m = native.TieredMemory([(100, 15, 20), (400, 10, 12), (49757, 5, 8)], 64, seed=0)
    assert m.backends == ["sparse", "sparse", "dense"]
    assert m.num_neurons == 254_285 and m.connection_count == 2_068_280  # docs/studies/ramlm.md, 'Tiered architecture'
    assert m.num_clusters == 50257 and m.total_input_bits == 64 and m.num_tiers == 3
    assert m.tiers == [(100, 15, 20), (400, 10, 12), (49757, 5, 8)]
    # no dense allocation for sparse tiers: about 16 MB dense tier + 8 MB connectivity
    assert m.heap_bytes < 40 << 20
    assert native.TieredMemory([(2, 1, 40)], 64).backends == ["lsh"]


def test_threads_setting():
    old = native.get_num_threads()
    native.set_num_threads(2)
    assert native.get_num_threads() == 2
    native.set_num_threads(old)
    with pytest.raises(ValueError):
        native.set_num_threads(0)
