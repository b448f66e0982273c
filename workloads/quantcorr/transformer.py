"""Task 3 (seeds 000 and 001): the pre-LN causal char transformer LM of workloads.substrate, its
residual stream quantized and corrected (docs/studies/quantization-correction.md, 'Transformer').

Protocols (``protocol``):
  hydra   seed 000 Hydra sweep: correctors distilled on the float logits (MSE), Adam 1e-3, 5 epochs.
  grid    seed 001 243-run grid: correctors trained with CE on the next-character labels, Adam 3e-4,
          5 epochs, unquantized correctors.
  lambda  seed 000 lambda sweep (transformer variant, never run in the seed): hybrid loss with
          corrector QAT on the first 256 train sequences (workloads.substrate.lambda_schedule).

A trial: text -> float backbone (the shared char-transformer stage) -> scales -> float and
quantized-only CE -> correctors trained by the protocol -> corrected CE -> row.

RNG: correctors come from their own generator and the correction phase reseeds with ``seed + 1``,
so a backbone loaded from the stage cache gives bit-for-bit the same trial as one trained in the
trial. The original code built the correctors together with the model before float training, so
their init consumed the global stream first; that order is not reproduced.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from workloads.substrate.char_transformer import (BackboneRecipe, CharData, CharTransformer, lm_loss, load_char_data,
                                                  mean_ce, perplexity, quantized_baselines, trained_backbone)
from workloads.substrate.correction import QuantTap, build_correctors, calibrated_scales
from workloads.substrate.lambda_schedule import train_correctors_lambda
from workloads.substrate.loops import Batches, train_epochs
from workloads.substrate.rows import PhaseClock, result_row
from workloads.substrate.stages import Checkpointer, trial_checkpoint, trial_seed

from .params import TRANSFORMER_PROTOCOL_DEFAULTS, TransformerParams, with_protocol_defaults


def run(cfg: dict, ctx) -> dict:
    """One trial; ``cfg`` is the validated config (TransformerParams)."""
    clock = PhaseClock()
    p = with_protocol_defaults(TRANSFORMER_PROTOCOL_DEFAULTS[cfg["protocol"]], cfg)
    seed, bits = trial_seed(p, ctx), p["bits"]
    data = load_char_data(p, ctx, test_limit=p["eval_sequences"])
    recipe = backbone_recipe(p, seed)
    ckpt = trial_checkpoint(ctx, TransformerParams, p, recipe.stage_key(data, ctx.device))
    model, order = trained_backbone(recipe, data, ctx, ckpt, p["stage_cache"])
    clock.mark("float")
    scales = calibrated_scales(model, data.train_x[order[: p["calib_sequences"]].to(ctx.device)], bits)
    loss_f, loss_q_ok, loss_q_legacy = quantized_baselines(model, data, bits, scales)
    loss_q = loss_q_legacy if p["legacy_prenorm_residual_bug"] else loss_q_ok
    correctors = build_correctors(model.points, p["correct_every"], p["correction_hidden"], p["correction_init"],
                                  seed, ctx.device)
    final_loss, loss_c = float("nan"), loss_q  # without correctors: corrected = quantized
    if len(correctors):
        final_loss = PROTOCOLS[p["protocol"]](model, correctors, data, order, scales, p, seed, ckpt, ctx)
        loss_c = mean_ce(model, data.test_x, data.test_y, lambda: QuantTap(bits, scales, correctors))
    return transformer_row(p, data, n_points=len(model.points), n_correctors=len(correctors), loss_f=loss_f,
                           loss_q=loss_q, loss_c=loss_c, final_loss=final_loss, loss_q_ok=loss_q_ok,
                           loss_q_legacy=loss_q_legacy, clock=clock)


def transformer_row(p: dict, data: CharData, *, n_points: int, n_correctors: int, loss_f: float, loss_q: float,
                    loss_c: float, final_loss: float, loss_q_ok: float, loss_q_legacy: float, clock) -> dict:
    """The trial's row (also the row of each member of a vectorised group, transformer_group.py)."""
    return result_row(
        loss_f, loss_q, loss_c, p=p, higher_is_better=False, n_correctors=n_correctors,
        n_points=n_points, final_loss=final_loss, data_source=data.data_source, clock=clock,
        loss_float=loss_f, loss_quant=loss_q, loss_corrected=loss_c,
        ppl_float=perplexity(loss_f), ppl_quant=perplexity(loss_q), ppl_corrected=perplexity(loss_c),
        quant_degradation_pct=100 * (loss_q - loss_f) / loss_f,
        corrected_degradation_pct=100 * (loss_c - loss_f) / loss_f,
        loss_quant_correct_residual=loss_q_ok, loss_quant_legacy_residual=loss_q_legacy,
        vocab_size=data.vocab_size, n_train_sequences=len(data.train_x), n_test_sequences=len(data.test_x))


def backbone_recipe(p: dict, seed: int) -> BackboneRecipe:
    """Float training as in the seed code: full batches only, the train set permuted in place
    every epoch, Adam or AdamW with gradient clipping."""
    return BackboneRecipe(d_model=p["d_model"], n_heads=p["n_heads"], n_layers=p["n_layers"], d_ff=p["d_ff"],
                          max_seq_len=p["max_seq_len"], dropout=p["dropout"], seed=seed, epochs=p["float_epochs"],
                          lr=p["float_lr"], optimizer=p["float_optimizer"], weight_decay=p["weight_decay"],
                          batch_size=p["batch_size"], grad_clip=p["grad_clip"], reshuffle="in_place",
                          last_batch="drop")


# -------------------------------------------------------------------------------- protocols
def hydra(model: CharTransformer, correctors: nn.ModuleDict, data: CharData, order: torch.Tensor,
          scales: dict[str, float], p: dict, seed: int, ckpt: Checkpointer, ctx) -> float:
    """Correctors distilled on the float logits (MSE), the teacher in the student's (train) mode."""
    def distill_loss(student: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher = model(x)
        return F.mse_loss(student, teacher)

    return _corrector_epochs(model, correctors, data, order, scales, p, seed, ckpt, ctx, distill_loss)


def grid(model: CharTransformer, correctors: nn.ModuleDict, data: CharData, order: torch.Tensor,
         scales: dict[str, float], p: dict, seed: int, ckpt: Checkpointer, ctx) -> float:
    """Correctors trained with CE on the next-character labels."""
    return _corrector_epochs(model, correctors, data, order, scales, p, seed, ckpt, ctx,
                             lambda student, x, y: lm_loss(student, y))


def lambda_(model: CharTransformer, correctors: nn.ModuleDict, data: CharData, order: torch.Tensor,
            scales: dict[str, float], p: dict, seed: int, ckpt: Checkpointer, ctx) -> float:
    """Hybrid output/per-point loss, then corrector QAT, full batch on the first
    ``correction_sequences`` of the last float order against a fixed (eval mode) teacher."""
    X = data.train_x[order[: p["correction_sequences"]].to(ctx.device)]
    model.eval()
    return train_correctors_lambda(model, correctors, X, p["bits"], scales, steps=p["correction_steps"],
                                   lr=p["correction_lr"], lam=p["lam"],
                                   legacy_h0_unquantized=p["legacy_h0_unquantized"], ctx=ctx, report_every=10)


PROTOCOLS = {"hydra": hydra, "grid": grid, "lambda": lambda_}


def _corrector_epochs(model, correctors, data, order, scales, p, seed, ckpt, ctx, loss_fn) -> float:
    """hydra and grid: correctors only, backbone frozen, in train mode (dropout on); full batches of
    a per-epoch permutation of the train set (or of its first ``correction_sequences`` in the last
    float order). Resumable at every epoch."""
    X, Y = data.train_x, data.train_y
    if p["correction_sequences"]:  # a subset (CPU budgets)
        subset = order[: p["correction_sequences"]].to(ctx.device)
        X, Y = X[subset], Y[subset]
    opt = torch.optim.Adam(correctors.parameters(), lr=p["correction_lr"])
    torch.manual_seed(seed + 1)  # dropout stream of the correction phase
    batches = Batches(len(X), p["correction_batch_size"] or p["batch_size"], keep_last=False,
                      generator=torch.Generator().manual_seed(seed + 2), device=ctx.device)
    quantized = lambda x: model(x, QuantTap(p["bits"], scales, correctors))  # noqa: E731
    model.train()
    last = train_epochs(correctors, opt, batches, p["correction_epochs"],
                        lambda idx: loss_fn(quantized(X[idx]), X[idx], Y[idx]),
                        ckpt=ckpt, ctx=ctx, phase="correction")
    model.eval()
    return last
