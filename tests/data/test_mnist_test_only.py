"""MNIST's test set alone (../shared/data/mnist holds only t10k-*): under ``data: auto`` below full
scale it is split into disjoint train and test parts (seeded, 8,000 / 2,000) and disclosed as
"mnist test set only"; ``data: real`` and full scale refuse it; the autoencoder's provenance hook
lists the files it reads and its backbone stage key tells it apart from Fashion-MNIST."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from orchestrator.study.contract import DataMissing, LocalContext
from orchestrator.results.provenance import data_files as hashed_data_files
from workloads.data import mnist
from workloads.data.idx import read_idx
from workloads.quantcorr import Autoencoder

# the MNIST test set's digits per class (LeCun et al.'s t10k-labels-idx1-ubyte)
T10K_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _hashes(x) -> set[bytes]:
    return {hashlib.sha1(row.tobytes()).digest() for row in x.numpy()}


def test_the_source_string_discloses_the_split():
    s = mnist.MNIST_TEST_ONLY_SOURCE
    assert s == ("mnist test set only (t10k, 10,000 digits; seeded split, rng 0: "
                 "8,000 train / 2,000 test, disjoint)")
    assert "test set only" in s and "substitute" not in s
    assert (mnist.MNIST_TEST_ONLY_TRAIN, mnist.MNIST_TEST_ONLY_TEST) == (8_000, 2_000)
    assert mnist.MNIST_TEST_ONLY_TRAIN + mnist.MNIST_TEST_ONLY_TEST == mnist.MNIST_TEST_IMAGES
    assert s in " ".join(mnist.__doc__.split())


def test_auto_splits_the_test_set_disjointly_and_deterministically(real_root, tmp_path):
    root = real_root("mnist")
    d = mnist.load_images("auto", root, tmp_path / "cache")
    assert d.data_source == mnist.MNIST_TEST_ONLY_SOURCE
    assert tuple(d.train.shape) == (8_000, 784) and tuple(d.test.shape) == (2_000, 784)
    assert d.dim == 784
    assert float(d.train.min()) == 0.0 and float(d.train.max()) == 1.0
    assert float(d.test.min()) == 0.0 and float(d.test.max()) == 1.0

    # the parts are the default_rng(0) permutation's first 8,000 and last 2,000 test images
    X = read_idx(root / "mnist" / "t10k-images-idx3-ubyte.gz").reshape(10_000, 784)
    perm = np.random.default_rng(0).permutation(10_000)
    assert np.array_equal(d.train.numpy(), X[perm[:8_000]].astype(np.float32) / 255.0)
    assert np.array_equal(d.test.numpy(), X[perm[8_000:]].astype(np.float32) / 255.0)
    tr, te = mnist.split_indices()
    assert np.array_equal(tr, perm[:8_000]) and np.array_equal(te, perm[8_000:])
    assert len(set(tr.tolist()) | set(te.tolist())) == 10_000 and not set(tr.tolist()) & set(te.tolist())
    # ... and no image is in both (the MNIST test set has no duplicate images)
    train_h, test_h = _hashes(d.train), _hashes(d.test)
    assert len(train_h) == 8_000 and len(test_h) == 2_000 and not train_h & test_h

    again = mnist.load_images("auto", root, tmp_path / "cache")
    assert again.data_source == d.data_source
    assert np.array_equal(again.train.numpy(), d.train.numpy()) and np.array_equal(again.test.numpy(), d.test.numpy())


def test_the_labels_are_the_mnist_test_set_and_both_parts_hold_every_digit(real_root):
    root = real_root("mnist")
    y = read_idx(root / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert y[:5].tolist() == [7, 2, 1, 0, 4]            # the first test digit is a 7
    assert np.bincount(y).tolist() == T10K_CLASS_COUNTS
    tr, te = mnist.split_indices()
    assert np.bincount(y[tr], minlength=10).sum() == 8_000 and np.bincount(y[te], minlength=10).min() >= 150


def test_auto_prefers_the_mnist_test_set_to_fashion_mnist(real_root, tmp_path):
    root = real_root("mnist", "fashion-mnist")
    d = mnist.load_images("auto", root, tmp_path / "cache")
    assert d.data_source == mnist.MNIST_TEST_ONLY_SOURCE
    assert (len(d.train), len(d.test)) == (8_000, 2_000)


def test_without_mnist_auto_still_takes_fashion_mnist(real_root, tmp_path):
    d = mnist.load_images("auto", real_root("fashion-mnist"), tmp_path / "cache")
    assert d.data_source == mnist.FASHION_MNIST_SOURCE == "fashion-mnist (substitute for MNIST)"
    assert (len(d.train), len(d.test)) == (60_000, 10_000)


@pytest.mark.parametrize("folders", [("mnist",), ("mnist", "fashion-mnist")])
def test_real_refuses_the_test_set_alone(real_root, tmp_path, folders):
    root = real_root(*folders)
    with pytest.raises(mnist.DataUnavailable) as err:
        mnist.load_images("real", root, tmp_path / "cache")
    msg = str(err.value)
    assert "\n" not in msg and str(root / "MNIST" / "raw") in msg and str(root / "mnist") in msg
    assert f"only MNIST's test set is in {root / 'mnist'}" in msg


def test_full_scale_needs_the_full_mnist(real_root, tmp_path):
    root = real_root("mnist")
    Autoencoder.preflight({"data": "auto"}, root, "fast")          # below full scale: the split is fine
    with pytest.raises(DataMissing):
        Autoencoder.preflight({"data": "auto"}, root, "full")
    with pytest.raises(DataMissing):
        Autoencoder.preflight({"data": "real"}, root, "fast")
    ctx = LocalContext(data_root=root, cache_dir=tmp_path / "c", scale="full")
    with pytest.raises(mnist.DataUnavailable):   # auto is real at full scale: no split, no substitute
        Autoencoder().run(Autoencoder.Params.model_validate(dict(seed=0, hidden=[16], latent=4, data="auto", float_epochs=1)), ctx)


def test_provenance_hashes_the_files_the_trial_reads(real_root):
    root = real_root("mnist")
    t10k = [root / "mnist" / "t10k-images-idx3-ubyte.gz", root / "mnist" / "t10k-labels-idx1-ubyte.gz"]
    assert Autoencoder.data_files({"data": "auto"}, root) == t10k
    assert Autoencoder.data_files({"data": "real"}, root) == []
    assert Autoencoder.data_files({"data": "standin"}, root) == []
    hashed = hashed_data_files(Autoencoder, [{"data": "auto"}], root)
    assert sorted(hashed) == sorted(str(p) for p in t10k)
    assert hashed[str(t10k[0])] == hashlib.sha256(t10k[0].read_bytes()).hexdigest()

    both = real_root("fashion-mnist")           # the same root, now with Fashion-MNIST too
    assert Autoencoder.data_files({"data": "auto"}, both) == t10k   # the trial reads MNIST's test set


def test_provenance_of_fashion_mnist_alone(real_root):
    root = real_root("fashion-mnist")
    files = Autoencoder.data_files({"data": "auto"}, root)
    assert sorted(p.name for p in files) == sorted(["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                                                    "train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"])
    assert all(p.parent == root / "fashion-mnist" for p in files)


def test_the_split_and_fashion_mnist_never_share_a_backbone(real_root, tmp_path):
    """Same train size (max_train_images), other data: two stage keys, two backbones."""
    ctx = LocalContext(data_root=real_root("mnist"), cache_dir=tmp_path / "c")
    cfg = dict(seed=0, hidden=[16], latent=4, bits=4, correct_every=4, correction_hidden=0, data="auto",
               float_epochs=1, max_train_images=64, test_images=32)
    split = Autoencoder().run(Autoencoder.Params.model_validate(cfg), ctx)
    other = tmp_path / "other"
    other.mkdir()
    (other / "fashion-mnist").symlink_to((ctx.data_root / "mnist").resolve().parent / "fashion-mnist")
    ctx.data_root = other
    fashion = Autoencoder().run(Autoencoder.Params.model_validate(cfg), ctx)
    assert split["data_source"] == mnist.MNIST_TEST_ONLY_SOURCE
    assert fashion["data_source"] == mnist.FASHION_MNIST_SOURCE
    assert split["n_train_images"] == fashion["n_train_images"] == 64
    keys = list(ctx._stages)
    assert len(keys) == 2
    assert any(mnist.MNIST_TEST_ONLY_SOURCE in k for k in keys) and any(mnist.FASHION_MNIST_SOURCE in k for k in keys)
    assert split["mse_float"] != fashion["mse_float"]
