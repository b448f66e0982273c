"""The tiered RAM language model on top of the native memory (``native.TieredMemory``). See
docs/studies/ramlm.md, 'Tiered architecture' and 'Scoring'.

The memory takes and returns token ids and applies ``cluster_order`` (logical position -> token)
itself, once, the same way for training, forward, evaluation and candidate evaluation; the
workload passes the same :class:`ClusterMap` order. Per-tier metrics put a target in the tier of
its train-frequency rank (``ClusterMap.metric_tier_of_token``), as the original's per-tier tables
did: with ``tier_order: frequency`` that is the tier its cluster is stored in, with the legacy
``token_id`` order it is not.
Any class with the native memory's API can stand in for it (the tests pass their numpy oracle).
"""
from __future__ import annotations

import math

import numpy as np

from workloads.ramlm.encoding import Examples
from workloads.ramlm.metrics import Calibration, SeedScorer, TierAccumulator
from workloads.ramlm.tiers import ClusterMap, Tier


def native_memory_class():
    import native
    if not hasattr(native, "TieredMemory"):
        raise RuntimeError("native.TieredMemory is missing: rebuild the extension "
                           "(.venv/bin/maturin develop --release)")
    return native.TieredMemory


def make_memory(tiers: list[Tier], cmap: ClusterMap, total_input_bits: int, seed: int,
                backends: str | list[str] = "auto", connectivity=None, memory_class=None):
    """A memory for the tiers, storing clusters in ``cmap``'s order; the native one unless
    ``memory_class`` is given."""
    identity = np.array_equal(cmap.cluster_order, np.arange(cmap.vocab_size))
    return (memory_class or native_memory_class())(
        [(t.count, t.neurons, t.bits) for t in tiers], total_input_bits,
        connectivity=connectivity,
        cluster_order=None if identity else np.ascontiguousarray(cmap.cluster_order, dtype=np.int64),
        backends=backends, seed=seed)


class TieredRAMLM:
    def __init__(self, memory, cmap: ClusterMap, context: int, bits_per_token: int, negatives: np.ndarray,
                 empty_value: float, train_chunk: int = 50_000, eval_chunk: int = 2048, score_chunk: int | None = None):
        self.memory = memory
        self.cmap = cmap
        self.context = context
        self.bpt = bits_per_token
        self.negatives = np.ascontiguousarray(negatives, dtype=np.int64)
        self.empty_value = float(empty_value)
        # [B, V] score blocks of about 8M floats: large enough that per-call overheads vanish
        score_chunk = score_chunk or max(64, (1 << 23) // cmap.vocab_size)
        self.train_chunk, self.eval_chunk, self.score_chunk = train_chunk, eval_chunk, score_chunk

    def examples(self, tokens: np.ndarray) -> Examples:
        return Examples(tokens, self.context, self.bpt)

    def train(self, tokens: np.ndarray) -> int:
        """One pass over the stream (order and chunking do not change the memory)."""
        ex = self.examples(tokens)
        for bits, tgt in ex.chunks(self.train_chunk):
            self.memory.train(bits, tgt, self.negatives if self.negatives.size else None)
        return ex.n

    def evaluate(self, tokens: np.ndarray, limit: int | None = None) -> dict:
        """Seed metrics (overall and per target tier) through the fused native evaluation."""
        acc = TierAccumulator(len(self.cmap.tiers))
        log_v = math.log(self.cmap.vocab_size)
        for bits, tgt in self.examples(tokens).chunks(self.eval_chunk, limit):
            ce, pred = self.memory.evaluate(bits, tgt, self.empty_value)
            acc.add(np.minimum(ce, log_v), pred == tgt, self.cmap.metric_tier_of_token[tgt])
        return acc.summary()

    def scores(self, bits: np.ndarray) -> np.ndarray:
        return self.memory.forward_scores(bits, self.empty_value)

    def fit_calibration(self, tokens: np.ndarray, log_prior_tokens: np.ndarray, mode: str, n_examples: int) -> Calibration:
        """Collect seed scores of the first ``n_examples`` examples (float16) and fit the calibration."""
        cal = Calibration(log_prior_tokens, mode)
        ex = self.examples(tokens)
        n = min(n_examples, ex.n)
        store = np.empty((n, self.cmap.vocab_size), dtype=np.float16)
        tg = np.empty(n, dtype=np.int64)
        pos = 0
        for bits, tgt in ex.chunks(self.score_chunk, n):
            store[pos:pos + len(tgt)] = self.scores(bits)
            tg[pos:pos + len(tgt)] = tgt
            pos += len(tgt)
        cal.fit(store, tg)
        return cal

    def evaluate_scored(self, tokens: np.ndarray, calibration: Calibration | None, limit: int | None = None) -> tuple[dict, dict | None]:
        """Seed metrics and calibrated metrics from the same [B, V] scores."""
        scorer = SeedScorer(self.cmap.metric_tier_of_token, len(self.cmap.tiers), calibration)
        for bits, tgt in self.examples(tokens).chunks(self.score_chunk, limit):
            scorer.add(self.scores(bits), tgt)
        return scorer.seed.summary(), (scorer.cal.summary() if scorer.cal is not None else None)
