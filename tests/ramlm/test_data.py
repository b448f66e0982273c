"""Token data: synthetic Zipf stream, word tokenizer, offline stand-in, cache, GPT-2 availability message."""
import numpy as np
import pytest

from workloads.data import wikitext
from workloads.data.wikitext import DataUnavailable, WordTokenizer, load_token_splits, zipf_stream


def test_zipf_stream_is_seeded_zipfian_and_not_id_ordered():
    a = zipf_stream(200_000, 5000, seed=1)
    assert np.array_equal(a, zipf_stream(200_000, 5000, seed=1))
    assert not np.array_equal(a, zipf_stream(200_000, 5000, seed=2))
    counts = np.bincount(a, minlength=5000)
    ranked = np.sort(counts)[::-1]
    assert 0.35 < ranked[:100].sum() / counts.sum() < 0.65       # head share near WikiText-2's 46.5%
    assert np.argmax(counts) != 0                                # frequency order is not id order


def test_word_tokenizer_unknowns_and_alphabetical_ids():
    tok = WordTokenizer.train("the cat sat on the mat . the end", vocab_size=4)
    assert tok.vocab[0] == "<unk>" and tok.vocab[1:] == sorted(tok.vocab[1:])
    ids = tok.encode("the dog sat")
    assert ids[0] == tok.index["the"] and ids[1] == 0


def test_synthetic_splits_are_cached(tmp_path):
    s = load_token_splits("synthetic", cache_dir=tmp_path, synthetic_sizes=(1000, 200, 300), synthetic_vocab=97)
    assert (len(s.train), len(s.val), len(s.test), s.vocab_size) == (1000, 200, 300, 97)
    assert list(tmp_path.rglob("*.npz"))
    again = load_token_splits("synthetic", cache_dir=tmp_path, synthetic_sizes=(1000, 200, 300), synthetic_vocab=97)
    assert np.array_equal(s.test, again.test) and again.data_source == s.data_source


def test_standin_corpus_offline_with_word_tokenizer(tmp_path):
    s = load_token_splits("standin", tokenizer="word", data_root=tmp_path, word_vocab=2000)
    assert s.data_source.startswith("standin:") and s.tokenizer == f"word{s.vocab_size}"
    assert len(s.train) > 50_000 and len(s.val) > 10_000 and len(s.test) > 10_000
    t = s.truncated(50_000, 10_000, 10_000)
    assert (len(t.train), len(t.val), len(t.test)) == (50_000, 10_000, 10_000)
    assert s.train.max() < s.vocab_size


def test_local_wikitext_files_are_read(tmp_path, monkeypatch):
    root = tmp_path / "wikitext-2-raw"
    root.mkdir()
    for name, text in (("wiki.train.raw", " = A = \n the a b a \n"), ("wiki.valid.raw", "a b\n"), ("wiki.test.raw", "b a\n")):
        (root / name).write_text(text)
    s = load_token_splits("real", tokenizer="word", data_root=tmp_path)
    assert s.data_source == "wikitext-2-raw-v1"
    assert len(s.train) == 7 and len(s.val) == 2        # "= A = the a b a": lines joined with a space


def test_gpt2_request_without_tiktoken_says_what_is_missing(tmp_path, monkeypatch):
    def unavailable(root):
        raise DataUnavailable("GPT-2 BPE unavailable: the 'tiktoken' package is not installed")
    monkeypatch.setattr(wikitext, "gpt2_encoder", unavailable)
    with pytest.raises(DataUnavailable, match="tiktoken"):
        load_token_splits("standin", tokenizer="gpt2", data_root=tmp_path)
    # auto falls back to the word-level tokenizer
    assert load_token_splits("standin", tokenizer="auto", data_root=tmp_path).tokenizer.startswith("word")
