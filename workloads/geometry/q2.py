"""Q2 of the geometry study (docs/studies/geometry.md, 'Q2'): a generic
element-wise corrector that predicts the accumulated error ``z_float - z_quant`` of one
residual-stream element from quantization-time statistics of that element, from the point's
identity, or from both.
"""
from __future__ import annotations

import copy
import math
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

VARIANTS = ("embedding_only", "features_only", "features_plus_embedding")
N_FEATURES = 5
Q2_MSE_GAIN = 0.15       # supported: features_only beats embedding_only on test MSE by >= 15% ...
Q2_LOSS_GAIN = 0.01      # ... and the best feature variant gains >= 0.01 nats downstream


def features(z_quant: torch.Tensor, z_pre: torch.Tensor, sat_mask: torch.Tensor, scale: float) -> torch.Tensor:
    """The five raw (not normalised) element features, stacked on a new last axis:
    [z_quant, z_quant - z_pre, sat_mask, scale, |z_quant|]."""
    return torch.stack([z_quant, z_quant - z_pre, sat_mask.to(z_quant.dtype),
                        torch.full_like(z_quant, float(scale)), z_quant.abs()], dim=-1)


def element_dataset(points: Sequence[Mapping[str, np.ndarray]], total_elements: int,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per point, ``total_elements // P`` elements drawn without replacement from the flattened
    (rows x d) train-trace arrays (all of them when the point has fewer).

    Each point mapping holds ``z_quant, z_pre, sat_mask, true_error`` (rows, d) and ``scale``.
    Returns features (n, 5) float32, target (n,) float32 = true_error, layer (n,) int64."""
    P = len(points)
    per_point = max(total_elements // max(P, 1), 1)
    feats, targets, layers = [], [], []
    for k, p in enumerate(points):
        n = p["z_quant"].size
        idx = rng.choice(n, size=min(per_point, n), replace=False)
        zq = torch.from_numpy(np.ascontiguousarray(p["z_quant"]).reshape(-1)[idx])
        zpre = torch.from_numpy(np.ascontiguousarray(p["z_pre"]).reshape(-1)[idx])
        mask = torch.from_numpy(np.ascontiguousarray(p["sat_mask"]).reshape(-1)[idx])
        feats.append(features(zq.float(), zpre.float(), mask, float(p["scale"])).numpy())
        targets.append(np.asarray(p["true_error"]).reshape(-1)[idx].astype(np.float32))
        layers.append(np.full(len(idx), k, dtype=np.int64))
    return {"features": np.concatenate(feats).astype(np.float32), "target": np.concatenate(targets),
            "layer": np.concatenate(layers)}


def _train_test_split(idx: np.ndarray, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The index split of sklearn's ``train_test_split(idx, test_size=test_frac, random_state=seed)``
    (ShuffleSplit: one ``RandomState(seed).permutation``, the first ceil(frac n) are test, the next
    n - ceil(frac n) train), without importing sklearn (seconds per trial process)."""
    n = len(idx)
    n_test = int(math.ceil(test_frac * n))
    perm = np.random.RandomState(seed).permutation(n)
    return idx[perm[n_test:n]], idx[perm[:n_test]]


def split_indices(n: int, seed: int, test_frac: float = 0.2, val_frac: float = 0.2) -> dict[str, np.ndarray]:
    """20% test, then 20% of the rest validation (the splits of sklearn with random_state=seed)."""
    rest, test = _train_test_split(np.arange(n), test_frac, seed)
    train, val = _train_test_split(rest, val_frac, seed)
    return {"train": train, "val": val, "test": test}


class ElementCorrector(nn.Module):
    """MLP in -> hidden -> ReLU -> hidden -> ReLU -> 1 on the features and/or an 8-d embedding of
    the point index. Works on any leading shape: features (..., 5), layer (...) -> (...)."""

    def __init__(self, variant: str, n_points: int, hidden: int = 64, embed_dim: int = 8):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.variant = variant
        self.use_features = variant != "embedding_only"
        self.embed = nn.Embedding(n_points, embed_dim) if variant != "features_only" else None
        d_in = (N_FEATURES if self.use_features else 0) + (embed_dim if self.embed is not None else 0)
        self.mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    @property
    def in_features(self) -> int:
        return self.mlp[0].in_features

    def forward(self, feats: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.use_features:
            parts.append(feats)
        if self.embed is not None:
            parts.append(self.embed(layer.expand(feats.shape[:-1])))
        return self.mlp(torch.cat(parts, dim=-1)).squeeze(-1)


@torch.no_grad()
def mse_of(model: ElementCorrector, feats: torch.Tensor, layer: torch.Tensor, target: torch.Tensor,
           batch: int = 65536) -> float:
    if len(target) == 0:
        return float("nan")
    total = 0.0
    for i in range(0, len(target), batch):
        pred = model(feats[i:i + batch], layer[i:i + batch])
        total += float(((pred - target[i:i + batch]) ** 2).sum())
    return total / len(target)


def train_variant(variant: str, data: Mapping[str, np.ndarray], split: Mapping[str, np.ndarray], n_points: int,
                  seed: int, epochs: int = 20, batch: int = 4096, lr: float = 1e-3, hidden: int = 64,
                  embed_dim: int = 8, device: str = "cpu") -> tuple[ElementCorrector, dict]:
    """Adam on MSE, shuffled mini-batches, the state with the best validation MSE is kept.
    Init and batch order come from generators seeded with ``seed`` (same for every variant)."""
    X = torch.from_numpy(data["features"]).to(device)
    y = torch.from_numpy(data["target"]).to(device)
    L = torch.from_numpy(data["layer"]).to(device)
    parts = {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in split.items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ElementCorrector(variant, n_points, hidden, embed_dim).to(device)
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    tr = parts["train"]
    Xv, Lv, yv = X[parts["val"]], L[parts["val"]], y[parts["val"]]
    best_val, best_state, best_epoch = float("inf"), copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, epochs + 1):
        model.train()
        perm = tr[torch.randperm(len(tr), generator=gen).to(device)]
        for i in range(0, len(perm), batch):
            b = perm[i:i + batch]
            loss = nn.functional.mse_loss(model(X[b], L[b]), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        val = mse_of(model, Xv, Lv, yv)
        if val < best_val:
            best_val, best_state, best_epoch = val, copy.deepcopy(model.state_dict()), epoch
    model.load_state_dict(best_state)
    model.eval()
    metrics = {
        "train_mse": mse_of(model, X[tr], L[tr], y[tr]),
        "val_mse": mse_of(model, Xv, Lv, yv),
        "test_mse": mse_of(model, X[parts["test"]], L[parts["test"]], y[parts["test"]]),
        "best_epoch": best_epoch,
        # the trivial predictor 0 (no correction), for scale
        "zero_test_mse": float((y[parts["test"]] ** 2).mean()) if len(parts["test"]) else float("nan"),
        "n_train": int(len(tr)), "n_val": int(len(parts["val"])), "n_test": int(len(parts["test"])),
    }
    for p in model.parameters():
        p.requires_grad_(False)
    return model, metrics


def mse_gain(mse_embedding_only: float, mse_features_only: float) -> float:
    """Relative test-MSE improvement of features_only over embedding_only."""
    return (mse_embedding_only - mse_features_only) / mse_embedding_only if mse_embedding_only > 0 else 0.0


def q2_verdict(mse_embedding_only: float, mse_features_only: float, loss_gain_features_only: float,
               loss_gain_features_plus_embedding: float) -> str:
    """supported: MSE gain >= 15% and best feature loss_gain >= 0.01; refuted: features_only has
    the higher MSE and no feature variant gains (best <= 0); unclear otherwise."""
    gain = mse_gain(mse_embedding_only, mse_features_only)
    best = max(loss_gain_features_only, loss_gain_features_plus_embedding)
    if gain >= Q2_MSE_GAIN and best >= Q2_LOSS_GAIN:
        return "supported"
    if mse_features_only > mse_embedding_only and best <= 0:
        return "refuted"
    return "unclear"
