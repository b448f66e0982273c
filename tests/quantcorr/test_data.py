"""Loaders on local fixtures in the real formats (input.txt, IDX), and the offline stand-ins."""
import gzip

import numpy as np
import pytest
import torch

from workloads.data import mnist, shakespeare
from workloads.data.mnist import load_images, read_idx, write_idx
from workloads.data.shakespeare import DataUnavailable, char_splits, load_text


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("OVERNIGHT_OFFLINE", "1")


def test_input_txt_found_in_data_root_layouts(tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 10
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text(text)
    assert load_text("real", tmp_path, None) == (text, "tinyshakespeare")
    other = tmp_path / "flat"
    other.mkdir()
    (other / "input.txt").write_text(text[:50])
    assert load_text("auto", other, None) == (text[:50], "tinyshakespeare")
    cache = tmp_path / "cache" / "tinyshakespeare"
    cache.mkdir(parents=True)
    (cache / "input.txt").write_text("abc" * 100)
    assert load_text("real", tmp_path / "nothing", tmp_path / "cache")[0] == "abc" * 100


def test_missing_real_text_is_an_error_and_auto_falls_back(tmp_path):
    with pytest.raises(DataUnavailable):
        load_text("real", tmp_path, tmp_path / "cache")
    text, source = load_text("auto", tmp_path, tmp_path / "cache")
    assert source == "standin:corpus"
    assert 20_000 < len(text) < 200_000 and len(set(text)) > 50
    with pytest.raises(ValueError):
        load_text("other", tmp_path, None)


def test_offline_download_is_not_attempted(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(shakespeare.urllib.request, "urlopen", lambda *a, **k: called.append(a))
    assert not shakespeare.try_download("http://example.invalid/x", tmp_path / "x")
    assert called == []


def test_failed_download_is_remembered(tmp_path, monkeypatch):
    monkeypatch.delenv("OVERNIGHT_OFFLINE")
    calls = []

    def fail(*a, **k):
        calls.append(a)
        raise OSError("no network")

    monkeypatch.setattr(shakespeare.urllib.request, "urlopen", fail)
    dest = tmp_path / "tinyshakespeare" / "input.txt"
    assert not shakespeare.try_download("http://example.invalid/input.txt", dest)
    assert not shakespeare.try_download("http://example.invalid/input.txt", dest)
    assert len(calls) == 1 and not dest.exists()


def test_char_splits_chunks_and_vocab():
    text = "abcdefghij" * 50  # 500 chars
    s = char_splits(text, seq_len=9, data_source="x")
    n_chunks = 500 // 10
    assert len(s.train_x) == int(n_chunks * 0.9) and len(s.test_x) == n_chunks - int(n_chunks * 0.9)
    assert s.vocab == list("abcdefghij") and s.vocab_size == 10
    assert torch.equal(s.train_x[0], torch.arange(9)) and torch.equal(s.train_y[0], torch.arange(1, 10))
    # chunks do not overlap: chunk 1 starts where chunk 0 ended
    assert s.train_x[1, 0].item() == 0 and s.train_y[0, -1].item() == 9
    with pytest.raises(ValueError):
        char_splits("abc", seq_len=9)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip_and_mnist_layout(tmp_path, gz):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    suffix = ".gz" if gz else ""
    write_idx(raw / f"train-images-idx3-ubyte{suffix}", train)
    write_idx(raw / f"t10k-images-idx3-ubyte{suffix}", test)
    assert np.array_equal(read_idx(raw / f"train-images-idx3-ubyte{suffix}"), train)
    data = load_images("real", tmp_path, None)
    assert data.data_source == "mnist" and data.dim == 784
    assert data.train.shape == (5, 784) and data.test.shape == (3, 784)
    assert torch.allclose(data.train[2], torch.from_numpy(train[2].reshape(-1) / 255.0).float())
    assert float(data.train.max()) <= 1.0 and float(data.train.min()) >= 0.0


def test_idx_header_is_the_real_format(tmp_path):
    p = tmp_path / "labels-idx1-ubyte"
    write_idx(p, np.array([7, 2, 1], dtype=np.uint8))
    assert p.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError):
        read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(ValueError):
        read_idx(short)


def test_mnist_missing_real_and_digits_standin(tmp_path):
    with pytest.raises(mnist.DataUnavailable):
        load_images("real", tmp_path, tmp_path / "cache")
    d = load_images("auto", tmp_path, tmp_path / "cache")
    assert d.data_source == "standin:sklearn_digits" and d.dim == 64
    assert len(d.train) + len(d.test) == 1797 and len(d.test) == 360
    assert float(d.train.max()) == 1.0 and float(d.train.min()) == 0.0
