"""Tier specifications, the one place they are parsed, and the token <-> cluster mapping. See
docs/studies/ramlm.md, 'Tiered architecture'.

The memory stores clusters in *logical* order: tier 0's clusters first. ``cluster_order[L]`` is
the token id of logical position L. By default that order is by descending train frequency
(intended semantics); the legacy order ``token_id`` is the identity, which reproduces the
original's sparse-tier bug where tier 0 was token ids 0..count_0-1.

One :class:`ClusterMap` is built per run and used for training targets, negatives, scoring and
optimisation alike, so the mapping cannot disagree between phases. Per-tier metrics always bucket
targets by train-frequency rank, as the original's per-tier tables did; with the legacy order
that differs from where a token is stored (``ClusterMap.metric_tier_of_token``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class TierSpecError(ValueError):
    """A tier string that cannot describe a partition of the vocabulary."""


@dataclass(frozen=True)
class Tier:
    index: int
    start: int        # first logical cluster position
    count: int        # clusters in this tier
    neurons: int      # neurons per cluster
    bits: int         # bits (connections) per neuron

    @property
    def end(self) -> int:
        return self.start + self.count

    @property
    def total_neurons(self) -> int:
        return self.count * self.neurons


MAX_BITS = 60


def parse_tier_fields(spec: str) -> list[tuple[int | None, int, int]]:
    """The vocabulary-independent part of a tier spec: ``(count, neurons, bits)`` per tier, count
    None for ``rest``. Checks everything that does not need V, so a config can be checked before
    the data is loaded."""
    if not isinstance(spec, str) or not spec.strip():
        raise TierSpecError("tier spec is empty; expected e.g. '100,15,20;400,10,12;rest,5,8'")
    parts = [p.strip() for p in spec.strip().strip(";").split(";")]
    out: list[tuple[int | None, int, int]] = []
    for i, part in enumerate(parts):
        fields = [f.strip() for f in part.split(",")]
        where = f"tier {i} ('{part}') of '{spec}'"
        if len(fields) != 3:
            raise TierSpecError(f"{where}: expected 3 fields count,neurons,bits, got {len(fields)}")
        count_s, neurons_s, bits_s = fields
        try:
            neurons, bits = int(neurons_s), int(bits_s)
        except ValueError:
            raise TierSpecError(f"{where}: neurons and bits must be integers") from None
        count: int | None
        if count_s.lower() == "rest":
            if i != len(parts) - 1:
                raise TierSpecError(f"{where}: 'rest' may only be the last tier")
            count = None
        else:
            try:
                count = int(count_s)
            except ValueError:
                raise TierSpecError(f"{where}: count must be an integer or 'rest'") from None
            if count <= 0:
                raise TierSpecError(f"{where}: count must be positive, got {count}")
        if neurons <= 0:
            raise TierSpecError(f"{where}: neurons must be positive, got {neurons}")
        if not 1 <= bits <= MAX_BITS:
            raise TierSpecError(f"{where}: bits must be in 1..{MAX_BITS}, got {bits}")
        out.append((count, neurons, bits))
    return out


def normalise_tier_spec(spec: str) -> str:
    """The canonical text of a valid spec (no spaces, no trailing ';', lower-case 'rest'), so
    equivalent spellings are one configuration."""
    return ";".join(f"{'rest' if c is None else c},{n},{b}" for c, n, b in parse_tier_fields(spec))


def parse_tiers(spec: str, vocab_size: int) -> list[Tier]:
    """Parse ``"count,neurons,bits;...;rest,neurons,bits"``; ``rest`` (last tier only) takes the
    clusters left over. The counts must cover the vocabulary exactly."""
    tiers: list[Tier] = []
    start = 0
    for i, (count, neurons, bits) in enumerate(parse_tier_fields(spec)):
        where = f"tier {i} of '{spec}'"
        if count is None:
            count = vocab_size - start
            if count <= 0:
                raise TierSpecError(f"{where}: no clusters left for 'rest' (earlier tiers already cover V={vocab_size})")
        if start + count > vocab_size:
            raise TierSpecError(
                f"{where}: counts reach {start + count}, beyond the vocabulary size V={vocab_size}")
        tiers.append(Tier(i, start, count, neurons, bits))
        start += count
    if start != vocab_size:
        raise TierSpecError(
            f"tier spec '{spec}' covers {start} clusters but V={vocab_size}; end with 'rest,neurons,bits' "
            "or make the counts add up to V")
    return tiers


def uniform_tiers(vocab_size: int, neurons: int, bits: int) -> list[Tier]:
    """The uniform model is the one-tier special case."""
    return parse_tiers(f"rest,{neurons},{bits}", vocab_size)


def model_tiers(spec: str, vocab_size: int, neurons: int, bits: int) -> list[Tier]:
    """A trial's tiers: the spec if given, else the uniform model of ``neurons`` x ``bits``."""
    return parse_tiers(spec, vocab_size) if spec.strip() else uniform_tiers(vocab_size, neurons, bits)


def format_tiers(tiers: list[Tier]) -> str:
    return ";".join(f"{t.count},{t.neurons},{t.bits}" for t in tiers)


def frequency_order(train_tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """Token ids by descending train count; equal counts by first occurrence in the train stream
    (as Python's Counter.most_common orders them); tokens never seen last, by increasing id."""
    train_tokens = np.asarray(train_tokens, dtype=np.int64)
    counts = np.bincount(train_tokens, minlength=vocab_size)[:vocab_size]
    first = np.full(vocab_size, np.iinfo(np.int64).max, dtype=np.int64)
    if train_tokens.size:
        uniq, idx = np.unique(train_tokens, return_index=True)
        first[uniq] = idx
    ids = np.arange(vocab_size, dtype=np.int64)
    # lexsort: last key is primary -> -count, then first occurrence, then id (for unseen tokens)
    return np.lexsort((ids, first, -counts)).astype(np.int64)


def top_k(train_tokens: np.ndarray, vocab_size: int, k: int) -> np.ndarray:
    """The k most frequent train tokens (global negatives), same ordering as frequency_order."""
    order = frequency_order(train_tokens, vocab_size)
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size)
    seen = order[counts[order] > 0]
    return seen[:k]


def _check_permutation(order: np.ndarray, v: int, name: str) -> np.ndarray:
    order = np.asarray(order, dtype=np.int64)
    if order.shape != (v,) or not np.array_equal(np.sort(order), np.arange(v)):
        raise ValueError(f"{name} must be a permutation of range(V)")
    return order


class ClusterMap:
    """Logical cluster position <-> token id, the tier every token is stored in, and the tier every
    token is *reported* in.

    ``cluster_order`` (logical position -> token) decides storage: tier k holds the tokens at
    positions [start_k, end_k). ``rank_order`` (frequency rank -> token) decides the per-tier
    metrics: tier k's rows are the targets whose train-frequency rank lies in [start_k, end_k), as
    the original's per-tier tables did. Both orders are the same with ``tier_order: frequency``;
    with the legacy ``token_id`` storage they differ, and the metrics still bucket by rank.
    """

    def __init__(self, tiers: list[Tier], cluster_order: np.ndarray, rank_order: np.ndarray | None = None):
        v = tiers[-1].end
        cluster_order = _check_permutation(cluster_order, v, "cluster_order")
        rank_order = cluster_order if rank_order is None else _check_permutation(rank_order, v, "rank_order")
        self.tiers = tiers
        self.vocab_size = v
        self.cluster_order = cluster_order                 # logical -> token
        self.position = np.empty(v, dtype=np.int64)        # token -> logical
        self.position[cluster_order] = np.arange(v)
        self.tier_of_position = np.empty(v, dtype=np.int64)
        for t in tiers:
            self.tier_of_position[t.start:t.end] = t.index
        self.tier_of_token = self.tier_of_position[self.position]      # where the token is stored
        self.rank_order = rank_order                       # frequency rank -> token
        rank = np.empty(v, dtype=np.int64)
        rank[rank_order] = np.arange(v)
        self.metric_tier_of_token = self.tier_of_position[rank]       # where the token is reported

    @classmethod
    def build(cls, tiers: list[Tier], train_tokens: np.ndarray, order: str = "frequency") -> "ClusterMap":
        v = tiers[-1].end
        by_rank = frequency_order(train_tokens, v)
        if order == "frequency":
            return cls(tiers, by_rank)
        if order == "token_id":  # legacy: the original's sparse tiers assigned tiers by raw token id,
            return cls(tiers, np.arange(v, dtype=np.int64), by_rank)   # its per-tier tables by rank
        raise ValueError(f"tier_order must be 'frequency' or 'token_id', got {order!r}")

    def to_logical(self, token_ids: np.ndarray) -> np.ndarray:
        return self.position[np.asarray(token_ids, dtype=np.int64)]

    def to_tokens(self, logical: np.ndarray) -> np.ndarray:
        return self.cluster_order[np.asarray(logical, dtype=np.int64)]
