"""Data for the credit-bridge workload: the synthetic teacher-student ladder and CIFAR-10.

Synthetic task (the seed says only "teacher-student classification"; the rest is our construction,
docs/studies/credit-bridge.md, 'Synthetic teacher'):
x ~ N(0, I_d); teacher h_{l+1} = phi_alpha(W_l h_l / sqrt(d)), W_l ~ N(0, 1), l = 0..L-1;
y = argmax(U h_L + b) with U ~ N(0, 1) (C x d) and per-class offsets b chosen on the training inputs
so that classes come out roughly uniform (the offsets keep the teacher a fixed function; resampling
would change the input distribution). The teacher (weights and inputs) depends only on
(teacher_seed, alpha, L, d, C, sizes), so every method and student seed sees the same data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Arrays:
    x_train: np.ndarray  # float32 (N, D)
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    max_class_share: float  # largest class frequency in the training labels

    @property
    def in_dim(self) -> int:
        return self.x_train.shape[1]


def phi_np(z: np.ndarray, alpha: float) -> np.ndarray:
    return (1.0 - alpha) * z + alpha * np.tanh(z)


def balance_offsets(scores: np.ndarray, iters: int = 300) -> np.ndarray:
    """Per-class offsets b such that argmax(scores + b) is close to uniform over classes."""
    n, c = scores.shape
    b = np.zeros(c)
    step = scores.std()
    best, best_b = np.inf, b.copy()
    for _ in range(iters):
        share = np.bincount(np.argmax(scores + b, 1), minlength=c) / n
        worst = share.max()
        if worst < best:
            best, best_b = worst, b.copy()
        if worst <= 1.0 / c + 0.01:
            break
        b -= step * (share - 1.0 / c)
        step *= 0.985
    return best_b


def teacher_task(alpha: float, depth: int, width: int, n_classes: int, n_train: int, n_test: int,
                 teacher_seed: int = 0) -> Arrays:
    key = [int(teacher_seed), int(round(alpha * 10000)), int(depth), int(width), int(n_classes)]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    weights = [rng.standard_normal((width, width)) for _ in range(depth)]
    readout = rng.standard_normal((n_classes, width))
    x = rng.standard_normal((n_train + n_test, width))
    h = x
    for w in weights:
        h = phi_np(h @ w.T / np.sqrt(width), alpha)
    scores = h @ readout.T
    offsets = balance_offsets(scores[:n_train])
    y = np.argmax(scores + offsets, 1).astype(np.int64)
    share = float(np.bincount(y[:n_train], minlength=n_classes).max() / max(1, n_train))
    x = x.astype(np.float32)
    return Arrays(x[:n_train], y[:n_train], x[n_train:], y[n_train:], "synthetic:teacher", share)


def cifar_task(data_root: Path, data: str, n_train: int, n_test: int, standin_train: int, standin_test: int,
               seed: int = 0) -> Arrays:
    from workloads.data.cifar10 import load_cifar10, subset

    imgs = load_cifar10(Path(data_root), data, standin_train=standin_train, standin_test=standin_test)
    xtr, ytr = subset(imgs.x_train, imgs.y_train, n_train, seed)
    xte, yte = subset(imgs.x_test, imgs.y_test, n_test, seed + 1)
    share = float(np.bincount(ytr, minlength=10).max() / max(1, len(ytr)))
    return Arrays(xtr, ytr, xte, yte, imgs.source, share)
