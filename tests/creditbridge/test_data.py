"""The synthetic teacher-student task and the CIFAR-10 loader (real batches and stand-in)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from workloads.creditbridge.tasks import balance_offsets, teacher_task
from workloads.data import cifar10


def test_teacher_is_fixed_by_its_seed_and_rung():
    a = teacher_task(1.0, 4, 32, 10, 2000, 500, teacher_seed=0)
    b = teacher_task(1.0, 4, 32, 10, 2000, 500, teacher_seed=0)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    c = teacher_task(0.5, 4, 32, 10, 2000, 500, teacher_seed=0)
    assert not np.array_equal(a.y_train, c.y_train)
    assert a.x_train.dtype == np.float32 and a.x_train.shape == (2000, 32) and a.x_test.shape == (500, 32)


@pytest.mark.parametrize("alpha,depth", [(0.0, 2), (1.0, 12)])
def test_teacher_classes_are_roughly_uniform(alpha, depth):
    t = teacher_task(alpha, depth, 64, 10, 4000, 1000)
    shares = np.bincount(t.y_train, minlength=10) / 4000
    assert shares.max() < 0.15 and shares.min() > 0.05
    assert t.max_class_share == pytest.approx(shares.max())


def test_teacher_labels_follow_the_teacher_map():
    """alpha = 0, one layer: y = argmax(U W x / sqrt(d) + b) - a linear rule, so a linear
    classifier fits the training labels almost perfectly."""
    from sklearn.linear_model import LogisticRegression

    t = teacher_task(0.0, 1, 16, 4, 3000, 100)
    clf = LogisticRegression(C=100.0, max_iter=2000).fit(t.x_train, t.y_train)
    assert clf.score(t.x_train, t.y_train) > 0.97


def test_balance_offsets_equalise_a_skewed_argmax():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((5000, 5)) + np.array([2.0, 0.0, 0.0, -1.0, 0.5])
    before = np.bincount(np.argmax(scores, 1), minlength=5).max() / 5000
    after = np.bincount(np.argmax(scores + balance_offsets(scores), 1), minlength=5).max() / 5000
    assert before > 0.5 and after < 0.25


def test_standin_has_the_shape_of_cifar10_and_is_seeded():
    d = cifar10.standin(300, 100, seed=1)
    assert d.x_train.shape == (300, 3072) and d.x_test.shape == (100, 3072)
    assert d.x_train.dtype == np.float32 and set(np.unique(d.y_train)) == set(range(10))
    assert d.source == "standin:blobs"
    assert np.array_equal(d.x_train, cifar10.standin(300, 100, seed=1).x_train)
    assert abs(float(d.x_train.mean())) < 1.0 and 0.1 < float(d.x_train.std()) < 2.0


def write_fake_batches(root, n_per_batch: int = 20) -> np.ndarray:
    """Files laid out as the CIFAR-10 python distribution (pickled dicts, byte keys)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        first = data if first is None else first
        with open(d / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": list(rng.integers(0, 10, n_per_batch))}, f)
    return first


def test_real_loader_reads_python_batches_and_normalizes_per_channel(tmp_path):
    raw = write_fake_batches(tmp_path / "cifar10")
    d = cifar10.load_cifar10(tmp_path, "real", download=False)
    assert d.source == "real:cifar10"
    assert d.x_train.shape == (100, 3072) and d.x_test.shape == (20, 3072)
    # channel-major layout: the first 1024 values are the red plane
    expect_red = (raw[0, :1024] / 255.0 - cifar10.MEAN[0]) / cifar10.STD[0]
    assert np.allclose(d.x_train[0, :1024], expect_red, atol=1e-5)
    expect_blue = (raw[0, 2048:] / 255.0 - cifar10.MEAN[2]) / cifar10.STD[2]
    assert np.allclose(d.x_train[0, 2048:], expect_blue, atol=1e-5)


def test_auto_falls_back_to_the_standin_and_real_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERNIGHT_OFFLINE", "1")
    d = cifar10.load_cifar10(tmp_path, "auto", standin_train=50, standin_test=20)
    assert d.source == "standin:blobs"
    with pytest.raises(cifar10.DataUnavailable):
        cifar10.load_cifar10(tmp_path, "real")
    with pytest.raises(ValueError):
        cifar10.load_cifar10(tmp_path, "imagenet")
