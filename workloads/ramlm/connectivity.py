"""Seeded "guaranteed coverage" connectivity (spec §3), one [neurons, bits] matrix per tier.

1. The first ``total_input_bits`` slots (row-major over neuron, slot) hold a random permutation
   of the input bits, so every input bit is read by at least one neuron of the tier.
2. Every other slot is drawn at random without repeating a bit inside its row; a row repeats a bit
   only once it already holds every input bit (bits > total_input_bits).
3. If bits == total_input_bits, every neuron reads the identity.

The original drew the extra slots from a stream of permutations; drawing each row's fresh values
directly gives the same guarantees and vectorises. Tier i is seeded with ``seed + i``.
"""
from __future__ import annotations

import numpy as np

from workloads.ramlm.tiers import Tier


def init_tier(neurons: int, bits: int, total_input_bits: int, rng: np.random.Generator) -> np.ndarray:
    t = total_input_bits
    conn = np.empty((neurons, bits), dtype=np.int64)
    if bits == t:
        conn[:] = np.arange(t)
        return conn
    flat = conn.reshape(-1)
    n_cover = min(t, flat.size)
    flat[:n_cover] = rng.permutation(t)[:n_cover]
    first_free_row, first_free_col = divmod(n_cover, bits)
    if first_free_col:  # the row that straddles the coverage block: complete it without repeats
        row = conn[first_free_row]
        used = set(int(v) for v in row[:first_free_col])
        fill = _distinct_fill(bits - first_free_col, t, used, rng)
        row[first_free_col:] = fill
        first_free_row += 1
    rows = neurons - first_free_row
    if rows > 0:
        conn[first_free_row:] = _random_rows(rows, bits, t, rng)
    return conn


def _distinct_fill(k: int, t: int, used: set[int], rng: np.random.Generator) -> np.ndarray:
    free = np.array([v for v in range(t) if v not in used], dtype=np.int64)
    if k <= free.size:
        return rng.permutation(free)[:k]
    # the row already will contain every bit: the rest may repeat
    return np.concatenate([rng.permutation(free), rng.integers(0, t, size=k - free.size)])


def _random_rows(rows: int, bits: int, t: int, rng: np.random.Generator, chunk: int = 8192) -> np.ndarray:
    out = np.empty((rows, bits), dtype=np.int64)
    distinct = min(bits, t)
    for s in range(0, rows, chunk):
        e = min(rows, s + chunk)
        keys = rng.random((e - s, t), dtype=np.float32)
        # argpartition of random keys = the first `distinct` values of a random permutation per row
        out[s:e, :distinct] = np.argpartition(keys, distinct - 1, axis=1)[:, :distinct] if distinct < t else np.argsort(keys, axis=1)
        if distinct < bits:
            out[s:e, distinct:] = rng.integers(0, t, size=(e - s, bits - distinct))
    # argpartition leaves the chosen values in an arbitrary but data-dependent order; shuffle each row
    perm = rng.random(out[:, :distinct].shape).argsort(axis=1)
    out[:, :distinct] = np.take_along_axis(out[:, :distinct], perm, axis=1)
    return out


def init_connectivity(tiers: list[Tier], total_input_bits: int, seed: int) -> list[np.ndarray]:
    """One [count * neurons, bits] int64 matrix per tier; neuron rows are cluster-major
    (logical cluster 0's neurons first)."""
    return [init_tier(t.total_neurons, t.bits, total_input_bits, np.random.default_rng(seed + t.index)) for t in tiers]
