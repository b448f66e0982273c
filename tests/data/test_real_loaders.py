"""The loaders on the real files of ../shared/data: tinyshakespeare, Fashion-MNIST as the disclosed
substitute of MNIST and of CIFAR-10, WikiText-2's tokenised validation + test splits, and the GPT-2
BPE fallback offline. Every check is on the data the studies will run on."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from workloads.data import cifar10, mnist, shakespeare, wikitext
from workloads.data.wikitext import VALID_TEST_ONLY, WordTokenizer, load_token_splits


def test_tinyshakespeare_is_the_original_file(real_root):
    root = real_root("tinyshakespeare")
    text, source = shakespeare.load_text("real", root, None)
    assert source == "tinyshakespeare"
    assert len(text) == shakespeare.TINY_SHAKESPEARE_CHARS == 1_115_394
    assert hashlib.sha256(text.encode()).hexdigest().startswith("86c4e6aa")
    assert shakespeare.load_text("auto", root, None)[1] == "tinyshakespeare"
    splits = shakespeare.char_splits(text, 128, data_source=source)
    assert splits.vocab_size == 65 and splits.data_source == "tinyshakespeare"
    assert len(splits.train_x) + len(splits.test_x) == 1_115_394 // 129


def test_the_standin_docstring_states_the_standin_as_it_is():
    text = shakespeare.standin_text()
    assert (len(text), len(text.encode()), len(set(text))) == (36_456, 36_460, 63)
    doc = " ".join(shakespeare.__doc__.split())
    assert "36,456 characters (36,460 bytes), 63 distinct characters" in doc
    assert "80 distinct" not in doc


def test_fashion_mnist_substitutes_for_mnist_and_says_so(real_root, tmp_path):
    root = real_root("fashion-mnist")
    d = mnist.load_images("auto", root, tmp_path / "cache")
    assert d.data_source == "fashion-mnist (substitute for MNIST)"
    assert tuple(d.train.shape) == (60_000, 784) and tuple(d.test.shape) == (10_000, 784)
    assert float(d.train.min()) == 0.0 and float(d.train.max()) == 1.0
    with pytest.raises(mnist.DataUnavailable, match="MNIST"):   # real means MNIST itself
        mnist.load_images("real", root, tmp_path / "cache")
    assert mnist.load_images("standin", root, None).data_source == "standin:sklearn_digits"


def test_fashion_mnist_substitutes_for_cifar10_and_says_so(real_root):
    root = real_root("fashion-mnist")
    d = cifar10.load_cifar10(root, "auto", download=False)
    assert d.source == "fashion-mnist (substitute for CIFAR-10)"
    assert d.x_train.shape == (60_000, 784) and d.x_test.shape == (10_000, 784)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert np.bincount(d.y_train).tolist() == [6000] * 10 and np.bincount(d.y_test).tolist() == [1000] * 10
    assert abs(float(d.x_train.mean())) < 0.01 and abs(float(d.x_train.std()) - 1) < 0.01   # its own mean/std
    with pytest.raises(cifar10.DataUnavailable):   # real means CIFAR-10 itself
        cifar10.load_cifar10(root, "real", download=False)
    xs, ys = cifar10.subset(d.x_train, d.y_train, 2048, seed=0)
    assert xs.shape == (2048, 784) and len(np.unique(ys)) == 10


def test_wikitext_validation_and_test_only_draws_disjoint_splits(real_root):
    """The fast-scale rule: 50K train tokens from validation, 10K/10K validation/test tokens from
    the two halves of test; data_source says exactly that."""
    root = real_root("wikitext-2")
    s = load_token_splits("auto", "word", root, word_vocab=8192)
    assert s.data_source == VALID_TEST_ONLY.format(source="wikitext-2-v1 tokenised")
    assert s.data_source == ("wikitext-2-v1 tokenised, validation and test splits only: train = the validation "
                             "split; validation = the first half of the test split, test = its second half (disjoint)")
    assert s.tokenizer == "word8192"
    valid_text = " ".join((root / "wikitext-2" / "valid.txt").read_text().splitlines())
    test_text = " ".join((root / "wikitext-2" / "test.txt").read_text().splitlines())
    tok = WordTokenizer.train(valid_text, 8192)
    test_ids = tok.encode(test_text)
    assert np.array_equal(s.train, tok.encode(valid_text))
    half = len(test_ids) // 2
    assert np.array_equal(s.val, test_ids[:half]) and np.array_equal(s.test, test_ids[half:])
    fast = s.truncated(50_000, 10_000, 10_000)
    assert (len(fast.train), len(fast.val), len(fast.test)) == (50_000, 10_000, 10_000)
    assert half >= 10_000   # the validation prefix ends before the test half starts: disjoint
    assert len(s.train) > 200_000 and len(test_ids) > 240_000
    with pytest.raises(wikitext.DataUnavailable):   # `real` is the whole dataset: no train split, no download
        load_token_splits("real", "word", root)


def test_word_tokenizer_keeps_wikitext_markers_whole():
    text = "the <unk> of the state @-@ run 1 @,@ 000 , the <unk> ."
    tok = WordTokenizer.train(text, 100)
    assert tok.vocab.count("<unk>") == 1 and "@-@" in tok.vocab and "@,@" in tok.vocab
    ids = tok.encode(text)
    assert len(ids) == 14 and ids[1] == 0 and ids[12] == 0   # WikiText's <unk> is the tokenizer's unknown


def test_gpt2_bpe_unavailable_offline_auto_falls_back_and_records_it(real_root):
    import tiktoken  # noqa: F401  (a default dependency now)

    root = real_root("wikitext-2")
    with pytest.raises(wikitext.DataUnavailable, match="GPT-2 BPE unavailable.*OVERNIGHT_OFFLINE"):
        wikitext.gpt2_encoder(root)
    with pytest.raises(wikitext.DataUnavailable):
        load_token_splits("auto", "gpt2", root)
    s = load_token_splits("auto", "auto", root)
    assert s.tokenizer == "word8192 (GPT-2 BPE unavailable)"
    assert s.data_source.startswith("wikitext-2-v1 tokenised, validation and test splits only")
