"""Images for the quantcorr autoencoder (docs/studies/quantization-correction.md, 'Data').

Sources (``data`` config key):
  real     MNIST, 28x28 flattened to 784 values in [0, 1], no normalisation. Read from the IDX files
           (``train-images-idx3-ubyte``, ``t10k-images-idx3-ubyte``, plain or ``.gz``) found in
           ``<data_root>/MNIST/raw``, ``<data_root>/mnist`` or ``<data_root>``; else downloaded
           through torchvision into ``<cache_dir>`` when online.
  standin  scikit-learn's ``load_digits`` (1797 images, 8x8 = 64 values), scaled to [0, 1]; a
           fixed 80/20 split (random_state 0) gives 1437 train and 360 test images.
  auto     MNIST if found or downloadable; else Fashion-MNIST when its IDX files are in
           ``<data_root>/fashion-mnist`` (or ``FashionMNIST/raw``, ``fashion_mnist``), with
           ``data_source`` = ``fashion-mnist (substitute for MNIST)``: a real image set of the same
           format (60,000/10,000 28x28 grey images) but not MNIST; else standin. At full scale the
           preflight check (``workloads.data.require``) demands MNIST itself.

Labels are loaded too but the autoencoder does not use them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .idx import read_idx, write_idx  # noqa: F401  (write_idx: fixtures in the real format)
from .locate import IDX_FILES, idx_files  # noqa: F401  (IDX_FILES: kept importable from here)
from .shakespeare import NEGATIVE_CACHE_S, DataUnavailable, _offline

FASHION_MNIST_SOURCE = "fashion-mnist (substitute for MNIST)"


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
        from torchvision.datasets import MNIST  # noqa: PLC0415
        cache_dir.mkdir(parents=True, exist_ok=True)
        MNIST(str(cache_dir), train=True, download=True)
        MNIST(str(cache_dir), train=False, download=True)
        return True
    except Exception:  # offline: remember it for an hour
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass
        return False


def digits_standin() -> ImageSplits:
    from sklearn.datasets import load_digits  # noqa: PLC0415
    from sklearn.model_selection import train_test_split  # noqa: PLC0415
    X = load_digits().data.astype(np.float32) / 16.0  # pixel values 0..16
    tr, te = train_test_split(X, test_size=0.2, random_state=0)
    return ImageSplits(torch.from_numpy(tr), torch.from_numpy(te), "standin:sklearn_digits")


def load_images(data: str = "auto", data_root: Path | None = None, cache_dir: Path | None = None,
                download: bool = True) -> ImageSplits:
    if data not in ("auto", "real", "standin"):
        raise ValueError(f"data must be auto|real|standin, got {data!r}")
    if data in ("auto", "real"):
        for root in [p for p in (data_root, cache_dir) if p is not None]:
            found = mnist_from_dir(Path(root))
            if found is not None:
                return found
        if download and cache_dir is not None and _download_mnist(Path(cache_dir)):
            found = mnist_from_dir(Path(cache_dir))
            if found is not None:
                return found
        if data == "real":
            raise DataUnavailable(f"MNIST IDX files not found under {data_root} or {cache_dir} and not downloadable")
        for root in [p for p in (data_root, cache_dir) if p is not None]:
            found = fashion_mnist_from_dir(Path(root))
            if found is not None:
                return found
    return digits_standin()
