"""One trial: train one method on one task, then measure its credit on held-out data.

Training of every non-BP method is the block-local rule: each block's output F_l(h_{l-1}) (input
detached) is pushed along -a_l by the surrogate <F_l(h_{l-1}), a_l / RMS(a_l)>, and the head is
trained with the exact CE gradient on the detached h_L. BP trains end to end. SB and CB update their
credit model once per step on the same batch; during the first ``wr`` (CB) / ``sb_wr`` (SB) fraction
of the training steps the forward net uses DFA credit instead (docs/studies/credit-bridge.md,
'Block-local training' and 'DFA warm-up').

Determinism: parameters are drawn right after ``torch.manual_seed(seed)``; DFA/FA matrices and the
projection of h_L from a generator seeded by the trial seed; the batch order and the bridge noise
of epoch e from generators seeded by (seed, e). A trial resumed from its end-of-epoch checkpoint
therefore continues exactly as if it had not stopped (docs/studies/credit-bridge.md, 'Determinism
and resume').
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from orchestrator import Diverged, TrialContext
from workloads.data.locate import at_scale

from .credit import Batch, CreditSource, DFACredit, build_source, rms_normalize
from .metrics import evaluate_credit, gamma, layer_mean
from .nets import BlockNet, LadderNet, ResidualMLP, true_gradients
from .params import Settings, eta_name
from .tasks import Arrays, cifar_task, teacher_task

SIDE_KEYS = ("state_nmse", "bridge_loss", "terminal_loss", "gradmatch_loss")


def mix(*parts: Any) -> int:
    """A 63-bit seed from (seed, purpose, index) parts, stable across processes."""
    ss = np.random.SeedSequence([hash_str(str(p)) for p in parts])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def hash_str(s: str) -> int:
    h = 1469598103934665603  # FNV-1a, because Python's hash() of str is salted per process
    for ch in s.encode():
        h = ((h ^ ch) * 1099511628211) % 2**64
    return h % 2**62


def load_task(cfg: Settings, ctx, seed: int) -> Arrays:
    if cfg.task == "synthetic":
        key = {"what": "creditbridge.teacher", "alpha": cfg.alpha, "depth": cfg.depth, "width": cfg.width,
               "n_classes": cfg.n_classes, "n_train": cfg.n_train, "n_test": cfg.n_test,
               "teacher_seed": cfg.teacher_seed}
        return ctx.stage(key, lambda: teacher_task(cfg.alpha, cfg.depth, cfg.width, cfg.n_classes,
                                                   cfg.n_train, cfg.n_test, cfg.teacher_seed))
    if cfg.data == "standin":  # generated: worth caching; real CIFAR is read from its files
        key = {"what": "creditbridge.cifar_standin", "n_train": cfg.n_train, "n_test": cfg.n_test,
               "standin_train": cfg.standin_train, "standin_test": cfg.standin_test}
        return ctx.stage(key, lambda: cifar_task(ctx.data_root, "standin", cfg.n_train, cfg.n_test,
                                                 cfg.standin_train, cfg.standin_test))
    # at full scale `auto` means CIFAR-10 itself: never a silent substitute
    return cifar_task(ctx.data_root, at_scale(cfg.data, ctx.scale), cfg.n_train, cfg.n_test,
                      cfg.standin_train, cfg.standin_test)


def build_net(cfg: Settings, in_dim: int) -> BlockNet:
    if cfg.task == "synthetic":
        if in_dim != cfg.width:
            raise ValueError("synthetic task: the input dimension is the width")
        return LadderNet(cfg.width, cfg.depth, cfg.n_classes, cfg.alpha)
    return ResidualMLP(in_dim, cfg.width, cfg.depth, cfg.n_classes)


def to_cpu(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


class Trainer:
    def __init__(self, cfg: Settings, seed: int, data: Arrays, device: str):
        self.cfg, self.seed, self.device = cfg, seed, device
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        self.net = build_net(cfg, data.in_dim).to(device)
        gen = torch.Generator().manual_seed(mix(seed, "credit"))
        self.source: CreditSource = build_source(cfg, gen, device)
        warm_ratio = cfg.wr if cfg.method == "cb" else cfg.sb_wr if cfg.method == "sb" else 0.0
        self.warm = DFACredit(cfg.width, cfg.depth, cfg.n_classes, gen, cfg.dfa_std, device) if warm_ratio > 0 else None
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.x_train = torch.as_tensor(data.x_train, device=device)
        self.y_train = torch.as_tensor(data.y_train, device=device)
        self.x_test = torch.as_tensor(data.x_test, device=device)
        self.y_test = torch.as_tensor(data.y_test, device=device)
        self.steps_per_epoch = math.ceil(len(self.x_train) / cfg.batch_size)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warm_steps = int(round(warm_ratio * self.total_steps))
        self.epoch = 0
        self.step = 0

    # ---------------------------------------------------------------- checkpoint
    def state(self) -> dict:
        return to_cpu({
            "epoch": self.epoch, "step": self.step, "net": self.net.state_dict(), "opt": self.opt.state_dict(),
            "source": self.source.state_dict(), "warm": self.warm.state_dict() if self.warm else None,
        })

    def restore(self, state: dict) -> None:
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.source.load_state_dict(state["source"])
        if self.warm is not None:
            self.warm.load_state_dict(state["warm"])

    # ---------------------------------------------------------------- training
    def lr_at(self, step: int) -> float:
        if self.cfg.lr_schedule == "cosine":
            return self.cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / max(1, self.total_steps)))
        return self.cfg.lr

    def train_step(self, x: torch.Tensor, y: torch.Tensor, noise: torch.Generator) -> tuple[float, dict]:
        """One optimiser step on a batch: the mean loss and the credit model's losses (SB/CB)."""
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        loss, side = self.backprop(x, y) if self.cfg.method == "bp" else self.block_local(x, y, noise)
        self.step += 1
        return loss, side

    def backprop(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, dict]:
        loss = F.cross_entropy(self.net(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach()), {}

    def block_local(self, x: torch.Tensor, y: torch.Tensor, noise: torch.Generator) -> tuple[float, dict]:
        """Each block pushed along its RMS-normalised credit by <F_l(h_{l-1}), a_l>, the head by the
        exact CE gradient on the detached h_L (docs/studies/credit-bridge.md, 'Block-local training')."""
        net = self.net
        outs = net.block_outputs(x)
        states = [x if outs[0] is None else outs[0].detach()] + [o.detach() for o in outs[1:]]
        logits = net.head(states[-1])
        loss_vec = F.cross_entropy(logits, y, reduction="none")
        batch = Batch(x, y, torch.stack(states), logits.detach(), loss_vec.detach(), self.cfg.n_classes)
        credit, side = self.step_credit(batch, noise)
        a_hat = rms_normalize(credit, self.cfg.credit_eps)
        surrogate = sum((outs[l] * a_hat[l]).sum(-1).mean() for l in net.credit_layers)
        self.opt.zero_grad(set_to_none=True)
        (surrogate + loss_vec.mean()).backward()
        self.opt.step()
        return float(loss_vec.detach().mean()), side

    def step_credit(self, batch: Batch, noise: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """The credit this step trains with. A learned source (SB, CB) updates on every batch, also
        during the DFA warm-up, whose credit then replaces the source's own."""
        credit, side = self.source.learn(self.net, batch, noise) if self.source.learns else (None, {})
        if self.warm is not None and self.step < self.warm_steps:
            credit = self.warm.credits(self.net, batch)
        elif credit is None:
            credit = self.source.credits(self.net, batch)
        return credit, side

    def train_epoch(self) -> dict[str, float]:
        cfg = self.cfg
        order = torch.Generator().manual_seed(mix(self.seed, "order", self.epoch))
        noise = torch.Generator(device=self.device).manual_seed(mix(self.seed, "noise", self.epoch))
        perm = torch.randperm(len(self.x_train), generator=order).to(self.device)
        losses, sides = [], []
        for i in range(self.steps_per_epoch):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            loss, side = self.train_step(self.x_train[idx], self.y_train[idx], noise)
            losses.append(loss)
            if side:
                sides.append(side)
        self.epoch += 1
        out = {"train_loss": float(np.mean(losses))}
        for k in SIDE_KEYS:
            if sides and k in sides[0]:
                out[k] = float(np.mean([s[k] for s in sides]))
        return out

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def test(self) -> tuple[float, float]:
        correct, total_loss = 0, 0.0
        for i in range(0, len(self.x_test), 4096):
            x, y = self.x_test[i:i + 4096], self.y_test[i:i + 4096]
            logits = self.net(x)
            correct += int((logits.argmax(-1) == y).sum())
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        n = max(1, len(self.x_test))
        return correct / n, total_loss / n

    def credit_on(self, n: int) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """States, true gradients, the method's own credit and labels on the first n test samples."""
        x, y = self.x_test[:n], self.y_test[:n]
        hs, grads, _ = true_gradients(self.net, x, y)
        credits = self.source.credits(self.net, Batch.of(self.net, x, y, hs))
        return hs, grads, credits, y

    def quick_gamma(self, n: int = 256) -> float:
        hs, grads, credits, _ = self.credit_on(n)
        layers = [l for l in self.net.credit_layers if l >= 1]
        return float(np.nanmean([gamma(credits[l], grads[l])[0] for l in layers]))


def due(every: int, epoch: int, last_epoch: int) -> bool:
    """Whether a periodic action (every ``every`` epochs, 0 = never) falls on ``epoch``; the last
    epoch always counts, so a finished trial has its final checkpoint and history point."""
    return bool(every) and (epoch % every == 0 or epoch == last_epoch)


@dataclass
class Training:
    """What the training phase of this execution leaves for the row."""

    last: dict[str, float]   # the last epoch's mean losses ({} when every epoch ran before a resume)
    seconds: float
    steps: int               # optimiser steps taken in this execution


def resume(trainer: Trainer, ctx) -> int:
    """Continue from the trial's last checkpoint, if any; returns the epoch it resumed from (0: fresh)."""
    saved = ctx.load_checkpoint()
    if saved is None:
        return 0
    trainer.restore(saved)
    ctx.log(f"resumed at epoch {trainer.epoch} of {trainer.cfg.epochs}")
    return trainer.epoch


def train(trainer: Trainer, ctx) -> Training:
    """Epochs until ``epochs``: each one reported (with test accuracy and Gamma every ``track_every``),
    a non-finite loss ends the trial as diverged, checkpoints every ``checkpoint_every``."""
    cfg = trainer.cfg
    started, steps_before = time.perf_counter(), trainer.step
    last: dict[str, float] = {}
    while trainer.epoch < cfg.epochs:
        last = trainer.train_epoch()
        if not math.isfinite(last["train_loss"]):
            raise Diverged(f"non-finite training loss in epoch {trainer.epoch}",
                           metrics={"diverged_epoch": trainer.epoch})
        record = dict(last)
        if due(cfg.track_every, trainer.epoch, cfg.epochs):
            record["test_acc"] = trainer.test()[0]
            record["gamma"] = trainer.quick_gamma(min(256, len(trainer.x_test)))
        ctx.report(trainer.epoch, **record)
        if due(cfg.checkpoint_every, trainer.epoch, cfg.epochs):
            ctx.save_checkpoint(trainer.state())
    return Training(last, time.perf_counter() - started, trainer.step - steps_before)


def measure(trainer: Trainer) -> tuple[list[dict], dict[str, float]]:
    """The credit metrics per credited layer on the first ``n_eval`` test samples (the artifact
    rows, labelled with the trial), then test accuracy and loss (docs/studies/credit-bridge.md,
    'Metrics')."""
    cfg, seed = trainer.cfg, trainer.seed
    started = time.perf_counter()
    n_eval = min(cfg.n_eval, len(trainer.x_test))
    hs, grads, credits, y = trainer.credit_on(n_eval)
    rows = evaluate_credit(trainer.net, hs, grads, credits, y, trainer.net.credit_layers,
                           directions=cfg.rho_directions, eps=cfg.rho_eps, etas=tuple(cfg.nudge_etas),
                           seed=seed, rho_reference=cfg.rho_reference, credit_eps=cfg.credit_eps,
                           grad_floor=cfg.grad_floor)
    acc, test_loss = trainer.test()
    hidden = hidden_layers(cfg)
    for r in rows:
        r.update(in_mean=r["layer"] in hidden, method=cfg.method, task=cfg.task, depth=cfg.depth,
                 alpha=cfg.alpha if cfg.task == "synthetic" else float("nan"), seed=seed)
    return rows, {"test_acc": acc, "test_loss": test_loss, "n_eval_samples": n_eval,
                  "eval_s": time.perf_counter() - started}


def hidden_layers(cfg: Settings) -> list[int]:
    """h_1 .. h_L: the states the row's means run over (h_0 is the input or the CIFAR embedding)."""
    return list(range(1, cfg.depth + 1))


def result_row(cfg: Settings, rows: list[dict], test: dict[str, float], training: Training, data: Arrays,
               trainer: Trainer, resumed_from: int) -> dict[str, Any]:
    """The trial's metric columns: layer means over h_1..h_L, first and top layer, the gradient-norm
    diagnostic, the trained net's test numbers, the credit model's last losses and the run's cost."""
    hidden = hidden_layers(cfg)
    top = next(r for r in rows if r["layer"] == cfg.depth)
    first = next(r for r in rows if r["layer"] == 1)
    last = training.last
    out: dict[str, Any] = {
        "gamma": layer_mean(rows, "gamma", hidden), "rho": layer_mean(rows, "rho", hidden),
        "gamma_first": first["gamma"], "gamma_top": top["gamma"],
        "rho_first": first["rho"], "rho_top": top["rho"],
        "rho_all": layer_mean(rows, "rho_all", hidden),
        "rho_samples_min": min(r["rho_samples"] for r in rows if r["layer"] in hidden),
        "gnorm": layer_mean(rows, "gnorm_mean", hidden), "gnorm_top": top["gnorm_mean"],
        "grad_floor_share": max(r["grad_floor_share"] for r in rows if r["layer"] in hidden),
        "grad_floor_share_mean": layer_mean(rows, "grad_floor_share", hidden),
        "grad_floor_share_top": top["grad_floor_share"],
        "n_eval_samples": test["n_eval_samples"],
        "cos_undefined": int(sum(r["cos_undefined"] for r in rows if r["layer"] in hidden)),
        "test_acc": test["test_acc"], "test_loss": test["test_loss"],
        "train_loss": last.get("train_loss", float("nan")),
        "data_source": data.source, "max_class_share": data.max_class_share,
        "epochs_done": trainer.epoch, "steps_done": trainer.step, "resumed_from_epoch": resumed_from,
        "step_ms": 1000.0 * training.seconds / training.steps if training.steps else float("nan"),
        "train_s": training.seconds, "eval_s": test["eval_s"],
    }
    if cfg.rho_reference:
        out["rho_bp_ref"] = layer_mean(rows, "rho_bp_ref", hidden)
    for eta in cfg.nudge_etas:
        out[f"nudge_{eta_name(eta)}"] = layer_mean(rows, f"nudge_{eta_name(eta)}", hidden)
    for k in SIDE_KEYS:
        out[k] = last.get(k, float("nan"))
    return out


def run(cfg: Settings, ctx: TrialContext) -> dict[str, Any]:
    """One trial: set up, resume, train, measure, return the row."""
    seed = int(cfg.seed) if cfg.seed is not None else int(ctx.seed)
    data = load_task(cfg, ctx, seed)
    trainer = Trainer(cfg, seed, data, getattr(ctx, "device", "cpu") or "cpu")
    resumed_from = resume(trainer, ctx)
    training = train(trainer, ctx)
    rows, test = measure(trainer)
    ctx.write_artifact("layers", rows)
    return result_row(cfg, rows, test, training, data, trainer, resumed_from)
