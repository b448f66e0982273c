"""numpy reference for the native RAM-neuron memory (``native.TieredMemory``): the oracle of
tests/native and of the RAM-LM workload's ``backend='reference'`` test.

Same API and the same semantics as native/API.md, written for clarity rather than speed (it is
the baseline of tests/benchmarks/bench_native.py). Tests check that both produce the same cells,
counts, scores and saved bytes. It lives with the tests, not in the workload package: production
runs use the native memory only.

Storage: a tier is either a dense ``int8 [neurons, 2^bits]`` array of public cell codes (used
when it is small) or two parallel sorted arrays of keys ``neuron << key_bits | address`` and
states. Which one is used is an internal detail; the ``backend`` of a tier only decides the save
format and, for ``lsh``, the address folding, exactly as in the native memory.
"""
from __future__ import annotations

import math
import os
import struct
from typing import Sequence

import numpy as np

FALSE, TRUE, EMPTY = 0, 1, 2
MAX_BITS = 60
SPARSE_THRESHOLD_BITS = 10
LSH_THRESHOLD_BITS = 30
MAX_UNFOLDED_BITS = 30
LSH_FOLD_BITS = 20
MAX_INPUT_BITS = 1 << 24
MAGIC = b"OVNRAM\x00\x01"
_BACKEND_CODES = {"dense": 0, "sparse": 1, "lsh": 2}
_MASK64 = (1 << 64) - 1
# dense int8 arrays up to this many cells per tier; keyed storage above
_DENSE_REF_LIMIT = 1 << 27
# bound on [rows x neurons] temporaries
_BLOCK_CELLS = 1 << 22


# ---- free functions ---------------------------------------------------------------------------

class SplitMix64:
    """SplitMix64, bit-identical to native/src/rng.rs."""

    def __init__(self, seed: int):
        self.state = seed & _MASK64

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return (self.next_u64() * n) >> 64

    def permutation(self, n: int) -> list[int]:
        p = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            p[i], p[j] = p[j], p[i]
        return p


def init_connectivity(neurons: int, bits: int, total_input_bits: int, seed: int = 0) -> np.ndarray:
    """"Guaranteed coverage" connectivity, identical to the native one for a seed (see
    docs/studies/ramlm.md, 'Architecture')."""
    neurons, bits, t = int(neurons), int(bits), int(total_input_bits)
    if neurons < 0:
        raise ValueError(f"neurons must be >= 0, got {neurons}")
    if not 1 <= t <= MAX_INPUT_BITS:
        raise ValueError(f"total_input_bits must be in 1..={MAX_INPUT_BITS}, got {t}")
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in 1..={MAX_BITS}, got {bits}")
    slots = neurons * bits
    if bits == t:
        return np.tile(np.arange(t, dtype=np.int64), (neurons, 1))
    rng = SplitMix64(seed)
    conn = [0] * slots
    first = rng.permutation(t)
    head = min(slots, t)
    conn[:head] = first[:head]
    pool: list[int] = []
    pos = 0
    slot = head
    while slot < slots:
        row_start = (slot // bits) * bits
        in_row = set(conn[row_start:slot])
        while slot < row_start + bits:
            if pos == len(pool):
                pool = rng.permutation(t)
                pos = 0
            v = pool[pos]
            pos += 1
            if v in in_row and len(in_row) < t:
                continue
            in_row.add(v)
            conn[slot] = v
            slot += 1
    return np.asarray(conn, dtype=np.int64).reshape(neurons, bits)


def encode_contexts(tokens: np.ndarray, context: int, bits_per_token: int) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows: (bits uint8 [L-N, N*bpt] oldest token first, MSB first; targets int64 [L-N])."""
    tokens = _int64_1d(tokens, "tokens")
    context, bpt = int(context), int(bits_per_token)
    if context < 1:
        raise ValueError("context must be at least 1")
    if not 1 <= bpt <= 62:
        raise ValueError(f"bits_per_token must be in 1..=62, got {bpt}")
    if tokens.size and (tokens.min() < 0 or (tokens.max() >> bpt) != 0):
        raise ValueError(f"token ids must be non-negative and fit in {bpt} bits")
    n = max(0, len(tokens) - context)
    idx = np.arange(n)[:, None] + np.arange(context)[None, :]
    win = tokens[idx]                                                # [n, N]
    shifts = np.arange(bpt - 1, -1, -1, dtype=np.int64)
    bits = ((win[:, :, None] >> shifts) & 1).astype(np.uint8).reshape(n, context * bpt)
    return bits, tokens[context:].copy() if len(tokens) > context else np.zeros(0, np.int64)


def parse_tier_spec(spec: str, num_clusters: int) -> list[tuple[int, int, int]]:
    """``"100,15,20;400,10,12;rest,5,8"`` -> [(count, neurons, bits), ...]."""
    parts = [p.strip() for p in spec.split(";") if p.strip()]
    if not parts:
        raise ValueError("empty tier spec")
    out, used = [], 0
    for i, part in enumerate(parts):
        f = [x.strip() for x in part.split(",")]
        if len(f) != 3:
            raise ValueError(f"tier {i} ({part!r}): expected 'count,neurons,bits'")
        if f[0].lower() == "rest":
            if i + 1 != len(parts):
                raise ValueError(f"tier {i}: 'rest' is only allowed in the last tier")
            count = num_clusters - used
            if count < 0:
                raise ValueError(f"tier counts ({used}) exceed the number of clusters {num_clusters}")
        else:
            count = _parse_nonneg(f[0], i, part, "count")
        neurons = _parse_nonneg(f[1], i, part, "neurons")
        bits = _parse_nonneg(f[2], i, part, "bits")
        _check_tier(i, count, neurons, bits)
        used += count
        out.append((count, neurons, bits))
    if used != num_clusters:
        raise ValueError(f"tier counts sum to {used} but there are {num_clusters} clusters (use 'rest' for the remainder)")
    return out


def resolve_backend(name: str, bits: int) -> str:
    if name == "auto":
        b = "dense" if bits <= SPARSE_THRESHOLD_BITS else "sparse" if bits <= LSH_THRESHOLD_BITS else "lsh"
    elif name in ("dense", "sparse", "lsh"):
        b = name
    else:
        raise ValueError(f"unknown backend {name!r}; expected 'auto', 'dense', 'sparse' or 'lsh'")
    if b != "lsh" and bits > MAX_UNFOLDED_BITS:
        raise ValueError(f"backend '{b}' supports at most {MAX_UNFOLDED_BITS} bits per neuron, got {bits}; use 'lsh' or 'auto'")
    return b


def lsh_fold(addr: np.ndarray, bits: int) -> np.ndarray:
    """XOR of successive 20-bit chunks, lowest first (identity for bits <= 20)."""
    addr = np.asarray(addr, dtype=np.uint64)
    if bits <= LSH_FOLD_BITS:
        return addr
    mask = np.uint64((1 << LSH_FOLD_BITS) - 1)
    out = np.zeros_like(addr)
    a = addr.copy()
    for _ in range(math.ceil(bits / LSH_FOLD_BITS)):
        out ^= a & mask
        a >>= np.uint64(LSH_FOLD_BITS)
    return out


# ---- argument checks --------------------------------------------------------------------------

def _parse_nonneg(s, i, part, what):
    if not s.isdigit():
        raise ValueError(f"tier {i} ({part!r}): {what} {s!r} is not a non-negative integer")
    return int(s)


def _check_tier(i: int, count: int, neurons: int, bits: int) -> None:
    if count < 0:
        raise ValueError(f"tiers[{i}] count must be >= 0, got {count}")
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"tier {i}: bits must be in 1..={MAX_BITS}, got {bits}")
    if not 1 <= neurons <= 65535:
        raise ValueError(f"tier {i}: neurons per cluster must be in 1..=65535, got {neurons}")


def _describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"a numpy array of dtype {x.dtype.str} with shape {x.shape}"
    return f"an object of type {type(x).__name__}"


def _typed(x, name: str, dtypes: tuple, ndim: int, want: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype not in dtypes or x.ndim != ndim:
        raise TypeError(f"{name} must be {want}, got {_describe(x)}")
    return np.ascontiguousarray(x)


def _int64_1d(x, name: str) -> np.ndarray:
    return _typed(x, name, (np.dtype(np.int64),), 1, "a 1-D numpy array of dtype int64")


def _bits(x, name: str, t: int) -> np.ndarray:
    x = _typed(x, name, (np.dtype(np.uint8), np.dtype(np.bool_)), 2,
               "a 2-D numpy array of dtype uint8 or bool (one row of 0/1 bits per example)")
    x = x.view(np.uint8)
    if x.shape[1] != t:
        raise ValueError(f"{name} has {x.shape[1]} columns but the memory has total_input_bits = {t}")
    if x.size and x.max() > 1:
        raise ValueError(f"{name}: bits must be 0 or 1")
    return x


def _check_ids(name: str, ids: np.ndarray, c: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= c):
        bad = ids[(ids < 0) | (ids >= c)][0]
        raise ValueError(f"{name} contains {bad}, outside [0, {c})")


# ---- the memory -------------------------------------------------------------------------------

class _Tier:
    def __init__(self, count: int, neurons: int, bits: int, start: int, conn: np.ndarray, backend: str):
        self.count, self.neurons, self.bits, self.start = count, neurons, bits, start
        self.conn = conn                                           # int64 [count*neurons, bits]
        self.backend = backend
        self.key_bits = min(bits, LSH_FOLD_BITS) if backend == "lsh" else bits
        self.total = count * neurons
        self.use_array = self.total << self.key_bits <= _DENSE_REF_LIMIT
        self.reset()

    def reset(self) -> None:
        if self.use_array:
            self.cells = np.full((self.total, 1 << self.key_bits), EMPTY, dtype=np.int8)
        else:
            self.keys = np.zeros(0, dtype=np.int64)
            self.states = np.zeros(0, dtype=np.int8)

    def stored(self, addr: np.ndarray) -> np.ndarray:
        return lsh_fold(addr, self.bits).astype(np.int64) if self.backend == "lsh" else addr.astype(np.int64)

    def write(self, pos_j, pos_a, neg_j, neg_a) -> None:
        """TRUE at (pos_j, pos_a); FALSE at (neg_j, neg_a) where still EMPTY."""
        pa, na = self.stored(pos_a), self.stored(neg_a)
        if self.use_array:
            self.cells[pos_j, pa] = TRUE
            cur = self.cells[neg_j, na]
            keep = cur == EMPTY
            self.cells[neg_j[keep], na[keep]] = FALSE
            return
        kb = self.key_bits
        tk = np.unique((pos_j.astype(np.int64) << kb) | pa)
        nk = np.unique((neg_j.astype(np.int64) << kb) | na)
        old_true = self.keys[self.states == TRUE]
        keys = np.union1d(np.union1d(self.keys, tk), nk)
        is_true = np.isin(keys, tk, assume_unique=True) | np.isin(keys, old_true, assume_unique=True)
        self.keys = keys
        self.states = np.where(is_true, TRUE, FALSE).astype(np.int8)

    def read(self, addr: np.ndarray) -> np.ndarray:
        """States for ``addr [rows, total]`` (neuron = column)."""
        a = self.stored(addr)
        j = np.arange(self.total, dtype=np.int64)[None, :]
        if self.use_array:
            return self.cells[j, a]
        keys = (j << self.key_bits) | a
        if self.keys.size == 0:
            return np.full(a.shape, EMPTY, dtype=np.int8)
        idx = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
        return np.where(self.keys[idx] == keys, self.states[idx], EMPTY).astype(np.int8)

    def cell_list(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(neuron, stored address, public state) of written cells, sorted."""
        if self.use_array:
            j, a = np.nonzero(self.cells != EMPTY)
            return j.astype(np.int64), a.astype(np.uint64), self.cells[j, a].astype(np.uint8)
        return ((self.keys >> self.key_bits).astype(np.int64),
                (self.keys & ((1 << self.key_bits) - 1)).astype(np.uint64), self.states.astype(np.uint8))

    def set_cells(self, j: np.ndarray, a: np.ndarray, s: np.ndarray) -> None:
        if self.use_array:
            self.cells[j, a.astype(np.int64)] = s
        else:
            keys = (j.astype(np.int64) << self.key_bits) | a.astype(np.int64)
            order = np.argsort(keys, kind="stable")
            self.keys, self.states = keys[order], s.astype(np.int8)[order]

    def nbytes(self) -> int:
        return self.conn.nbytes + (self.cells.nbytes if self.use_array else self.keys.nbytes + self.states.nbytes)


class ReferenceMemory:
    """Pure numpy twin of ``native.TieredMemory`` (see native/API.md)."""

    def __init__(self, tiers: Sequence[tuple[int, int, int]], total_input_bits: int, connectivity=None,
                 cluster_order=None, backends="auto", seed: int = 0):
        try:
            specs = [tuple(int(v) for v in t) for t in tiers]
            if any(len(t) != 3 for t in specs):
                raise ValueError
        except (TypeError, ValueError):
            raise TypeError("tiers must be a list of (count, neurons_per_cluster, bits) tuples of ints") from None
        if not specs:
            raise ValueError("at least one tier is required")
        for i, (c, n, b) in enumerate(specs):
            _check_tier(i, c, n, b)
        t = int(total_input_bits)
        if not 1 <= t <= MAX_INPUT_BITS:
            raise ValueError(f"total_input_bits must be in 1..={MAX_INPUT_BITS}, got {t}")
        c_total = sum(c for c, _, _ in specs)
        if c_total == 0:
            raise ValueError("number of clusters must be in 1..2^32, got 0")
        if backends is None:
            backends = "auto"
        names = [backends] * len(specs) if isinstance(backends, str) else list(backends)
        if len(names) != len(specs):
            raise ValueError(f"{len(names)} backends given for {len(specs)} tiers")
        if cluster_order is None:
            order = np.arange(c_total, dtype=np.int64)
        else:
            order = _int64_1d(cluster_order, "cluster_order").copy()
            if len(order) != c_total:
                raise ValueError(f"cluster_order has length {len(order)} but the tiers cover {c_total} clusters")
            _check_ids("cluster_order", order, c_total)
            if len(np.unique(order)) != c_total:
                raise ValueError("cluster_order is not a permutation")
        if connectivity is not None and len(connectivity) != len(specs):
            raise ValueError(f"connectivity: {len(connectivity)} arrays given for {len(specs)} tiers")
        self._t = t
        self._c = c_total
        self._order = order
        self._logical = np.empty(c_total, dtype=np.int64)
        self._logical[order] = np.arange(c_total)
        self._tiers: list[_Tier] = []
        self._token_tier = np.empty(c_total, dtype=np.int64)
        start = 0
        for i, (count, n, b) in enumerate(specs):
            backend = resolve_backend(names[i], b)
            if connectivity is None:
                conn = init_connectivity(count * n, b, t, seed + i)
            else:
                conn = self._check_conn(i, connectivity[i], count * n, b)
            self._token_tier[order[start:start + count]] = i
            self._tiers.append(_Tier(count, n, b, start, conn, backend))
            start += count

    def _check_conn(self, i, conn, nt, b) -> np.ndarray:
        conn = _typed(conn, f"connectivity[{i}]", (np.dtype(np.int64),), 2,
                      "a 2-D numpy array of dtype int64 [neurons_in_tier, bits]")
        if conn.shape != (nt, b):
            raise ValueError(f"connectivity[{i}] has shape {conn.shape}, tier {i} needs ({nt}, {b})")
        if conn.size and (conn.min() < 0 or conn.max() >= self._t):
            raise ValueError(f"connectivity of tier {i} contains an input bit outside [0, {self._t}) (total_input_bits)")
        return conn.copy()

    # ---- properties ---------------------------------------------------------------------------

    num_clusters = property(lambda self: self._c)
    total_input_bits = property(lambda self: self._t)
    num_tiers = property(lambda self: len(self._tiers))
    tiers = property(lambda self: [(t.count, t.neurons, t.bits) for t in self._tiers])
    backends = property(lambda self: [t.backend for t in self._tiers])
    num_neurons = property(lambda self: sum(t.total for t in self._tiers))
    connection_count = property(lambda self: sum(t.conn.size for t in self._tiers))
    heap_bytes = property(lambda self: sum(t.nbytes() for t in self._tiers))

    def __repr__(self) -> str:
        inner = "; ".join(f"{t.count},{t.neurons},{t.bits}:{t.backend}" for t in self._tiers)
        return f"ReferenceMemory([{inner}], total_input_bits={self._t})"

    # ---- addresses ----------------------------------------------------------------------------

    @staticmethod
    def _tier_addresses(tier: _Tier, bits: np.ndarray) -> np.ndarray:
        """uint64 [rows, neurons]: first connection is the MSB."""
        a = np.zeros((bits.shape[0], tier.total), dtype=np.uint64)
        for i in range(tier.bits):
            a <<= np.uint64(1)
            a |= bits[:, tier.conn[:, i]]
        return a

    def addresses(self, bits) -> list[np.ndarray]:
        bits = _bits(bits, "bits", self._t)
        return [self._tier_addresses(t, bits) for t in self._tiers]

    def _address_list(self, addresses) -> tuple[list[np.ndarray], int]:
        if not isinstance(addresses, (list, tuple)):
            raise TypeError(f"addresses must be a list with one 2-D uint64 numpy array per tier, got {_describe(addresses)}")
        if len(addresses) != len(self._tiers):
            raise ValueError(f"addresses: {len(addresses)} arrays given for {len(self._tiers)} tiers")
        out, rows = [], None
        for i, (a, t) in enumerate(zip(addresses, self._tiers)):
            a = _typed(a, f"addresses[{i}]", (np.dtype(np.uint64),), 2, "a 2-D numpy array of dtype uint64")
            if a.shape[1] != t.total:
                raise ValueError(f"addresses[{i}] has {a.shape[1]} columns, tier {i} has {t.total} neurons")
            if rows is None:
                rows = a.shape[0]
            elif rows != a.shape[0]:
                raise ValueError("addresses: arrays have different numbers of rows")
            if a.size and int(a.max()) >> t.bits:
                raise ValueError(f"address {int(a.max())} in tier {i} does not fit in {t.bits} bits")
            out.append(a)
        return out, rows or 0

    # ---- training -----------------------------------------------------------------------------

    def _targets(self, targets, b: int, name: str = "targets") -> np.ndarray:
        targets = _int64_1d(targets, name)
        if len(targets) != b:
            raise ValueError(f"{name} has length {len(targets)} but there are {b} examples")
        _check_ids(name, targets, self._c)
        return targets

    def _negatives(self, negatives, b: int, name: str = "negatives"):
        if negatives is None:
            return None
        if not isinstance(negatives, np.ndarray) or negatives.dtype != np.int64 or negatives.ndim not in (1, 2):
            raise TypeError(f"{name} must be None or a numpy array of dtype int64, 1-D (shared by all examples) "
                            f"or 2-D [B, k], got {_describe(negatives)}")
        if negatives.ndim == 2 and negatives.shape[0] != b:
            raise ValueError(f"{name} has {negatives.shape[0]} rows for {b} examples")
        _check_ids(name, negatives, self._c)
        return np.ascontiguousarray(negatives)

    def train(self, bits, targets, negatives=None) -> None:
        bits = _bits(bits, "bits", self._t)
        targets = self._targets(targets, bits.shape[0])
        negatives = self._negatives(negatives, bits.shape[0])

        def addr_of(ti, e, j):
            tier = self._tiers[ti]
            x = bits[e[:, None], tier.conn[j]]                           # [m, bits]
            a = np.zeros(len(e), dtype=np.uint64)
            for i in range(tier.bits):
                a <<= np.uint64(1)
                a |= x[:, i]
            return a

        self._train(addr_of, bits.shape[0], targets, negatives)

    def train_addresses(self, addresses, targets, negatives=None) -> None:
        addrs, b = self._address_list(addresses)
        targets = self._targets(targets, b)
        negatives = self._negatives(negatives, b)
        self._train(lambda ti, e, j: addrs[ti][e, j], b, targets, negatives)

    def _train(self, addr_of, b: int, targets: np.ndarray, negatives) -> None:
        """``addr_of(tier, examples, neurons)`` gives the addresses of (example, neuron) pairs."""
        tl = self._logical[targets]
        for ti, tier in enumerate(self._tiers):
            n = tier.neurons
            lo, hi = tier.start, tier.start + tier.count
            # (example, local cluster) pairs: positives, then negatives
            pe = np.nonzero((tl >= lo) & (tl < hi))[0]
            pc = tl[pe] - lo
            if negatives is None:
                ne, nc = np.zeros(0, np.int64), np.zeros(0, np.int64)
            elif negatives.ndim == 1:
                lc = np.unique(self._logical[negatives])
                lc = lc[(lc >= lo) & (lc < hi)] - lo
                ne, nc = np.repeat(np.arange(b), len(lc)), np.tile(lc, b)
            else:
                ln = self._logical[negatives]
                e_idx, k_idx = np.nonzero((ln >= lo) & (ln < hi))
                ne, nc = e_idx, ln[e_idx, k_idx] - lo
            # every neuron of the cluster; in blocks to bound the temporaries. Writing block by
            # block gives the same memory as one write (the rule is order-independent).
            step = max(1, _BLOCK_CELLS // n)
            empty_j, empty_a = np.zeros(0, np.int64), np.zeros(0, np.uint64)
            for e_arr, c_arr, positive in ((pe, pc, True), (ne, nc, False)):
                for p0 in range(0, len(e_arr), step):
                    e = np.repeat(e_arr[p0:p0 + step], n)
                    j = (c_arr[p0:p0 + step][:, None] * n + np.arange(n)[None, :]).ravel()
                    a = addr_of(ti, e, j)
                    if positive:
                        tier.write(j, a, empty_j, empty_a)
                    else:
                        tier.write(empty_j, empty_a, j, a)

    # ---- forward ------------------------------------------------------------------------------

    def _counts(self, addr_of, b: int) -> tuple[np.ndarray, np.ndarray]:
        t_out = np.zeros((b, self._c), dtype=np.uint16)
        e_out = np.zeros((b, self._c), dtype=np.uint16)
        for ti, tier in enumerate(self._tiers):
            if tier.count == 0:
                continue
            cols = self._order[tier.start:tier.start + tier.count]
            rows_per_block = max(1, _BLOCK_CELLS // max(1, tier.total))
            for r0 in range(0, b, rows_per_block):
                r1 = min(b, r0 + rows_per_block)
                st = tier.read(addr_of(ti, np.arange(r0, r1))).reshape(r1 - r0, tier.count, tier.neurons)
                t_out[r0:r1, cols] = (st == TRUE).sum(axis=2)
                e_out[r0:r1, cols] = (st == EMPTY).sum(axis=2)
        return t_out, e_out

    def forward_counts(self, bits) -> tuple[np.ndarray, np.ndarray]:
        bits = _bits(bits, "bits", self._t)
        return self._counts(lambda ti, rows: self._tier_addresses(self._tiers[ti], bits[rows]), bits.shape[0])

    def forward_counts_addresses(self, addresses) -> tuple[np.ndarray, np.ndarray]:
        addrs, b = self._address_list(addresses)
        return self._counts(lambda ti, rows: addrs[ti][rows], b)

    def _neurons_of_token(self) -> np.ndarray:
        return np.array([t.neurons for t in self._tiers], dtype=np.float64)[self._token_tier]

    @staticmethod
    def _empty_value(v) -> float:
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"empty_value must be finite, got {v}")
        return v

    def _scores64(self, t: np.ndarray, e: np.ndarray, ev: float) -> np.ndarray:
        return (t.astype(np.float64) + ev * e.astype(np.float64)) / self._neurons_of_token()[None, :]

    def forward_scores(self, bits, empty_value: float = 0.0) -> np.ndarray:
        ev = self._empty_value(empty_value)
        t, e = self.forward_counts(bits)
        return self._scores64(t, e, ev).astype(np.float32)

    def evaluate(self, bits, targets, empty_value: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        bits = _bits(bits, "bits", self._t)
        targets = self._targets(targets, bits.shape[0])
        ev = self._empty_value(empty_value)
        return self._evaluate(bits, targets, ev)

    def _evaluate(self, bits, targets, ev) -> tuple[np.ndarray, np.ndarray]:
        b = bits.shape[0]
        ce = np.zeros(b, dtype=np.float64)
        pred = np.zeros(b, dtype=np.int64)
        step = max(1, _BLOCK_CELLS // self._c)
        for r0 in range(0, b, step):
            r1 = min(b, r0 + step)
            t, e = self.forward_counts(bits[r0:r1])
            s = self._scores64(t, e, ev)
            m = s.max(axis=1)
            # cumsum adds in logical (cluster_order) order, like the native loop
            total = np.cumsum(np.exp(s - m[:, None])[:, self._order], axis=1)[:, -1]
            ce[r0:r1] = m + np.log(total) - s[np.arange(r1 - r0), targets[r0:r1]]
            pred[r0:r1] = np.argmax(s, axis=1)
        return ce, pred

    # ---- state --------------------------------------------------------------------------------

    def reset(self) -> None:
        for t in self._tiers:
            t.reset()

    def written_cells(self) -> np.ndarray:
        return np.array([len(t.cell_list()[0]) for t in self._tiers], dtype=np.int64)

    def true_cells(self) -> np.ndarray:
        return np.array([int((t.cell_list()[2] == TRUE).sum()) for t in self._tiers], dtype=np.int64)

    def cells(self, tier: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._tier(tier).cell_list()

    def _tier(self, tier: int) -> _Tier:
        if not 0 <= int(tier) < len(self._tiers):
            raise ValueError(f"tier {tier} out of range (there are {len(self._tiers)})")
        return self._tiers[int(tier)]

    def connectivity(self, tier: int) -> np.ndarray:
        return self._tier(tier).conn.copy()

    def set_connectivity(self, tier: int, conn) -> None:
        t = self._tier(tier)
        t.conn = self._check_conn(int(tier), conn, t.total, t.bits)
        t.reset()

    def connectivity_flat(self) -> np.ndarray:
        return np.concatenate([t.conn.ravel() for t in self._tiers]).astype(np.int64)

    def set_connectivity_flat(self, flat) -> None:
        flat = _int64_1d(flat, "flat")
        if flat.size != self.connection_count:
            raise ValueError(f"flat connectivity has {flat.size} entries, expected {self.connection_count}")
        parts, off = [], 0
        for i, t in enumerate(self._tiers):
            parts.append(self._check_conn(i, flat[off:off + t.conn.size].reshape(t.total, t.bits), t.total, t.bits))
            off += t.conn.size
        for t, c in zip(self._tiers, parts):
            t.conn = c
        self.reset()

    def cluster_order(self) -> np.ndarray:
        return self._order.copy()

    def cluster_tiers(self) -> np.ndarray:
        return self._token_tier.copy()

    # ---- candidates ---------------------------------------------------------------------------

    def evaluate_candidates(self, candidates, train_bits, train_targets, train_negatives, eval_bits, eval_targets,
                            empty_value: float = 0.0, clamp: bool = True) -> np.ndarray:
        candidates = _typed(candidates, "candidates", (np.dtype(np.int64),), 2,
                            "a 2-D numpy array of dtype int64 [K, connection_count]")
        if candidates.shape[1] != self.connection_count:
            raise ValueError(f"candidates have {candidates.shape[1]} columns but connection_count is {self.connection_count}")
        tb = _bits(train_bits, "train_bits", self._t)
        tt = self._targets(train_targets, tb.shape[0], "train_targets")
        tn = self._negatives(train_negatives, tb.shape[0], "train_negatives")
        eb = _bits(eval_bits, "eval_bits", self._t)
        et = self._targets(eval_targets, eb.shape[0], "eval_targets")
        ev = self._empty_value(empty_value)
        if eb.shape[0] == 0:
            raise ValueError("eval set is empty")
        out = np.zeros(candidates.shape[0], dtype=np.float64)
        cap = math.log(self._c)
        for k, genome in enumerate(candidates):
            conns, off = [], 0
            for t in self._tiers:
                conns.append(genome[off:off + t.conn.size].reshape(t.total, t.bits).copy())
                off += t.conn.size
            m = ReferenceMemory(self.tiers, self._t, connectivity=conns, cluster_order=self._order,
                                backends=self.backends)
            m.train(tb, tt, tn)
            ce, _ = m._evaluate(eb, et, ev)
            if clamp:
                ce = np.minimum(ce, cap)
            out[k] = np.cumsum(ce)[-1] / len(ce)
        return out

    # ---- save / load --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        out = [MAGIC, struct.pack("<QQQ", self._t, self._c, len(self._tiers)), self._order.astype("<i8").tobytes()]
        for t in self._tiers:
            out.append(struct.pack("<QQQB", t.count, t.neurons, t.bits, _BACKEND_CODES[t.backend]))
        for t in self._tiers:
            out.append(t.conn.astype("<i8").tobytes())
        for t in self._tiers:
            j, a, s = t.cell_list()
            if t.backend == "dense":
                cells = 1 << t.bits
                padded = -(-cells // 4) * 4
                codes = np.full((t.total, padded), EMPTY, dtype=np.uint8)
                codes[:, cells:] = 0                                  # unused trailing fields
                codes[j, a.astype(np.int64)] = s
                q = codes.reshape(t.total, padded // 4, 4)
                packed = q[..., 0] | (q[..., 1] << 2) | (q[..., 2] << 4) | (q[..., 3] << 6)
                out.append(packed.astype(np.uint8).tobytes())
            else:
                counts = np.bincount(j, minlength=t.total)
                starts = np.concatenate([[0], np.cumsum(counts)])
                ent = (a << np.uint64(1)) | (s == TRUE).astype(np.uint64)
                for jj in range(t.total):
                    out.append(struct.pack("<Q", int(counts[jj])))
                    out.append(ent[starts[jj]:starts[jj + 1]].astype("<u8").tobytes())
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> "ReferenceMemory":
        data = bytes(data)
        if data[:8] != MAGIC:
            raise ValueError("not a memory file (bad magic or unsupported format version)")
        pos = 8

        def take(n):
            nonlocal pos
            if len(data) - pos < n:
                raise ValueError("memory data is truncated")
            pos += n
            return data[pos - n:pos]

        t, c, nt = struct.unpack("<QQQ", take(24))
        order = np.frombuffer(take(8 * c), dtype="<i8").astype(np.int64)
        specs, names = [], []
        for _ in range(nt):
            cnt, n, b, code = struct.unpack("<QQQB", take(25))
            specs.append((cnt, n, b))
            names.append({v: k for k, v in _BACKEND_CODES.items()}[code])
        conns = [np.frombuffer(take(8 * cnt * n * b), dtype="<i8").astype(np.int64).reshape(cnt * n, b)
                 for cnt, n, b in specs]
        m = cls(specs, t, connectivity=conns, cluster_order=order, backends=names)
        for tier in m._tiers:
            if tier.backend == "dense":
                cells = 1 << tier.bits
                nb = -(-cells // 4)
                raw = np.frombuffer(take(nb * tier.total), dtype=np.uint8).reshape(tier.total, nb)
                codes = np.stack([(raw >> s) & 3 for s in (0, 2, 4, 6)], axis=-1).reshape(tier.total, nb * 4)[:, :cells]
                j, a = np.nonzero(codes != EMPTY)
                tier.set_cells(j, a.astype(np.uint64), codes[j, a])
            else:
                js, ents = [], []
                for jj in range(tier.total):
                    (k,) = struct.unpack("<Q", take(8))
                    e = np.frombuffer(take(8 * k), dtype="<u8")
                    js.append(np.full(k, jj, dtype=np.int64))
                    ents.append(e)
                e = np.concatenate(ents) if ents else np.zeros(0, np.uint64)
                j = np.concatenate(js) if js else np.zeros(0, np.int64)
                tier.set_cells(j, e >> np.uint64(1), (e & np.uint64(1)).astype(np.int8))
        if pos != len(data):
            raise ValueError(f"memory data has {len(data) - pos} trailing bytes")
        return m

    def save(self, path) -> None:
        with open(os.fspath(path), "wb") as f:
            f.write(self.to_bytes())

    @classmethod
    def load(cls, path) -> "ReferenceMemory":
        with open(os.fspath(path), "rb") as f:
            return cls.from_bytes(f.read())
