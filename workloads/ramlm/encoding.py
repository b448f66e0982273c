"""Input encoding of RAM-LM, the one place contexts are turned into bits: each token id in plain
binary, MSB first, the context's tokens concatenated oldest first. Examples are sliding windows
over the flat token stream. See docs/studies/ramlm.md, 'Input encoding'."""
from __future__ import annotations

from typing import Iterator

import numpy as np


def bits_per_token(vocab_size: int) -> int:
    """ceil(log2 V): the bit length of the largest id, V-1 (16 for GPT-2's 50,257)."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    return int(vocab_size - 1).bit_length()


def encode_tokens(ids: np.ndarray, bits: int) -> np.ndarray:
    """[n] token ids -> [n, bits] uint8, column 0 holding the id's most significant bit."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= (1 << bits)):
        raise ValueError(f"token ids must lie in [0, 2^{bits}), got [{ids.min()}, {ids.max()}]")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    return ((ids[:, None] >> shifts[None, :]) & 1).astype(np.uint8)


def num_examples(n_tokens: int, context: int) -> int:
    return max(0, n_tokens - context)


def context_bits(tokens: np.ndarray, context: int, bits: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Input bits of examples [start, stop): example i reads tokens[i .. i+N-1] (oldest first,
    so the newest token fills the last ``bits`` columns) and predicts tokens[i+N]."""
    tokens = np.asarray(tokens)
    n = num_examples(len(tokens), context)
    stop = n if stop is None else min(stop, n)
    if start >= stop:
        return np.zeros((0, context * bits), dtype=np.uint8)
    per_token = encode_tokens(tokens[start:stop + context - 1], bits)  # [m + N - 1, bits]
    m = stop - start
    out = np.empty((m, context * bits), dtype=np.uint8)
    for k in range(context):  # column block k is the k-th oldest token of the window
        out[:, k * bits:(k + 1) * bits] = per_token[k:k + m]
    return out


def targets(tokens: np.ndarray, context: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    tokens = np.asarray(tokens, dtype=np.int64)
    n = num_examples(len(tokens), context)
    stop = n if stop is None else min(stop, n)
    return tokens[context + start:context + stop]


def decode_bits(bits_row: np.ndarray, bits: int) -> list[int]:
    """Inverse of the context encoding for one example (used by tests and debugging)."""
    row = np.asarray(bits_row, dtype=np.int64).reshape(-1, bits)
    weights = 1 << np.arange(bits - 1, -1, -1, dtype=np.int64)
    return [int(v) for v in row @ weights]


class Examples:
    """Sliding-window examples of one token stream, encoded lazily in chunks."""

    def __init__(self, tokens: np.ndarray, context: int, bits_per_token: int):
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self.context = context
        self.bpt = bits_per_token
        self.n = num_examples(len(self.tokens), context)

    def slice(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(input bits, targets) of examples [start, stop)."""
        bits = context_bits(self.tokens, self.context, self.bpt, start, stop)
        return bits, targets(self.tokens, self.context, start, stop)

    def chunks(self, size: int, limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        stop = self.n if limit is None else min(self.n, limit)
        for s in range(0, stop, size):
            yield self.slice(s, min(stop, s + size))

    def all(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.slice(0, self.n if limit is None else min(self.n, limit))
