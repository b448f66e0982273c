"""Task 1 (seed 000): an MLP classifier on high-dimensional two spirals, its hidden activations
quantized and corrected (docs/studies/quantization-correction.md, 'Classification').

A trial: spirals -> float backbone (stage cache) -> first-layer outputs -> scales -> float,
quantized and oracle accuracy -> correctors trained by the protocol -> corrected accuracy -> row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F

from workloads.substrate.correction import (FloatTap, Point, QuantTap, build_correctors, calibrated_scales,
                                            corrector_keys)
from workloads.substrate.lambda_schedule import train_correctors_lambda
from workloads.substrate.loops import train_steps
from workloads.substrate.rows import PhaseClock, result_row
from workloads.substrate.stages import frozen, load_state, staged, state_to_bytes, trial_checkpoint, trial_seed

from .params import ClassificationParams


def run(p: dict, ctx) -> dict:
    """One trial; ``p`` is the validated config (ClassificationParams)."""
    clock = PhaseClock()
    seed = trial_seed(p, ctx)
    model, data = float_backbone(p, seed, ctx)
    clock.mark("float")
    scales = calibrated_scales(model, data.train_x, p["bits"])
    acc_f, acc_q, acc_o = uncorrected_accuracies(model, data, scales, p)
    correctors = build_correctors(model.points, p["correct_every"], p["correction_hidden"], p["correction_init"],
                                  seed, ctx.device)
    final_loss, acc_c = float("nan"), acc_q  # without correctors: corrected = quantized
    if len(correctors):
        final_loss = PROTOCOLS[p["protocol"]](model, correctors, data.train_x, scales, p, ctx)
        with torch.no_grad():
            acc_c = accuracy(model(data.test_x, QuantTap(p["bits"], scales, correctors)), data.test_y)
    return result_row(acc_f, acc_q, acc_c, p=p, higher_is_better=True, n_correctors=len(correctors),
                      n_points=len(model.points), final_loss=final_loss, data_source="spirals", clock=clock,
                      acc_float=acc_f, acc_quant=acc_q, acc_corrected=acc_c, acc_oracle=acc_o)


# -------------------------------------------------------------------------------- data and model
def make_spirals(n: int = 2000, noise: float = 0.3, turns: float = 3.0, dim: int = 100, seed: int = 42):
    """Two interleaved spirals embedded in ``dim`` dimensions, split 80/20.

    n/2 points per class on theta = linspace(0, 2 pi turns, n/2), r = theta / (2 pi turns); class 1
    is class 0 rotated by pi. Noise N(0, (0.1 noise)^2) per coordinate, then shuffled (numpy seeded
    with the seed); train_test_split(random_state=seed); then x W + b with W = N(0,1)/sqrt(2) of
    shape (2, dim) and b = 0.1 N(0,1), again from the seed."""
    rs = np.random.RandomState(seed)
    m = n // 2
    theta = np.linspace(0.0, 2 * np.pi * turns, m)
    r = theta / (2 * np.pi * turns)
    arm = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    X = np.concatenate([arm, -arm])  # rotation by pi maps (a, b) to (-a, -b)
    y = np.concatenate([np.zeros(m, dtype=np.int64), np.ones(m, dtype=np.int64)])
    X = X + rs.normal(0.0, 0.1 * noise, size=X.shape)
    perm = rs.permutation(len(X))
    X, y = X[perm], y[perm]
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=seed)
    emb = np.random.RandomState(seed)
    W = emb.randn(2, dim) / np.sqrt(2.0)
    b = 0.1 * emb.randn(dim)
    f32 = lambda a: torch.from_numpy((a @ W + b).astype(np.float32))  # noqa: E731
    return f32(Xtr), torch.from_numpy(ytr), f32(Xte), torch.from_numpy(yte)


class MLPClassifier(nn.Module):
    """depth x [Linear(width) + ReLU], then Linear(width -> classes). A quantization point after
    every hidden ReLU (P = depth); the head is not quantized."""

    def __init__(self, in_dim: int, width: int, depth: int, classes: int = 2):
        super().__init__()
        self.hidden = nn.ModuleList(nn.Linear(in_dim if i == 0 else width, width) for i in range(depth))
        self.head = nn.Linear(width, classes)
        self.points = [Point(str(i), "hidden", width) for i in range(depth)]

    def forward(self, x: torch.Tensor, tap=None, pre: bool = False) -> torch.Tensor:
        """``pre=True``: x is already the first layer's linear output (the backbone is frozen after
        float training, so it is computed once; with D = 10000 it is most of the cost)."""
        for i, layer in enumerate(self.hidden):
            x = torch.relu(x if pre and i == 0 else layer(x))
            if tap is not None:
                x = tap(str(i), "hidden", x)
        return self.head(x)


class FromFirstLayer(nn.Module):
    """The frozen classifier taking first-layer outputs (see ``MLPClassifier.forward``)."""

    def __init__(self, net: MLPClassifier):
        super().__init__()
        self.net, self.points = net, net.points

    def forward(self, h0: torch.Tensor, tap=None) -> torch.Tensor:
        return self.net(h0, tap, pre=True)


@dataclass(frozen=True)
class FirstLayerData:
    """The spirals as the frozen backbone's first linear layer maps them."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


# -------------------------------------------------------------------------------- phases
def float_backbone(p: dict, seed: int, ctx) -> tuple[FromFirstLayer, FirstLayerData]:
    """The float classifier, trained full batch with Adam on CE (or loaded from the stage cache),
    frozen; and the spirals through its first layer."""
    data_kw = dict(n=p["n_samples"], noise=p["noise"], turns=p["turns"], dim=p["input_dim"], seed=seed)
    Xtr, ytr, Xte, yte = (t.to(ctx.device) for t in make_spirals(**data_kw))
    new_model = lambda: MLPClassifier(p["input_dim"], p["width"], p["depth"])  # noqa: E731

    def train() -> bytes:
        torch.manual_seed(seed)
        model = new_model().to(ctx.device)
        train_steps(torch.optim.Adam(model.parameters(), lr=p["float_lr"]), p["float_steps"],
                    lambda step: F.cross_entropy(model(Xtr), ytr), ctx=ctx, phase="float",
                    report_every=100, report_last=True)
        return state_to_bytes(model)

    key = {"stage": "quantcorr.spirals_backbone", "v": 1, "width": p["width"], "depth": p["depth"],
           "float_steps": p["float_steps"], "float_lr": p["float_lr"], **data_kw}
    blob = staged(p["stage_cache"], ctx, trial_checkpoint(ctx, ClassificationParams, p, key), key, train)
    net = frozen(load_state(new_model(), blob, ctx.device)).eval()
    with torch.no_grad():
        return FromFirstLayer(net), FirstLayerData(net.hidden[0](Xtr), ytr, net.hidden[0](Xte), yte)


@torch.no_grad()
def uncorrected_accuracies(model: FromFirstLayer, data: FirstLayerData, scales: dict[str, float],
                           p: dict) -> tuple[float, float, float]:
    """Test accuracy float, quantized, and oracle: a parallel float path replaces the quantized
    activation at the corrector points (the quantized accuracy when there are none)."""
    bits = p["bits"]
    acc_f = accuracy(model(data.test_x), data.test_y)
    acc_q = accuracy(model(data.test_x, QuantTap(bits, scales)), data.test_y)
    oracle_keys = corrector_keys(model.points, p["correct_every"])
    if not oracle_keys:
        return acc_f, acc_q, acc_q
    ftap = FloatTap(record=True)
    model(data.test_x, ftap)
    oracle = QuantTap(bits, scales, oracle=ftap.acts, oracle_keys=oracle_keys)
    return acc_f, acc_q, accuracy(model(data.test_x, oracle), data.test_y)


# -------------------------------------------------------------------------------- protocols
def hydra(model: FromFirstLayer, correctors: nn.ModuleDict, X: torch.Tensor, scales: dict[str, float],
          p: dict, ctx) -> float:
    """Correctors distilled on the float logits: full batch, Adam, MSE to the (fixed) teacher."""
    with torch.no_grad():
        teacher = model(X)
    student = lambda: model(X, QuantTap(p["bits"], scales, correctors))  # noqa: E731
    return train_steps(torch.optim.Adam(correctors.parameters(), lr=p["correction_lr"]), p["correction_steps"],
                       lambda step: F.mse_loss(student(), teacher), ctx=ctx, phase="correction")


def lambda_(model: FromFirstLayer, correctors: nn.ModuleDict, X: torch.Tensor, scales: dict[str, float],
            p: dict, ctx) -> float:
    """Hybrid output/per-point loss, then corrector QAT (workloads.substrate.lambda_schedule)."""
    return train_correctors_lambda(model, correctors, X, p["bits"], scales, steps=p["correction_steps"],
                                   lr=p["correction_lr"], lam=p["lam"],
                                   legacy_h0_unquantized=p["legacy_h0_unquantized"], ctx=ctx)


PROTOCOLS = {"hydra": hydra, "lambda": lambda_}
