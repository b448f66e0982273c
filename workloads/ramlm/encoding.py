"""Input encoding of RAM-LM (spec §2): each token id in plain binary, MSB first, the context's
tokens concatenated oldest first. Examples are sliding windows over the flat token stream."""
from __future__ import annotations

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
