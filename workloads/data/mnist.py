"""Images for the quantcorr autoencoder (docs/studies/quantization-correction.md, 'Data').

Sources (``data`` config key):
  real     MNIST, 28x28 flattened to 784 values in [0, 1], no normalisation. Read from the IDX files
           (``train-images-idx3-ubyte``, ``t10k-images-idx3-ubyte``, plain or ``.gz``) found in
           ``<data_root>/MNIST/raw``, ``<data_root>/mnist`` or ``<data_root>``; else downloaded
           through torchvision into ``<cache_dir>`` when online.
  standin  scikit-learn's ``load_digits`` (1797 images, 8x8 = 64 values), scaled to [0, 1]; a
           fixed 80/20 split (random_state 0) gives 1437 train and 360 test images.
  auto     real if found or downloadable, else standin.

Labels are loaded too but the autoencoder does not use them.
"""
from __future__ import annotations

import gzip
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .shakespeare import NEGATIVE_CACHE_S, DataUnavailable, _offline

IDX_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte",
             "train_labels": "train-labels-idx1-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic 0x0000 <dtype> <ndim>, ndim big-endian uint32
    sizes, then the data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic)")
    dtype, ndim = raw[2], raw[3]
    if dtype not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX dtype 0x{dtype:02x}")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[dtype], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} values for shape {dims}")
    return data.reshape(dims)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (used by tests to make fixtures in the real format)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + a.tobytes())


def _find_idx(data_root: Path, stem: str) -> Path | None:
    for d in (data_root / "MNIST" / "raw", data_root / "mnist", data_root):
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


@dataclass
class ImageSplits:
    train: torch.Tensor   # (N, D) float32 in [0, 1]
    test: torch.Tensor
    data_source: str

    @property
    def dim(self) -> int:
        return self.train.shape[1]


def mnist_from_dir(root: Path) -> ImageSplits | None:
    tr, te = _find_idx(root, IDX_FILES["train"]), _find_idx(root, IDX_FILES["test"])
    if tr is None or te is None:
        return None
    flat = lambda a: torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / 255.0)  # noqa: E731
    return ImageSplits(flat(read_idx(tr)), flat(read_idx(te)), "mnist")


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
    return digits_standin()
