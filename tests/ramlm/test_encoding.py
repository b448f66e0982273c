import numpy as np
import pytest

from workloads.ramlm.encoding import bits_per_token, context_bits, decode_bits, encode_tokens, targets


def test_bits_per_token_matches_gpt2_and_edges():
    assert bits_per_token(50257) == 16
    assert bits_per_token(2) == 1
    assert bits_per_token(256) == 8
    assert bits_per_token(257) == 9
    with pytest.raises(ValueError):
        bits_per_token(1)


def test_token_is_msb_first():
    enc = encode_tokens(np.array([1, 2, 50256]), 16)
    assert enc[0].tolist() == [0] * 15 + [1]           # id 1: only the last column (bit 0) is set
    assert enc[1].tolist() == [0] * 14 + [1, 0]
    assert enc[2, 0] == 1                              # 50256 >= 2^15: position 0 is bit 15
    assert int("".join(map(str, enc[2])), 2) == 50256


def test_context_is_oldest_first_and_examples_slide():
    tokens = np.array([5, 7, 9, 11, 13, 1])
    bits = context_bits(tokens, context=3, bits=4)
    assert bits.shape == (3, 12)
    assert decode_bits(bits[0], 4) == [5, 7, 9]        # the newest token fills the last 4 columns
    assert decode_bits(bits[2], 4) == [9, 11, 13]
    assert targets(tokens, 3).tolist() == [11, 13, 1]
    # chunks give the same rows as one call
    assert np.array_equal(np.concatenate([context_bits(tokens, 3, 4, 0, 2), context_bits(tokens, 3, 4, 2, 3)]), bits)


def test_out_of_range_ids_rejected():
    with pytest.raises(ValueError):
        encode_tokens(np.array([16]), 4)
    with pytest.raises(ValueError):
        encode_tokens(np.array([-1]), 4)
