"""Images for the quantcorr autoencoder (docs/studies/quantization-correction.md, 'Data').

Sources (``data`` config key):
  real     MNIST, 28x28 flattened to 784 values in [0, 1], no normalisation. Read from the IDX files
           (``train-images-idx3-ubyte``, ``t10k-images-idx3-ubyte``, plain or ``.gz``) found in one of
           ``<data_root>/MNIST/raw``, ``<data_root>/mnist`` or ``<data_root>``; else downloaded
           through torchvision into ``<cache_dir>`` when online. Never a fallback: with only MNIST's
           test set on disk (and no download) it raises DataUnavailable.
  standin  scikit-learn's ``load_digits`` (1797 images, 8x8 = 64 values), scaled to [0, 1]; a
           fixed 80/20 split (random_state 0) gives 1437 train and 360 test images.
  auto     in this order:
           1. the full MNIST on disk (``data_source`` ``mnist``), else downloaded when allowed;
           2. MNIST's test set alone (``t10k-images-idx3-ubyte`` in the same directories, no train
              file), split into disjoint parts: a ``numpy.random.default_rng(0)`` permutation of its
              10,000 images, the first 8,000 of it train and the last 2,000 test. ``data_source`` =
              MNIST_TEST_ONLY_SOURCE, ``mnist test set only (t10k, 10,000 digits; seeded split, rng 0:
              8,000 train / 2,000 test, disjoint)``: real MNIST digits, but not the training set the
              study names;
           3. Fashion-MNIST when its IDX files are in ``<data_root>/fashion-mnist`` (or
              ``FashionMNIST/raw``, ``fashion_mnist``), with ``data_source`` = ``fashion-mnist
              (substitute for MNIST)``: a real image set of the same format (60,000/10,000 28x28 grey
              images) but not MNIST;
           4. standin.
           At full scale the workload turns ``auto`` into ``real`` (``locate.at_scale``) and the
           preflight check (``workloads.data.locate.require``) demands the full MNIST itself.

Labels are not loaded: the autoencoder does not use them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .idx import read_idx, write_idx  # noqa: F401  (write_idx: fixtures in the real format)
from .locate import IDX_FILES, idx_dirs, idx_files, mnist_test_files  # noqa: F401  (IDX_FILES: kept importable from here)
from .shakespeare import NEGATIVE_CACHE_S, DataUnavailable, _offline

FASHION_MNIST_SOURCE = "fashion-mnist (substitute for MNIST)"
# MNIST's test set alone (the training images absent): a fixed, seeded split into disjoint parts
MNIST_TEST_IMAGES = 10_000
MNIST_TEST_ONLY_SEED = 0
MNIST_TEST_ONLY_TRAIN = 8_000
MNIST_TEST_ONLY_TEST = 2_000
MNIST_TEST_ONLY_SOURCE = ("mnist test set only (t10k, 10,000 digits; seeded split, rng 0: "
                          "8,000 train / 2,000 test, disjoint)")


@dataclass
class ImageSplits:
    train: torch.Tensor   # (N, D) float32 in [0, 1]
    test: torch.Tensor
    data_source: str

    @property
    def dim(self) -> int:
        return self.train.shape[1]


def _flat(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / 255.0)


def mnist_from_dir(root: Path) -> ImageSplits | None:
    found = idx_files(root, "mnist")
    if found is None:
        return None
    return ImageSplits(_flat(read_idx(found["train"])), _flat(read_idx(found["test"])), "mnist")


def split_indices(n: int = MNIST_TEST_IMAGES) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of MNIST's test set: a default_rng(0) permutation, the first
    8,000 train and the last 2,000 test."""
    perm = np.random.default_rng(MNIST_TEST_ONLY_SEED).permutation(n)
    return perm[:MNIST_TEST_ONLY_TRAIN], perm[MNIST_TEST_ONLY_TRAIN:]


def mnist_test_only_from_dir(root: Path) -> ImageSplits | None:
    """MNIST's test set alone, split (split_indices); data_source MNIST_TEST_ONLY_SOURCE."""
    files = mnist_test_files(root)
    if not files:
        return None
    path = files[0]
    X = read_idx(path)
    if len(X) != MNIST_TEST_IMAGES:
        raise DataUnavailable(f"{path} holds {len(X)} images, not MNIST's {MNIST_TEST_IMAGES:,} test images")
    tr, te = split_indices(len(X))
    return ImageSplits(_flat(X[tr]), _flat(X[te]), MNIST_TEST_ONLY_SOURCE)


def fashion_mnist_from_dir(root: Path) -> ImageSplits | None:
    """Fashion-MNIST as MNIST's substitute (same IDX format and scaling), disclosed in data_source."""
    found = idx_files(root, "fashion-mnist")
    if found is None:
        return None
    return ImageSplits(_flat(read_idx(found["train"])), _flat(read_idx(found["test"])), FASHION_MNIST_SOURCE)


def _download_mnist(cache_dir: Path) -> bool:
    if _offline():
        return False
    marker = cache_dir / "MNIST.unreachable"
    if marker.exists() and time.time() - marker.stat().st_mtime < NEGATIVE_CACHE_S:
        return False
    try:
        from torchvision.datasets import MNIST
        cache_dir.mkdir(parents=True, exist_ok=True)
        MNIST(str(cache_dir), train=True, download=True)
        MNIST(str(cache_dir), train=False, download=True)
        return True
    except Exception:  # noqa: BLE001 - offline: remember it for an hour
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass
        return False


def digits_standin() -> ImageSplits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    X = load_digits().data.astype(np.float32) / 16.0  # pixel values 0..16
    tr, te = train_test_split(X, test_size=0.2, random_state=0)
    return ImageSplits(torch.from_numpy(tr), torch.from_numpy(te), "standin:sklearn_digits")


def load_images(data: str = "auto", data_root: Path | None = None, cache_dir: Path | None = None,
                download: bool = True) -> ImageSplits:
    """The images ``data`` asks for (the module docstring gives the order of ``auto``)."""
    if data not in ("auto", "real", "standin"):
        raise ValueError(f"data must be auto|real|standin, got {data!r}")
    if data in ("auto", "real"):
        roots = [Path(p) for p in (data_root, cache_dir) if p is not None]
        for root in roots:
            found = mnist_from_dir(root)
            if found is not None:
                return found
        if download and cache_dir is not None and _download_mnist(Path(cache_dir)):
            found = mnist_from_dir(Path(cache_dir))
            if found is not None:
                return found
        if data == "real":
            looked = ", ".join(str(d) for r in roots for d in idx_dirs(r, "mnist")) or "no data root"
            partial = next((f[0].parent for r in roots if (f := mnist_test_files(r))), None)
            note = (f"; only MNIST's test set is in {partial}, and data: real needs the full MNIST"
                    if partial is not None else "")
            raise DataUnavailable(f"MNIST IDX files (train-images-idx3-ubyte and t10k-images-idx3-ubyte) not found "
                                  f"in {looked}, and not downloadable{note}")
        for root in roots:
            found = mnist_test_only_from_dir(root)
            if found is not None:
                return found
        for root in roots:
            found = fashion_mnist_from_dir(root)
            if found is not None:
                return found
    return digits_standin()
