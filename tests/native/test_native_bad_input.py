"""Bad input gives a clear Python exception (TypeError / ValueError), never a panic or a crash;
a fuzz-style test throws random shapes, dtypes and values at every entry point."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tests.conftest import require_native

native = require_native()  # fails (never skips) without the extension

from tests.oracles.memory_reference import ReferenceMemory  # noqa: E402

T = 12
TIERS = [(3, 2, 6), (2, 1, 14)]
C = 5


@pytest.fixture(params=["native", "reference"])
def mem(request):
    cls = native.TieredMemory if request.param == "native" else ReferenceMemory
    return cls(TIERS, T, seed=1)


def good_bits(b=4):
    return np.zeros((b, T), dtype=np.uint8)


def ids(*v):
    return np.array(v, dtype=np.int64)


@pytest.mark.parametrize("cls", [native.TieredMemory, ReferenceMemory])
@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(tiers=[(3, 2, 0)]), ValueError, "bits"),
    (dict(tiers=[(3, 2, 61)]), ValueError, "bits"),
    (dict(tiers=[(3, 0, 8)]), ValueError, "neurons"),
    (dict(tiers=[(-1, 2, 8)]), ValueError, ">= 0"),
    (dict(tiers=[]), ValueError, "tier"),
    (dict(tiers=[(0, 2, 8)]), ValueError, "clusters"),
    (dict(tiers="3,2,8"), TypeError, "tiers"),
    (dict(total_input_bits=0), ValueError, "total_input_bits"),
    (dict(backends="nope"), ValueError, "backend"),
    (dict(backends=["dense"]), ValueError, "backends"),
    (dict(tiers=[(3, 2, 31)], backends="dense"), ValueError, "lsh"),
    (dict(tiers=[(3, 2, 40)], backends="sparse"), ValueError, "lsh"),
    (dict(cluster_order=ids(0, 1, 2, 3)), ValueError, "cluster_order"),
    (dict(cluster_order=ids(0, 1, 2, 3, 3)), ValueError, "permutation"),
    (dict(cluster_order=ids(0, 1, 2, 3, 5)), ValueError, "cluster_order"),
    (dict(cluster_order=ids(0, 1, 2, 3, -4)), ValueError, "cluster_order"),
    (dict(cluster_order=np.arange(5, dtype=np.int32)), TypeError, "int64"),
    (dict(connectivity=[np.zeros((6, 6), np.int64)]), ValueError, "connectivity"),
    (dict(connectivity=[np.zeros((6, 6), np.int64), np.zeros((2, 13), np.int64)]), ValueError, "shape"),
    (dict(connectivity=[np.full((6, 6), T, np.int64), np.zeros((2, 14), np.int64)]), ValueError, "outside"),
    (dict(connectivity=[np.full((6, 6), -1, np.int64), np.zeros((2, 14), np.int64)]), ValueError, "outside"),
    (dict(connectivity=[np.zeros((6, 6), np.float64), np.zeros((2, 14), np.int64)]), TypeError, "int64"),
])
def test_constructor_rejects(cls, kwargs, exc, words):
    args = dict(tiers=TIERS, total_input_bits=T)
    args.update(kwargs)
    with pytest.raises(exc, match=words):
        cls(args.pop("tiers"), args.pop("total_input_bits"), **args)


def test_train_and_forward_reject(mem):
    bad = [
        (lambda: mem.train(good_bits().astype(np.int64), ids(0, 0, 0, 0)), TypeError, "uint8 or bool"),
        (lambda: mem.train(good_bits()[0], ids(0)), TypeError, "2-D"),
        (lambda: mem.train([[0] * T], ids(0)), TypeError, "numpy"),
        (lambda: mem.train(np.zeros((4, T + 1), np.uint8), ids(0, 0, 0, 0)), ValueError, "total_input_bits"),
        (lambda: mem.train(good_bits() + 2, ids(0, 0, 0, 0)), ValueError, "0 or 1"),
        (lambda: mem.train(good_bits(), ids(0, 0, 0)), ValueError, "length"),
        (lambda: mem.train(good_bits(), ids(0, 0, 0, C)), ValueError, "outside"),
        (lambda: mem.train(good_bits(), ids(0, -1, 0, 0)), ValueError, "outside"),
        (lambda: mem.train(good_bits(), np.zeros(4, np.int32)), TypeError, "int64"),
        (lambda: mem.train(good_bits(), ids(0, 0, 0, 0), ids(-2)), ValueError, "outside"),
        (lambda: mem.train(good_bits(), ids(0, 0, 0, 0), ids(C)), ValueError, "outside"),
        (lambda: mem.train(good_bits(), ids(0, 0, 0, 0), np.zeros((3, 2), np.int64)), ValueError, "rows"),
        (lambda: mem.train(good_bits(), ids(0, 0, 0, 0), np.zeros((4, 2, 1), np.int64)), TypeError, "negatives"),
        (lambda: mem.train(good_bits(), ids(0, 0, 0, 0), np.zeros(2, np.float32)), TypeError, "negatives"),
        (lambda: mem.forward_counts(np.zeros((2, 3), np.uint8)), ValueError, "total_input_bits"),
        (lambda: mem.forward_scores(good_bits(), float("nan")), ValueError, "empty_value"),
        (lambda: mem.evaluate(good_bits(), ids(0)), ValueError, "length"),
        (lambda: mem.evaluate(good_bits(), ids(0, 0, 0, 9)), ValueError, "outside"),
        (lambda: mem.train_addresses([np.zeros((2, 6), np.uint64)], ids(0, 0)), ValueError, "tiers"),
        (lambda: mem.train_addresses([np.zeros((2, 6), np.uint64), np.zeros((2, 3), np.uint64)], ids(0, 0)),
         ValueError, "neurons"),
        (lambda: mem.train_addresses([np.full((2, 6), 64, np.uint64), np.zeros((2, 2), np.uint64)], ids(0, 0)),
         ValueError, "bits"),
        (lambda: mem.train_addresses([np.zeros((2, 6), np.int64), np.zeros((2, 2), np.uint64)], ids(0, 0)),
         TypeError, "uint64"),
        (lambda: mem.train_addresses([np.zeros((2, 6), np.uint64), np.zeros((3, 2), np.uint64)], ids(0, 0)),
         ValueError, "rows"),
        (lambda: mem.train_addresses(np.zeros((2, 6), np.uint64), ids(0, 0)), TypeError, "list"),
        (lambda: mem.connectivity(5), ValueError, "out of range"),
        (lambda: mem.cells(2), ValueError, "out of range"),
        (lambda: mem.set_connectivity(0, np.zeros((6, 5), np.int64)), ValueError, "shape"),
        (lambda: mem.set_connectivity_flat(np.zeros(3, np.int64)), ValueError, "entries"),
        (lambda: mem.evaluate_candidates(np.zeros((2, 3), np.int64), good_bits(), ids(0, 0, 0, 0), None,
                                         good_bits(), ids(0, 0, 0, 0)), ValueError, "connection_count"),
        (lambda: mem.evaluate_candidates(np.full((1, 64), T, np.int64), good_bits(), ids(0, 0, 0, 0), None,
                                         good_bits(), ids(0, 0, 0, 0)), ValueError, "outside"),
        (lambda: mem.evaluate_candidates(np.zeros((1, 64), np.int64), good_bits(), ids(0, 0, 0, 0), None,
                                         good_bits(0), ids()), ValueError, "empty"),
    ]
    before = mem.to_bytes()
    for call, exc, words in bad:
        with pytest.raises(exc, match=words):
            call()
    assert mem.to_bytes() == before  # a rejected call writes nothing


@pytest.mark.parametrize("cls", [native, None])
def test_free_functions_reject(cls):
    from tests.oracles import memory_reference as ref
    mod = cls or ref
    with pytest.raises(ValueError):
        mod.init_connectivity(3, 0, 8, 0)
    with pytest.raises(ValueError):
        mod.init_connectivity(3, 61, 8, 0)
    with pytest.raises(ValueError):
        mod.init_connectivity(-1, 4, 8, 0)
    with pytest.raises(ValueError):
        mod.init_connectivity(3, 4, 0, 0)
    with pytest.raises(ValueError):
        mod.encode_contexts(np.array([1, 2, 3], np.int64), 0, 16)
    with pytest.raises(ValueError):
        mod.encode_contexts(np.array([1, -2, 3], np.int64), 1, 16)
    with pytest.raises(ValueError):
        mod.encode_contexts(np.array([1, 2**16, 3], np.int64), 1, 16)
    with pytest.raises(TypeError):
        mod.encode_contexts(np.array([1, 2, 3], np.float64), 1, 16)


def test_corrupt_bytes_rejected():
    m = native.TieredMemory(TIERS, T, seed=1)
    x = (np.random.default_rng(0).random((30, T)) < 0.5).astype(np.uint8)
    m.train(x, np.arange(30, dtype=np.int64) % C, ids(1))
    data = m.to_bytes()
    for bad in [b"", b"garbage!", data[:-1], data + b"\0", data[:40], b"OVNRAM\x00\x02" + data[8:]]:
        with pytest.raises(ValueError):
            native.TieredMemory.from_bytes(bad)
    rng = np.random.default_rng(5)
    for _ in range(200):  # random byte flips: a clean error or a valid memory, never a crash
        d = bytearray(data)
        for p in rng.integers(0, len(d), 3):
            d[p] = rng.integers(0, 256)
        try:
            native.TieredMemory.from_bytes(bytes(d))
        except (ValueError, MemoryError):
            pass


ARRAYS = st.sampled_from([np.uint8, np.bool_, np.int64, np.int32, np.uint64, np.float32])


@st.composite
def random_array(draw):
    dt = draw(ARRAYS)
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=0, max_size=3)))
    lo, hi = draw(st.sampled_from([(0, 2), (-3, 20), (0, 1 << 62)]))
    a = np.random.default_rng(draw(st.integers(0, 1000))).integers(lo, hi, shape) if shape else np.int64(lo)
    a = np.asarray(a).astype(dt)
    if a.ndim == 2 and a.shape[1] > 1 and draw(st.booleans()):
        a = a[:, ::2]  # non-contiguous view
    return a


@settings(max_examples=150, deadline=None)
@given(random_array(), random_array(), st.one_of(st.none(), random_array()),
       st.sampled_from(["train", "forward_counts", "forward_scores", "evaluate", "train_addresses",
                        "set_connectivity_flat", "encode_contexts", "init_connectivity", "candidates"]))
def test_fuzz_never_panics(x, y, z, method):
    m = native.TieredMemory([(2, 2, 3), (1, 1, 12), (1, 1, 33)], 3, seed=0)
    calls = {
        "train": lambda: m.train(x, y, z),
        "forward_counts": lambda: m.forward_counts(x),
        "forward_scores": lambda: m.forward_scores(x, 0.5),
        "evaluate": lambda: m.evaluate(x, y),
        "train_addresses": lambda: m.train_addresses([x, y, y], z if z is not None else y),
        "set_connectivity_flat": lambda: m.set_connectivity_flat(x),
        "encode_contexts": lambda: native.encode_contexts(x, int(np.asarray(y).size % 5), 3),
        "init_connectivity": lambda: native.init_connectivity(int(np.asarray(x).size), int(np.asarray(y).size), 3, 0),
        "candidates": lambda: m.evaluate_candidates(x, y, z, None, y, z),
    }
    try:
        calls[method]()
    except (TypeError, ValueError):
        pass
    # a BaseException such as pyo3's PanicException would escape and fail the test
