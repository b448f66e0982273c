"""Property tests: native.TieredMemory == the numpy ReferenceMemory, bit for bit, on random
tiers, backends, mappings, inputs and negatives (docs/studies/ramlm.md,
'Architecture' to 'Memory backends')."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import require_native

native = require_native()  # fails (never skips) without the extension

from tests.oracles import memory_reference as ref  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def memory_case(draw):
    n_tiers = draw(st.integers(1, 3))
    tiers, backends = [], []
    for _ in range(n_tiers):
        count = draw(st.integers(0, 5))
        neurons = draw(st.integers(1, 4))
        backend = draw(st.sampled_from(["auto", "dense", "sparse", "lsh"]))
        max_bits = 60 if backend in ("auto", "lsh") else 14
        bits = draw(st.sampled_from([1, 2, 3, 5, 8, 11, 12, 14, 21, 33, 45, 60]).filter(lambda b, max_bits=max_bits: b <= max_bits))
        tiers.append((count, neurons, bits))
        backends.append(backend)
    if sum(t[0] for t in tiers) == 0:
        tiers[0] = (1,) + tiers[0][1:]
    c = sum(t[0] for t in tiers)
    t_bits = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32))
    permute = draw(st.booleans())
    data_seed = draw(st.integers(0, 2**32))
    batches = draw(st.lists(st.integers(0, 40), min_size=1, max_size=3))
    neg_kind = draw(st.sampled_from(["none", "shared", "per_example"]))
    density = draw(st.sampled_from([0.05, 0.3, 0.5, 0.9]))
    empty_value = draw(st.sampled_from([0.0, 0.5, 1.0, 0.25, -0.75]))
    return dict(tiers=tiers, backends=backends, c=c, t=t_bits, seed=seed, permute=permute, data_seed=data_seed,
                batches=batches, neg_kind=neg_kind, density=density, empty_value=empty_value)


def build_pair(case):
    rng = np.random.default_rng(case["data_seed"])
    order = rng.permutation(case["c"]).astype(np.int64) if case["permute"] else None
    kw = dict(cluster_order=order, backends=case["backends"], seed=case["seed"])
    return native.TieredMemory(case["tiers"], case["t"], **kw), ref.ReferenceMemory(case["tiers"], case["t"], **kw), rng


def random_batch(rng, case, b):
    bits = (rng.random((b, case["t"])) < case["density"]).astype(np.uint8)
    # Zipf-like targets so some clusters get many examples
    targets = np.minimum(rng.zipf(1.5, b) - 1, case["c"] - 1).astype(np.int64)
    if case["neg_kind"] == "none":
        neg = None
    elif case["neg_kind"] == "shared":
        neg = rng.integers(0, case["c"], rng.integers(0, 4)).astype(np.int64)
    else:
        neg = rng.integers(0, case["c"], (b, rng.integers(0, 3))).astype(np.int64)
    return bits, targets, neg


def assert_same_memory(a, b):
    assert a.backends == b.backends
    np.testing.assert_array_equal(a.written_cells(), b.written_cells())
    np.testing.assert_array_equal(a.true_cells(), b.true_cells())
    for t in range(a.num_tiers):
        for x, y in zip(a.cells(t), b.cells(t)):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
    assert a.to_bytes() == b.to_bytes()


@SETTINGS
@given(memory_case())
def test_native_matches_reference(case):
    a, b, rng = build_pair(case)
    assert a.backends == b.backends
    np.testing.assert_array_equal(a.connectivity_flat(), b.connectivity_flat())
    np.testing.assert_array_equal(a.cluster_tiers(), b.cluster_tiers())
    for size in case["batches"]:
        bits, targets, neg = random_batch(rng, case, size)
        a.train(bits, targets, neg)
        b.train(bits, targets, neg)
    assert_same_memory(a, b)

    bits, targets, _ = random_batch(rng, case, 37)
    for x, y in zip(a.addresses(bits), b.addresses(bits)):
        assert x.dtype == y.dtype == np.uint64
        np.testing.assert_array_equal(x, y)
    (ta, ea), (tb, eb) = a.forward_counts(bits), b.forward_counts(bits)
    assert ta.dtype == tb.dtype == np.uint16
    np.testing.assert_array_equal(ta, tb)
    np.testing.assert_array_equal(ea, eb)
    ev = case["empty_value"]
    sa, sb = a.forward_scores(bits, ev), b.forward_scores(bits, ev)
    assert sa.dtype == sb.dtype == np.float32
    np.testing.assert_array_equal(sa, sb)
    (cea, pa), (ceb, pb) = a.evaluate(bits, targets, ev), b.evaluate(bits, targets, ev)
    np.testing.assert_array_equal(pa, pb)
    # the same f64 formula; exp/log may differ in the last ulp between libm and numpy
    np.testing.assert_allclose(cea, ceb, rtol=1e-13, atol=1e-13)


@SETTINGS
@given(memory_case())
def test_addresses_path_matches_bits_path(case):
    """train_addresses/forward_counts_addresses with precomputed addresses == the bits path."""
    a, _, rng = build_pair(case)
    a2 = native.TieredMemory.from_bytes(a.to_bytes())
    r = ref.ReferenceMemory.from_bytes(a.to_bytes())
    for size in case["batches"]:
        bits, targets, neg = random_batch(rng, case, size)
        a.train(bits, targets, neg)
        addrs = a2.addresses(bits)
        a2.train_addresses(addrs, targets, neg)
        r.train_addresses(addrs, targets, neg)
    assert a.to_bytes() == a2.to_bytes() == r.to_bytes()
    bits, _, _ = random_batch(rng, case, 20)
    addrs = a.addresses(bits)
    for x, y in zip(a.forward_counts(bits), a.forward_counts_addresses(addrs)):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.forward_counts(bits), r.forward_counts_addresses(addrs)):
        np.testing.assert_array_equal(x, y)


@settings(max_examples=15, deadline=None)
@given(memory_case(), st.integers(1, 4), st.booleans())
def test_candidates_match_reference(case, k, clamp):
    a, b, rng = build_pair(case)
    g = a.connection_count
    cands = np.vstack([a.connectivity_flat()[None, :],
                       rng.integers(0, case["t"], (k - 1, g))]).astype(np.int64)
    tb, tt, tn = random_batch(rng, case, 30)
    eb, et, _ = random_batch(rng, case, 1 + case["batches"][0])
    ev = case["empty_value"]
    ra = a.evaluate_candidates(cands, tb, tt, tn, eb, et, ev, clamp)
    rb = b.evaluate_candidates(cands, tb, tt, tn, eb, et, ev, clamp)
    np.testing.assert_allclose(ra, rb, rtol=1e-13, atol=1e-13)
    # candidate 0 is this memory's own connectivity: same as training a copy directly
    fresh = native.TieredMemory(case["tiers"], case["t"], connectivity=[a.connectivity(i) for i in range(a.num_tiers)],
                                cluster_order=a.cluster_order(), backends=a.backends)
    fresh.train(tb, tt, tn)
    ce, _ = fresh.evaluate(eb, et, ev)
    if clamp:
        ce = np.minimum(ce, np.log(a.num_clusters))
    assert ra[0] == pytest.approx(ce.mean(), rel=1e-12)
    assert a.written_cells().sum() == 0  # the template memory is untouched


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 200), st.integers(1, 70), st.integers(1, 64), st.integers(0, 2**40))
def test_init_connectivity_matches_reference(neurons, bits, t, seed):
    bits = min(bits, 60)
    a = native.init_connectivity(neurons, bits, t, seed)
    b = ref.init_connectivity(neurons, bits, t, seed)
    assert a.dtype == b.dtype == np.int64
    np.testing.assert_array_equal(a, b)
    assert a.shape == (neurons, bits)
    if neurons * bits >= t:
        assert set(a.ravel().tolist()) == set(range(t))  # guaranteed coverage
    for row in a:
        if len(set(row.tolist())) < len(row):
            assert len(set(row.tolist())) == t  # duplicates only once the row holds every bit


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 2**16 - 1), max_size=60), st.integers(1, 6), st.integers(16, 20))
def test_encode_contexts_matches_reference(tokens, context, bpt):
    tokens = np.asarray(tokens, dtype=np.int64)
    (ba, ta), (bb, tb) = native.encode_contexts(tokens, context, bpt), ref.encode_contexts(tokens, context, bpt)
    np.testing.assert_array_equal(ba, bb)
    np.testing.assert_array_equal(ta, tb)
    assert ba.shape == (max(0, len(tokens) - context), context * bpt)
    if len(tokens) > context:
        # example 0: oldest token first, MSB first
        first = int("".join(str(v) for v in ba[0][:bpt]), 2)
        assert first == tokens[0] and ta[0] == tokens[context]


def test_parse_tier_spec_matches_reference():
    for spec, c in [("100,15,20;400,10,12;rest,5,8", 50257), ("3,1,1", 3), ("1,2,3;rest,1,60", 10)]:
        assert native.parse_tier_spec(spec, c) == ref.parse_tier_spec(spec, c)
    for bad in ["", "1,1", "rest,1,1;1,1,1", "5,1,1", "x,1,1", "3,0,4", "3,1,0", "3,1,61"]:
        for fn in (native.parse_tier_spec, ref.parse_tier_spec):
            with pytest.raises(ValueError):
                fn(bad, 3)
