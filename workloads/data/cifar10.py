"""CIFAR-10 as flat, normalized vectors (3072 values per image), for MLP workloads.

Sources (``source`` argument, the ``data`` config key of a workload):
  real      the standard CIFAR-10 python batches, looked for under ``<data_root>/cifar-10-batches-py``
            and ``<data_root>/cifar10/cifar-10-batches-py``; when absent and the download host is
            reachable, torchvision downloads and checks them into ``<data_root>/cifar10``.
  standin   an offline, seeded, class-conditional image-like data set of the same shape
            (3 x 32 x 32 = 3072 inputs, 10 classes). It is NOT CIFAR: accuracies on it say nothing
            about CIFAR-10; it only lets CPU runs and tests exercise the same code path.
  auto      real if found (or downloadable); else Fashion-MNIST when its IDX files are under
            ``<data_root>/fashion-mnist`` (or ``FashionMNIST/raw``, ``fashion_mnist``), with
            ``source`` = ``fashion-mnist (substitute for CIFAR-10)``: a real 10-class image set,
            but grey 28x28 clothing (784 inputs), not CIFAR-10, so accuracies are not CIFAR-10's;
            else standin. At full scale the preflight check (``workloads.data.require``) demands
            CIFAR-10 itself.

Images are flattened in channel-major order (C, H, W), scaled to [0, 1] and normalized per channel
with the usual CIFAR-10 mean and std (Fashion-MNIST: its own mean 0.2860 and std 0.3530); no
augmentation. Every result records ``source``.
"""
from __future__ import annotations

import os
import pickle
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .locate import cifar10_dir, idx_files

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
SHAPE = (3, 32, 32)
DIM = 3 * 32 * 32
N_CLASSES = 10
DOWNLOAD_HOST = ("www.cs.toronto.edu", 443)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
FASHION_MNIST_SOURCE = "fashion-mnist (substitute for CIFAR-10)"


class DataUnavailable(RuntimeError):
    """``source="real"`` was asked for and CIFAR-10 can be neither found nor downloaded."""


@dataclass
class FlatImages:
    x_train: np.ndarray  # float32 (N, 3072), normalized
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    source: str          # "real:cifar10", FASHION_MNIST_SOURCE or "standin:blobs"

    @property
    def n_classes(self) -> int:
        return N_CLASSES


def normalize(images_chw01: np.ndarray) -> np.ndarray:
    """(N, 3, 32, 32) in [0, 1] -> (N, 3072) float32 normalized per channel."""
    mean = np.asarray(MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(STD, dtype=np.float32).reshape(1, 3, 1, 1)
    out = images_chw01.astype(np.float32)  # a copy; the arithmetic below stays in place
    out -= mean
    out /= std
    return out.reshape(len(images_chw01), DIM)


def batch_dir(data_root: Path) -> Path | None:
    """The directory holding the python batches, if present (``cifar-10-batches-py`` under the
    data root or under ``<data_root>/cifar10``)."""
    return cifar10_dir(Path(data_root))


def reachable(host: tuple[str, int] = DOWNLOAD_HOST, timeout: float = 3.0) -> bool:
    """Whether a download can even be tried (avoids long hangs offline)."""
    if os.environ.get("OVERNIGHT_OFFLINE"):
        return False
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def read_batches(directory: Path) -> FlatImages:
    """The python batches (``data_batch_1..5``, ``test_batch``): pickled dicts with ``data``
    (N x 3072 uint8, already channel-major) and ``labels``."""
    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for name in names:
            with open(directory / name, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, *SHAPE))
            ys.append(np.asarray(d[b"labels"], dtype=np.int64))
        return normalize(np.concatenate(xs).astype(np.float32) / 255.0), np.concatenate(ys)

    train_names = sorted(p.name for p in directory.glob("data_batch_*"))
    xtr, ytr = read(train_names)
    xte, yte = read(["test_batch"])
    return FlatImages(xtr, ytr, xte, yte, "real:cifar10")


def download(data_root: Path) -> Path | None:
    """Fetch and unpack the python batches with torchvision (checksummed) into <data_root>/cifar10."""
    if not reachable():
        return None
    root = Path(data_root) / "cifar10"
    root.mkdir(parents=True, exist_ok=True)
    try:
        from torchvision.datasets import CIFAR10  # heavy import, only when needed
        CIFAR10(str(root), train=True, download=True)
    except Exception:  # noqa: BLE001 - network or checksum failure: the caller falls back or reports
        return None
    return batch_dir(data_root)


def load_real(data_root: Path, download_if_missing: bool = True) -> FlatImages | None:
    """CIFAR-10 from the python batches under ``data_root``, downloading them when possible."""
    found = batch_dir(data_root)
    if found is None and download_if_missing:
        found = download(data_root)
    if found is None:
        return None
    return read_batches(found)


def fashion_mnist_substitute(data_root: Path) -> FlatImages | None:
    """Fashion-MNIST from its IDX files (images and labels), flat (784) and normalized, or None."""
    from .idx import read_idx

    found = idx_files(Path(data_root), "fashion-mnist", labels=True)
    if found is None:
        return None

    def flat(a: np.ndarray) -> np.ndarray:
        out = a.reshape(len(a), -1).astype(np.float32)
        out /= 255.0
        out -= FASHION_MNIST_MEAN
        out /= FASHION_MNIST_STD
        return out

    return FlatImages(flat(read_idx(found["train"])), read_idx(found["train_labels"]).astype(np.int64),
                      flat(read_idx(found["test"])), read_idx(found["test_labels"]).astype(np.int64),
                      FASHION_MNIST_SOURCE)


def standin(n_train: int = 10000, n_test: int = 2000, seed: int = 0) -> FlatImages:
    """Seeded class-conditional images shaped like CIFAR-10.

    Each class has a mean in a 48-dim latent space; a sample is its class mean plus unit Gaussian
    noise, mapped through 48 fixed smooth colour fields (random 3x8x8 patterns upsampled to 32x32)
    and a sigmoid, plus pixel noise. Classes overlap, so a classifier is far from perfect.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC1FA]))
    k = 48
    coarse = rng.standard_normal((k, 3, 8, 8), dtype=np.float32)
    fields = _upsample4(coarse).reshape(k, DIM)
    fields /= np.linalg.norm(fields, axis=1, keepdims=True) / np.sqrt(DIM / k)
    class_means = 0.2 * rng.standard_normal((N_CLASSES, k), dtype=np.float32)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % N_CLASSES).astype(np.int64)
        z = class_means[y] + rng.standard_normal((n, k), dtype=np.float32)
        img = rng.standard_normal((n, DIM), dtype=np.float32)
        img *= -0.35
        img -= z @ fields / np.sqrt(k)
        np.exp(img, out=img)  # sigmoid in place: 1 / (1 + exp(-pixels))
        img += 1.0
        np.reciprocal(img, out=img)
        return normalize(img.reshape(n, *SHAPE)), y

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return FlatImages(xtr, ytr, xte, yte, "standin:blobs")


def _upsample4(a: np.ndarray) -> np.ndarray:
    """(k, 3, 8, 8) -> (k, 3, 32, 32) by separable linear interpolation (smooth, no torch needed)."""
    src = np.linspace(0, 7, 32)
    lo = np.floor(src).astype(int).clip(0, 6)
    w = (src - lo).astype(np.float32)
    rows = a[:, :, lo, :] * (1 - w)[None, None, :, None] + a[:, :, lo + 1, :] * w[None, None, :, None]
    return rows[:, :, :, lo] * (1 - w) + rows[:, :, :, lo + 1] * w


def load_cifar10(data_root: Path, source: str = "auto", download: bool = True, *,
                 standin_train: int = 10000, standin_test: int = 2000, standin_seed: int = 0) -> FlatImages:
    """CIFAR-10 (flat, normalized) from ``source``: auto | real | standin."""
    if source not in ("auto", "real", "standin"):
        raise ValueError(f"data must be auto, real or standin (got {source!r})")
    if source in ("auto", "real"):
        real = load_real(Path(data_root), download_if_missing=download)
        if real is not None:
            return real
        if source == "real":
            raise DataUnavailable(
                f"CIFAR-10 not found under {data_root} (cifar-10-batches-py) and it could not be downloaded")
        substitute = fashion_mnist_substitute(Path(data_root))
        if substitute is not None:
            return substitute
    return standin(standin_train, standin_test, standin_seed)


def subset(x: np.ndarray, y: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random subset of n rows (all rows when n <= 0 or n >= len)."""
    if n <= 0 or n >= len(x):
        return x, y
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    return x[idx], y[idx]
