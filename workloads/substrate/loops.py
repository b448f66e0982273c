"""The two training loops of every phase (float backbones and correctors).

``train_steps``: a fixed number of optimizer steps, each on a loss the caller computes (full batch,
or a batch it draws itself). ``train_epochs``: epochs over shuffled batches, resumable: after every
epoch the weights, optimizer, batch order and RNG go to the trial's checkpoint, and a restarted
trial continues from the last finished epoch. Both clip gradients when asked, stop the trial with
``Diverged`` on a non-finite loss and report the loss to the trial's history.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from orchestrator import check_finite

from .stages import Checkpointer, load_state, state_to_bytes


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, clip: float | None = None) -> float:
    """One step on ``loss`` (gradient norm clipped to ``clip`` when given); returns its value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]], clip)
    opt.step()
    return float(loss.detach())


def train_steps(opt: torch.optim.Optimizer, steps: int, loss_at: Callable[[int], torch.Tensor], *, ctx,
                phase: str, report_every: int = 50, report_last: bool = False,
                clip: float | None = None) -> float:
    """Steps 1..steps on ``loss_at(step)``; reports every ``report_every`` steps (and the last one
    with ``report_last``). Returns the last loss (NaN without steps)."""
    last = float("nan")
    for step in range(1, steps + 1):
        last = optimizer_step(opt, loss_at(step), clip)
        check_finite(step, **{f"{phase}_loss": last})
        if (report_every and step % report_every == 0) or (report_last and step == steps):
            ctx.report(step, phase=phase, loss=last)
    return last


class Batches:
    """The sample indices of each epoch's batches: a new order every epoch, cut into batches of
    ``size``. ``in_place``: the new order permutes the previous one (the seed code shuffled its
    dataset in place), otherwise it is a fresh permutation of 0..n-1. ``generator``: the RNG of the
    permutations (None: torch's global one). ``keep_last``: keep the last partial batch."""

    def __init__(self, n: int, size: int, *, keep_last: bool, in_place: bool = False,
                 generator: torch.Generator | None = None, device: str | torch.device = "cpu"):
        self.order = torch.arange(n)  # the last epoch's order, on the CPU
        self.size, self.keep_last, self.in_place = size, keep_last, in_place
        self.generator, self.device = generator, device

    def next_epoch(self) -> list[torch.Tensor]:
        perm = torch.randperm(len(self.order), generator=self.generator)
        self.order = self.order[perm] if self.in_place else perm
        order = self.order.to(self.device)
        stop = len(order) if self.keep_last else len(order) - len(order) % self.size
        return [order[i:i + self.size] for i in range(0, stop, self.size)]

    def state_dict(self) -> dict:
        return {"order": self.order, "generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.order = state["order"]
        if self.generator is not None:
            self.generator.set_state(state["generator"])


def train_epochs(module: nn.Module, opt: torch.optim.Optimizer, batches: Batches, epochs: int,
                 loss_of: Callable[[torch.Tensor], torch.Tensor], *, ckpt: Checkpointer, ctx, phase: str,
                 clip: float | None = None, per_sample: bool = False) -> float:
    """Trains ``module`` (the parameters ``opt`` holds) for ``epochs`` epochs on ``loss_of(indices)``
    per batch, resuming from the checkpoint phase "{phase}_progress". An epoch's loss is the mean
    over its batches, or over its samples (batches weighted by size) with ``per_sample``. Returns
    the last epoch's loss (NaN without epochs)."""
    progress = ckpt.get(f"{phase}_progress")
    start, last = _resume(module, opt, batches, progress) if progress is not None else (0, float("nan"))
    for epoch in range(start + 1, epochs + 1):
        total, count = 0.0, 0
        for idx in batches.next_epoch():
            weight = len(idx) if per_sample else 1
            total += optimizer_step(opt, loss_of(idx), clip) * weight
            count += weight
        last = total / max(count, 1)
        check_finite(epoch, **{f"{phase}_loss": last})
        ctx.report(epoch, phase=phase, loss=last)
        ckpt.put(f"{phase}_progress", {"module": state_to_bytes(module), "opt": opt.state_dict(),
                                       "batches": batches.state_dict(), "rng": torch.get_rng_state(),
                                       "epoch": epoch, "loss": last})
    return last


def _resume(module: nn.Module, opt: torch.optim.Optimizer, batches: Batches, progress: dict) -> tuple[int, float]:
    """Restores a killed training at its last finished epoch: (that epoch, its loss)."""
    load_state(module, progress["module"], next(module.parameters()).device)
    opt.load_state_dict(progress["opt"])
    batches.load_state_dict(progress["batches"])
    torch.set_rng_state(progress["rng"])
    return progress["epoch"], progress["loss"]
