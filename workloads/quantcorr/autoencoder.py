"""Task 2 (seed 000): MLP autoencoder on MNIST (stand-in: sklearn digits) (spec §2.1-§2.4).

Quantization points: after the ReLU of every encoder hidden layer ("enc{i}", group "enc"), after
the latent linear layer ("latent", never corrected) and after the ReLU of every decoder hidden layer
("dec{i}", group "dec"). The output layer is float. Correctors are placed by (j+1) % N within the
encoder and within the decoder; the accumulated error resets between groups and when the dimension
changes. Metric: reconstruction MSE on the first 256 test images (lower is better).
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.nn import functional as F

from orchestrator.interface import Diverged, check_finite
from workloads.data.mnist import load_images

from .common import (Checkpointer, backbone, distill_correctors, frozen, load_state, protocol_config,
                     state_to_bytes, trial_seed)
from .correction import FloatTap, Point, QuantTap, build_correctors
from .lambda_protocol import train_correctors_lambda
from .metrics import summary
from .params import AUTOENCODER_PROTOCOL_DEFAULTS
from .quant import Calibrator


class MLPAutoencoder(nn.Module):
    def __init__(self, in_dim: int, hidden: list[int], latent: int):
        super().__init__()
        enc_dims = [in_dim, *hidden]
        self.enc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(enc_dims, enc_dims[1:]))
        self.to_latent = nn.Linear(hidden[-1] if hidden else in_dim, latent)
        dec_dims = [latent, *reversed(hidden)]
        self.dec = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dec_dims, dec_dims[1:]))
        self.out = nn.Linear(dec_dims[-1], in_dim)
        self.points = ([Point(f"enc{i}", "enc", h) for i, h in enumerate(hidden)]
                       + [Point("latent", "latent", latent, correctable=False)]
                       + [Point(f"dec{i}", "dec", h) for i, h in enumerate(reversed(hidden))])

    def forward(self, x: torch.Tensor, tap=None) -> torch.Tensor:
        t = tap or (lambda k, g, v: v)
        for i, layer in enumerate(self.enc):
            x = t(f"enc{i}", "enc", torch.relu(layer(x)))
        x = t("latent", "latent", self.to_latent(x))
        for i, layer in enumerate(self.dec):
            x = t(f"dec{i}", "dec", torch.relu(layer(x)))
        return self.out(x)


# Declared next to the parameters (params.py), which validation imports without torch.
PROTOCOL_DEFAULTS = AUTOENCODER_PROTOCOL_DEFAULTS


def run_autoencoder(cfg: dict, ctx) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    protocol = cfg.get("protocol", "hydra")
    if protocol not in PROTOCOL_DEFAULTS:
        raise ValueError(f"protocol for autoencoder must be hydra|lambda, got {protocol!r}")
    P = protocol_config(PROTOCOL_DEFAULTS[protocol], cfg)
    dev = ctx.device
    seed = trial_seed(cfg, ctx)
    hidden, latent = [int(h) for h in cfg["hidden"]], int(cfg["latent"])
    bits, every, ch = int(cfg["bits"]), int(cfg["correct_every"]), int(cfg.get("correction_hidden", 0))
    batch = int(P.get("batch_size", 256))

    data = load_images(P.get("data", "auto"), ctx.data_root, ctx.cache_dir, bool(P.get("download", True)))
    Xtr = data.train.to(dev)
    if int(P.get("max_train_images", 0)):
        Xtr = Xtr[: int(P["max_train_images"])]
    Xte = data.test[: int(P.get("test_images", 256))].to(dev)  # the first test batch only
    float_epochs, float_lr = int(P["float_epochs"]), float(P["float_lr"])
    key = {"stage": "quantcorr.autoencoder", "v": 1, "hidden": hidden, "latent": latent, "seed": seed,
           "batch_size": batch, "float_epochs": float_epochs, "float_lr": float_lr,
           "data_source": data.data_source, "n_train": len(Xtr), "device": str(dev)}
    ckpt = Checkpointer(ctx, {**key, "trial": {k: cfg[k] for k in sorted(cfg) if k != "stage_cache"}})
    new_model = lambda: MLPAutoencoder(data.dim, hidden, latent)  # noqa: E731

    def build() -> bytes:
        torch.manual_seed(seed)
        model = new_model().to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=float_lr)
        start = 0
        prog = ckpt.get("float_progress")
        if prog is not None:
            load_state(model, prog["model"], dev)
            opt.load_state_dict(prog["opt"])
            torch.set_rng_state(prog["rng"])
            start = prog["epoch"]
        for epoch in range(start, float_epochs):
            perm = torch.randperm(len(Xtr))  # a shuffled loader; the last partial batch is kept
            total = 0.0
            for i in range(0, len(Xtr), batch):
                x = Xtr[perm[i:i + batch].to(dev)]
                loss = F.mse_loss(model(x), x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(x)
            check_finite(epoch + 1, float_loss=total / len(Xtr))
            ctx.report(epoch + 1, phase="float", loss=total / len(Xtr))
            ckpt.put("float_progress", {"model": state_to_bytes(model), "opt": opt.state_dict(),
                                        "rng": torch.get_rng_state(), "epoch": epoch + 1})
        return state_to_bytes(model)

    model = frozen(load_state(new_model(), backbone(cfg, ctx, ckpt, key, build), dev)).eval()
    t_float, c_float = time.perf_counter(), time.process_time()

    # Shuffled train order of the correction phase, from its own seeded generator.
    gen = torch.Generator().manual_seed(seed + 2)
    shuffled = torch.randperm(len(Xtr), generator=gen).to(dev)
    calib = Xtr[shuffled[: int(P["correction_images"])]] if protocol == "lambda" else Xtr[shuffled[:batch]]
    cal = Calibrator()
    with torch.no_grad():
        model(calib, FloatTap(cal))
    scales = cal.scales(bits)

    with torch.no_grad():
        mse_f = float(F.mse_loss(model(Xte), Xte))
        mse_q = float(F.mse_loss(model(Xte, QuantTap(bits, scales)), Xte))

    correctors = build_correctors(model.points, every, ch, P.get("correction_init", "default"), seed, dev)
    n_corr, final_loss = len(correctors), float("nan")
    if n_corr:
        lr = float(P["correction_lr"])
        if protocol == "hydra":
            epochs = int(P["correction_epochs"])
            done = ckpt.get("correction_done")
            if done is not None:
                correctors.load_state_dict(done["correctors"])
                final_loss = done["loss"]
            else:
                def batches():
                    step = 0
                    for _ in range(epochs):
                        perm = torch.randperm(len(Xtr), generator=gen).to(dev)
                        for i in range(0, len(Xtr), batch):
                            step += 1
                            yield step, Xtr[perm[i:i + batch]]
                final_loss = distill_correctors(correctors, batches(),
                                                student=lambda x: model(x, QuantTap(bits, scales, correctors)),
                                                teacher=lambda x: model(x), lr=lr, ctx=ctx)
                ckpt.put("correction_done", {"correctors": {k: v.detach().cpu() for k, v in
                                                            correctors.state_dict().items()}, "loss": final_loss})
        else:
            final_loss = train_correctors_lambda(
                model, correctors, calib, bits, scales, steps=int(P["correction_steps"]), lr=lr,
                lam=float(P["lam"]), legacy_h0_unquantized=bool(P.get("legacy_h0_unquantized", False)), ctx=ctx)
        with torch.no_grad():
            mse_c = float(F.mse_loss(model(Xte, QuantTap(bits, scales, correctors)), Xte))
    else:
        mse_c = mse_q  # skip rule

    row = summary(mse_f, mse_q, mse_c, higher_is_better=False, guard=P.get("guard", "hydra"),
                  rel=float(P.get("reliable_gap_rel", 0.005)))
    if not n_corr:
        row["recovery_pct"] = 0.0
    row.update(mse_float=mse_f, mse_quant=mse_q, mse_corrected=mse_c, num_correction_layers=n_corr,
               num_quant_points=len(model.points), correction_final_loss=final_loss,
               data_source=data.data_source, image_dim=data.dim, n_train_images=len(Xtr),
               n_test_images=len(Xte), float_phase_s=t_float - t0, float_phase_cpu_s=c_float - c0,
               total_s=time.perf_counter() - t0, total_cpu_s=time.process_time() - c0)
    if not all(math.isfinite(v) for v in (mse_f, mse_q, mse_c)):
        raise Diverged("non-finite evaluation MSE", metrics=row)
    return row
