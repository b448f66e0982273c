"""Task 2 (seed 000): an MLP autoencoder on MNIST (stand-in: sklearn digits), its activations
quantized and corrected (docs/studies/quantization-correction.md, 'Autoencoder').

Quantization points: after the ReLU of every encoder hidden layer ("enc{i}", group "enc"), after
the latent linear layer ("latent", never corrected) and after the ReLU of every decoder hidden layer
("dec{i}", group "dec"). The output layer is float. Correctors are placed by (j+1) % N within the
encoder and within the decoder; the accumulated error resets between groups and when the dimension
changes. Metric: reconstruction MSE on the first test images (lower is better).

A trial: images -> float backbone (stage cache) -> calibration images and scales -> float and
quantized MSE -> correctors trained by the protocol -> corrected MSE -> row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from workloads.data.locate import at_scale
from workloads.data.mnist import load_images
from workloads.substrate.correction import Point, QuantTap, build_correctors, calibrated_scales
from workloads.substrate.lambda_schedule import train_correctors_lambda
from workloads.substrate.loops import Batches, train_epochs, train_steps
from workloads.substrate.rows import PhaseClock, result_row
from workloads.substrate.stages import (Checkpointer, frozen, load_state, staged, state_to_bytes, trial_checkpoint,
                                        trial_seed)

from .params import AUTOENCODER_PROTOCOL_DEFAULTS, AutoencoderParams, with_protocol_defaults


def run(cfg: dict, ctx) -> dict:
    """One trial; ``cfg`` is the validated config (AutoencoderParams)."""
    clock = PhaseClock()
    p = with_protocol_defaults(AUTOENCODER_PROTOCOL_DEFAULTS[cfg["protocol"]], cfg)
    seed = trial_seed(p, ctx)
    images = load(p, ctx)
    model, ckpt = float_backbone(p, seed, images, ctx)
    clock.mark("float")
    shuffles = torch.Generator().manual_seed(seed + 2)  # the correction phase's own train orders
    calib = calibration_images(p, images.train, shuffles)
    scales = calibrated_scales(model, calib, p["bits"])
    mse_f = reconstruction_mse(model, images.test)
    mse_q = reconstruction_mse(model, images.test, QuantTap(p["bits"], scales))
    correctors = build_correctors(model.points, p["correct_every"], p["correction_hidden"], p["correction_init"],
                                  seed, ctx.device)
    final_loss, mse_c = float("nan"), mse_q  # without correctors: corrected = quantized
    if len(correctors):
        final_loss = PROTOCOLS[p["protocol"]](model, correctors, images, calib, scales, p, shuffles, ckpt, ctx)
        mse_c = reconstruction_mse(model, images.test, QuantTap(p["bits"], scales, correctors))
    return result_row(mse_f, mse_q, mse_c, p=p, higher_is_better=False, n_correctors=len(correctors),
                      n_points=len(model.points), final_loss=final_loss, data_source=images.data_source,
                      clock=clock, mse_float=mse_f, mse_quant=mse_q, mse_corrected=mse_c, image_dim=images.dim,
                      n_train_images=len(images.train), n_test_images=len(images.test))


# -------------------------------------------------------------------------------- data and model
@dataclass(frozen=True)
class Images:
    """Flattened images in [0, 1] on the trial's device."""

    train: torch.Tensor
    test: torch.Tensor
    dim: int
    data_source: str


def load(p: dict, ctx) -> Images:
    """MNIST or its stand-in; the first ``max_train_images`` train images (0: all) and the first
    ``test_images`` test images."""
    data = load_images(at_scale(p["data"], ctx.scale), ctx.data_root, ctx.cache_dir, bool(p["download"]))
    train = data.train.to(ctx.device)
    if p["max_train_images"]:
        train = train[: p["max_train_images"]]
    return Images(train, data.test[: p["test_images"]].to(ctx.device), data.dim, data.data_source)


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


@torch.no_grad()
def reconstruction_mse(model: MLPAutoencoder, X: torch.Tensor, tap=None) -> float:
    return float(F.mse_loss(model(X, tap), X))


# -------------------------------------------------------------------------------- phases
def float_backbone(p: dict, seed: int, images: Images, ctx) -> tuple[MLPAutoencoder, Checkpointer]:
    """The float autoencoder, trained with Adam on MSE over shuffled batches (the last partial one
    kept), or loaded from the stage cache; frozen. Also the trial's checkpoint."""
    new_model = lambda: MLPAutoencoder(images.dim, p["hidden"], p["latent"])  # noqa: E731
    key = {"stage": "quantcorr.autoencoder", "v": 1, "hidden": p["hidden"], "latent": p["latent"], "seed": seed,
           "batch_size": p["batch_size"], "float_epochs": p["float_epochs"], "float_lr": p["float_lr"],
           "data_source": images.data_source, "n_train": len(images.train), "device": str(ctx.device)}
    ckpt = trial_checkpoint(ctx, AutoencoderParams, p, key)
    X = images.train

    def train() -> bytes:
        torch.manual_seed(seed)
        model = new_model().to(ctx.device)
        batches = Batches(len(X), p["batch_size"], keep_last=True, device=ctx.device)
        train_epochs(model, torch.optim.Adam(model.parameters(), lr=p["float_lr"]), batches, p["float_epochs"],
                     lambda idx: _reconstruction_loss(model, X[idx]), ckpt=ckpt, ctx=ctx, phase="float",
                     per_sample=True)
        return state_to_bytes(model)

    blob = staged(p["stage_cache"], ctx, ckpt, key, train)
    return frozen(load_state(new_model(), blob, ctx.device)).eval(), ckpt


def _reconstruction_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(model(x), x)


def calibration_images(p: dict, train: torch.Tensor, shuffles: torch.Generator) -> torch.Tensor:
    """Shuffled train images: one batch (hydra), or the ``correction_images`` that the lambda
    protocol also trains its correctors on."""
    shuffled = torch.randperm(len(train), generator=shuffles).to(train.device)
    return train[shuffled[: p["correction_images"] if p["protocol"] == "lambda" else p["batch_size"]]]


# -------------------------------------------------------------------------------- protocols
def hydra(model: MLPAutoencoder, correctors: nn.ModuleDict, images: Images, calib: torch.Tensor,
          scales: dict[str, float], p: dict, shuffles: torch.Generator, ckpt: Checkpointer, ctx) -> float:
    """Correctors distilled on the float output: Adam, MSE, ``correction_epochs`` epochs of shuffled
    batches (the last partial one kept). The trained correctors are checkpointed."""
    done = ckpt.get("correction_done")
    if done is not None:
        load_state(correctors, done["correctors"], ctx.device)
        return done["loss"]
    X = images.train
    batches = Batches(len(X), p["batch_size"], keep_last=True, generator=shuffles, device=X.device)
    stream = (X[idx] for _ in range(p["correction_epochs"]) for idx in batches.next_epoch())
    steps = p["correction_epochs"] * math.ceil(len(X) / p["batch_size"])

    def distill_loss(step: int) -> torch.Tensor:
        x = next(stream)
        with torch.no_grad():
            teacher = model(x)
        return F.mse_loss(model(x, QuantTap(p["bits"], scales, correctors)), teacher)

    loss = train_steps(torch.optim.Adam(correctors.parameters(), lr=p["correction_lr"]), steps, distill_loss,
                       ctx=ctx, phase="correction")
    ckpt.put("correction_done", {"correctors": state_to_bytes(correctors), "loss": loss})
    return loss


def lambda_(model: MLPAutoencoder, correctors: nn.ModuleDict, images: Images, calib: torch.Tensor,
            scales: dict[str, float], p: dict, shuffles: torch.Generator, ckpt: Checkpointer, ctx) -> float:
    """Hybrid output/per-point loss, then corrector QAT, on the calibration images
    (workloads.substrate.lambda_schedule)."""
    return train_correctors_lambda(model, correctors, calib, p["bits"], scales, steps=p["correction_steps"],
                                   lr=p["correction_lr"], lam=p["lam"],
                                   legacy_h0_unquantized=p["legacy_h0_unquantized"], ctx=ctx)


PROTOCOLS = {"hydra": hydra, "lambda": lambda_}
