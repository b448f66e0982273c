"""The GPT-2 BPE from a data root (``<root>/gpt2-bpe``, ../shared/data/README.md): read offline with
its sha256 checked, refused when altered, and the word tokenizer a disclosed fallback only when no
BPE files are found. Also: what ``auto`` resolves to is decided once, and ``data: real`` never falls
back."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from orchestrator.study.contract import DataMissing
from orchestrator.results.provenance import sha256_file
from workloads.data import locate, wikitext
from workloads.data.locate import require
from workloads.data.wikitext import VALID_TEST_ONLY, DataCorrupt, DataUnavailable, load_token_splits, resolve

VALID_TEST = VALID_TEST_ONLY.format(source="wikitext-2-v1 tokenised")


def test_the_bpe_files_are_the_originals_and_tokenise_offline(real_root, tmp_path):
    root = real_root("gpt2-bpe")
    files = locate.bpe_files(root)
    assert {n: sha256_file(p) for n, p in files.items()} == locate.GPT2_BPE_SHA256
    enc = wikitext.gpt2_encoder(root)
    assert enc(" The").tolist() == [383]
    assert enc("Hello world").tolist() == [15496, 995]
    assert enc("<|endoftext|>").tolist() != [50256]        # ordinary text: no special tokens
    assert not (tmp_path / "tiktoken-empty").exists()      # nothing downloaded or copied into a cache
    assert locate.dataset_files("gpt2-bpe", root) == list(files.values())   # their sha256 go into study.json
    require("gpt2-bpe", root, "full", "auto")
    require("gpt2-bpe", root, "fast", "gpt2")


def test_wikitext_on_the_bpe(real_root):
    """The fast-scale RAM-LM data: the validation and test splits, disclosed, on the GPT-2 BPE."""
    root = real_root("wikitext-2", "gpt2-bpe")
    assert resolve("auto", "auto", root) == wikitext.Sources("valid-test", "gpt2")
    s = load_token_splits("auto", "auto", root)
    assert (s.tokenizer, s.vocab_size, s.data_source) == ("gpt2", 50257, VALID_TEST)
    assert (len(s.train), len(s.val), len(s.test)) == (258_658, 147_938, 147_938)
    enc = wikitext.gpt2_encoder(root)
    valid = " ".join((root / "wikitext-2" / "valid.txt").read_text().splitlines())
    assert np.array_equal(s.train, enc(valid))
    assert s.train.max() < 50257 and s.train.min() >= 0


@pytest.fixture
def altered_root(real_root, tmp_path):
    """WikiText-2 and a copy of the BPE files whose vocab.bpe has one byte changed."""
    linked = real_root("wikitext-2", "gpt2-bpe")
    shared_bpe = locate.bpe_files(linked)
    root = tmp_path / "altered"
    (root / "gpt2-bpe").mkdir(parents=True)
    (root / "wikitext-2").symlink_to((linked / "wikitext-2").resolve(), target_is_directory=True)
    for name, path in shared_bpe.items():
        shutil.copy(path, root / "gpt2-bpe" / name)
    vocab = root / "gpt2-bpe" / "vocab.bpe"
    data = bytearray(vocab.read_bytes())
    data[-2] = ord("x") if data[-2] != ord("x") else ord("y")
    vocab.write_bytes(bytes(data))
    return root


def test_altered_bpe_files_are_refused_everywhere(altered_root):
    with pytest.raises(DataCorrupt, match=r"vocab\.bpe has sha256 .*not the original vocab\.bpe's 1ce1664773c5"):
        wikitext.gpt2_encoder(altered_root)
    with pytest.raises(DataCorrupt):   # auto does not paper over it with the word tokenizer
        load_token_splits("auto", "auto", altered_root)
    for scale, tokenizer in (("fast", "auto"), ("smoke", "gpt2"), ("full", "auto")):
        with pytest.raises(DataMissing, match=r"original GPT-2 BPE .*vocab\.bpe has sha256"):
            require("gpt2-bpe", altered_root, scale, tokenizer)
    require("gpt2-bpe", altered_root, "fast", "word")      # the word tokenizer reads no BPE file
    assert not locate.status("gpt2-bpe", altered_root, "fast").present


def test_without_bpe_files_auto_falls_back_to_words_and_says_so(real_root):
    root = real_root("wikitext-2")
    assert resolve("auto", "auto", root) == wikitext.Sources("valid-test", "word-fallback")
    s = load_token_splits("auto", "auto", root)
    assert s.tokenizer == "word8192 (GPT-2 BPE unavailable)"
    with pytest.raises(DataUnavailable, match="GPT-2 BPE unavailable.*gpt2-bpe"):
        load_token_splits("auto", "gpt2", root)


def test_data_real_never_falls_back(real_root):
    """``real`` is the whole WikiText-2: with only the validation and test splits on disk and no
    download it refuses, at the preflight and at the load; ``auto`` uses them, disclosed."""
    root = real_root("wikitext-2", "gpt2-bpe")
    with pytest.raises(DataUnavailable, match=r"WikiText-2 \(the HF hub download\) is not available"):
        load_token_splits("real", "gpt2", root)
    with pytest.raises(DataMissing, match="only the validation and test splits"):
        require("wikitext-2", root, "fast", "real")
    assert load_token_splits("auto", "gpt2", root).data_source == VALID_TEST


def test_a_reachable_hub_that_then_fails_is_not_replaced_by_another_source(real_root, monkeypatch):
    """``auto`` decided on the download (the host answered): when the download then fails the load
    refuses, rather than handing back the validation+test layout under the download's name."""
    root = real_root("wikitext-2", "gpt2-bpe")
    monkeypatch.setattr(locate, "offline", lambda: False)
    monkeypatch.setattr(locate, "reachable", lambda host, *a, **k: True)
    monkeypatch.setattr(wikitext, "_host_resolves", lambda host: True)
    monkeypatch.setattr(wikitext, "_hf_wikitext", lambda root: None)
    assert resolve("auto", "auto", root) == wikitext.Sources("hf", "gpt2")
    with pytest.raises(DataUnavailable, match="the HF hub download failed"):
        load_token_splits("auto", "auto", root)


def test_cached_tokens_follow_the_resolved_sources(real_root, tmp_path):
    """The token cache is keyed on what auto resolved to and the files read: the word-tokenised
    fallback is cached, and the BPE arriving later is not hidden by it."""
    root = real_root("wikitext-2")
    cache = tmp_path / "cache"
    assert load_token_splits("auto", "auto", root, cache_dir=cache).tokenizer.startswith("word")
    assert len(list(cache.rglob("*.npz"))) == 1
    assert real_root("gpt2-bpe") == root      # the BPE files arrive in the same data root
    s = load_token_splits("auto", "auto", root, cache_dir=cache)
    assert (s.tokenizer, s.vocab_size) == ("gpt2", 50257)
    assert len(list(cache.rglob("*.npz"))) == 2
