"""Task 1 (seed 000): MLP classifier on high-dimensional two-spirals (spec §2.1-§2.3)."""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from orchestrator.interface import check_finite

from .common import Checkpointer, backbone, distill_correctors, frozen, load_state, state_to_bytes, trial_seed
from .correction import FloatTap, Point, QuantTap, build_correctors, corrector_keys
from .lambda_protocol import train_correctors_lambda
from .metrics import summary
from .quant import Calibrator


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
    f32 = lambda a: torch.from_numpy((a @ W + b).astype(np.float32))
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


class _Pre(nn.Module):
    """The frozen classifier taking first-layer outputs (see ``MLPClassifier.forward``)."""

    def __init__(self, net: MLPClassifier):
        super().__init__()
        self.net, self.points = net, net.points

    def forward(self, h0: torch.Tensor, tap=None) -> torch.Tensor:
        return self.net(h0, tap, pre=True)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


def run_classification(cfg: dict, ctx) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    dev = ctx.device
    seed = trial_seed(cfg, ctx)
    width, depth, bits = int(cfg["width"]), int(cfg["depth"]), int(cfg["bits"])
    every, hidden = int(cfg["correct_every"]), int(cfg.get("correction_hidden", 0))
    protocol = cfg.get("protocol", "hydra")
    data_kw = dict(n=int(cfg.get("n_samples", 2000)), noise=float(cfg.get("noise", 0.3)),
                   turns=float(cfg.get("turns", 3.0)), dim=int(cfg.get("input_dim", 100)), seed=seed)
    Xtr, ytr, Xte, yte = (t.to(dev) for t in make_spirals(**data_kw))
    float_steps, float_lr = int(cfg.get("float_steps", 1000)), float(cfg.get("float_lr", 1e-3))

    def build() -> bytes:
        torch.manual_seed(seed)
        model = MLPClassifier(data_kw["dim"], width, depth).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=float_lr)
        for step in range(1, float_steps + 1):  # full batch
            loss = nn.functional.cross_entropy(model(Xtr), ytr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            check_finite(step, float_loss=value)
            if step % 100 == 0 or step == float_steps:
                ctx.report(step, phase="float", loss=value)
        return state_to_bytes(model)

    key = {"stage": "quantcorr.spirals_backbone", "v": 1, "width": width, "depth": depth,
           "float_steps": float_steps, "float_lr": float_lr, **data_kw}
    blob = backbone(cfg, ctx, Checkpointer(ctx, key), key, build)
    backbone_net = frozen(load_state(MLPClassifier(data_kw["dim"], width, depth), blob, dev)).eval()
    with torch.no_grad():
        Xtr, Xte = backbone_net.hidden[0](Xtr), backbone_net.hidden[0](Xte)
    model = _Pre(backbone_net)
    t_float, c_float = time.perf_counter(), time.process_time()

    # Scales once, on the float model, over the full training set.
    cal = Calibrator()
    with torch.no_grad():
        model(Xtr, FloatTap(cal))
    scales = cal.scales(bits)

    with torch.no_grad():
        logits_f = model(Xte)
        acc_f = accuracy(logits_f, yte)
        acc_q = accuracy(model(Xte, QuantTap(bits, scales)), yte)
        # Oracle: a parallel float path replaces the quantized activation at the corrector points.
        ftap = FloatTap(record=True)
        model(Xte, ftap)
        okeys = corrector_keys(model.points, every)
        acc_o = accuracy(model(Xte, QuantTap(bits, scales, oracle=ftap.acts, oracle_keys=okeys)), yte) \
            if okeys else acc_q

    correctors = build_correctors(model.points, every, hidden, cfg.get("correction_init", "default"), seed, dev)
    n_corr = len(correctors)
    final_loss = float("nan")
    if n_corr:
        steps, lr = int(cfg.get("correction_steps", 600)), float(cfg.get("correction_lr", 1e-4))
        if protocol == "hydra":
            with torch.no_grad():
                logits_tr = model(Xtr)  # full batch, eval mode: the teacher is the same every step
            final_loss = distill_correctors(
                correctors, ((s, None) for s in range(1, steps + 1)),
                student=lambda _: model(Xtr, QuantTap(bits, scales, correctors)),
                teacher=lambda _: logits_tr, lr=lr, ctx=ctx)
        elif protocol == "lambda":
            final_loss = train_correctors_lambda(
                model, correctors, Xtr, bits, scales, steps=steps, lr=lr, lam=float(cfg["lam"]),
                legacy_h0_unquantized=bool(cfg.get("legacy_h0_unquantized", False)), ctx=ctx)
        else:
            raise ValueError(f"protocol for classification must be hydra|lambda, got {protocol!r}")
        with torch.no_grad():
            acc_c = accuracy(model(Xte, QuantTap(bits, scales, correctors)), yte)
    else:
        acc_c = acc_q  # skip rule: no corrector, corrected = quantized, recovery 0

    row = summary(acc_f, acc_q, acc_c, higher_is_better=True, guard=cfg.get("guard", "hydra"),
                  rel=float(cfg.get("reliable_gap_rel", 0.005)))
    if not n_corr:
        row["recovery_pct"] = 0.0
    row.update(acc_float=acc_f, acc_quant=acc_q, acc_corrected=acc_c, acc_oracle=acc_o,
               num_correction_layers=n_corr, num_quant_points=len(model.points),
               correction_final_loss=final_loss, data_source="spirals",
               float_phase_s=t_float - t0, float_phase_cpu_s=c_float - c0,
               total_s=time.perf_counter() - t0, total_cpu_s=time.process_time() - c0)
    if not math.isfinite(final_loss) and n_corr:
        from orchestrator.interface import Diverged
        raise Diverged("non-finite correction loss", metrics=row)
    return row
