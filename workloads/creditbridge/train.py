"""One trial: train one method on one task, then measure its credit on held-out data.

Training of every non-BP method is the block-local rule: each block's output F_l(h_{l-1}) (input
detached) is pushed along -a_l by the surrogate <F_l(h_{l-1}), a_l / RMS(a_l)>, and the head is
trained with the exact CE gradient on the detached h_L. BP trains end to end. SB and CB update their
credit model once per step on the same batch; during the first ``wr`` (CB) / ``sb_wr`` (SB) fraction
of the training steps the forward net uses DFA credit instead.

Determinism: parameters are drawn right after ``torch.manual_seed(seed)``; DFA/FA matrices and the
projection of h_L from a generator seeded by the trial seed; the batch order and the bridge noise
of epoch e from generators seeded by (seed, e). A trial resumed from its end-of-epoch checkpoint
therefore continues exactly as if it had not stopped.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from orchestrator.interface import Diverged

from .credit import Batch, CreditSource, DFACredit, build_source, rms_normalize
from .metrics import evaluate_credit, gamma, layer_mean
from .nets import BlockNet, LadderNet, ResidualMLP, true_gradients
from .settings import Settings, eta_name, resolve
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
    return cifar_task(ctx.data_root, cfg.data, cfg.n_train, cfg.n_test, cfg.standin_train, cfg.standin_test)


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
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        net = self.net
        if self.cfg.method == "bp":
            loss = F.cross_entropy(net(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1
            return float(loss.detach()), {}
        outs = net.block_outputs(x)
        states = [x if outs[0] is None else outs[0].detach()] + [o.detach() for o in outs[1:]]
        logits = net.head(states[-1])
        loss_vec = F.cross_entropy(logits, y, reduction="none")
        batch = Batch(x, y, torch.stack(states), logits.detach(), loss_vec.detach(), self.cfg.n_classes)
        side: dict[str, float] = {}
        if self.source.learns:  # the credit model learns every step, also during the DFA warm-up
            credit, side = self.source.learn(net, batch, noise)
        if self.warm is not None and self.step < self.warm_steps:
            credit = self.warm.credits(net, batch)
        elif not self.source.learns:
            credit = self.source.credits(net, batch)
        a_hat = rms_normalize(credit, self.cfg.credit_eps)
        surrogate = sum((outs[l] * a_hat[l]).sum(-1).mean() for l in net.credit_layers)
        self.opt.zero_grad(set_to_none=True)
        (surrogate + loss_vec.mean()).backward()
        self.opt.step()
        self.step += 1
        return float(loss_vec.detach().mean()), side

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


def run(config: dict[str, Any], ctx) -> dict[str, Any]:
    cfg = resolve(config)
    seed = int(cfg.seed) if cfg.seed is not None else int(ctx.seed)
    device = getattr(ctx, "device", "cpu") or "cpu"
    data = load_task(cfg, ctx, seed)
    trainer = Trainer(cfg, seed, data, device)

    saved = ctx.load_checkpoint()
    resumed_from = 0
    if saved is not None:
        trainer.restore(saved)
        resumed_from = trainer.epoch
        ctx.log(f"resumed at epoch {trainer.epoch} of {cfg.epochs}")

    t_train = time.perf_counter()
    steps_before = trainer.step
    last: dict[str, float] = {}
    while trainer.epoch < cfg.epochs:
        last = trainer.train_epoch()
        if not math.isfinite(last["train_loss"]):
            raise Diverged(f"non-finite training loss in epoch {trainer.epoch}",
                           metrics={"diverged_epoch": trainer.epoch})
        record = dict(last)
        if cfg.track_every and (trainer.epoch % cfg.track_every == 0 or trainer.epoch == cfg.epochs):
            record["test_acc"] = trainer.test()[0]
            record["gamma"] = trainer.quick_gamma(min(256, len(trainer.x_test)))
        ctx.report(trainer.epoch, **record)
        if cfg.checkpoint_every and (trainer.epoch % cfg.checkpoint_every == 0 or trainer.epoch == cfg.epochs):
            ctx.save_checkpoint(trainer.state())
    train_s = time.perf_counter() - t_train
    steps_here = trainer.step - steps_before

    t_eval = time.perf_counter()
    n_eval = min(cfg.n_eval, len(trainer.x_test))
    hs, grads, credits, y = trainer.credit_on(n_eval)
    rows = evaluate_credit(trainer.net, hs, grads, credits, y, trainer.net.credit_layers,
                           directions=cfg.rho_directions, eps=cfg.rho_eps, etas=tuple(cfg.nudge_etas),
                           seed=seed, rho_reference=cfg.rho_reference, credit_eps=cfg.credit_eps)
    acc, test_loss = trainer.test()
    eval_s = time.perf_counter() - t_eval

    hidden = list(range(1, cfg.depth + 1))  # means over the L hidden block outputs
    for r in rows:
        r.update(in_mean=r["layer"] in hidden, method=cfg.method, task=cfg.task, depth=cfg.depth,
                 alpha=cfg.alpha if cfg.task == "synthetic" else float("nan"), seed=seed)
    ctx.write_artifact("layers", rows)
    top = next(r for r in rows if r["layer"] == cfg.depth)
    first = next(r for r in rows if r["layer"] == 1)
    out: dict[str, Any] = {
        "gamma": layer_mean(rows, "gamma", hidden), "rho": layer_mean(rows, "rho", hidden),
        "gamma_first": first["gamma"], "gamma_top": top["gamma"],
        "rho_first": first["rho"], "rho_top": top["rho"],
        "gnorm": layer_mean(rows, "gnorm_mean", hidden), "gnorm_top": top["gnorm_mean"],
        "grad_floor_share": max(r["grad_floor_share"] for r in rows if r["layer"] in hidden),
        "cos_undefined": int(sum(r["cos_undefined"] for r in rows if r["layer"] in hidden)),
        "test_acc": acc, "test_loss": test_loss,
        "train_loss": last.get("train_loss", float("nan")),
        "data_source": data.source, "max_class_share": data.max_class_share,
        "epochs_done": trainer.epoch, "steps_done": trainer.step, "resumed_from_epoch": resumed_from,
        "step_ms": 1000.0 * train_s / steps_here if steps_here else float("nan"),
        "train_s": train_s, "eval_s": eval_s,
    }
    if cfg.rho_reference:
        out["rho_bp_ref"] = layer_mean(rows, "rho_bp_ref", hidden)
    for eta in cfg.nudge_etas:
        out[f"nudge_{eta_name(eta)}"] = layer_mean(rows, f"nudge_{eta_name(eta)}", hidden)
    for k in SIDE_KEYS:
        out[k] = last.get(k, float("nan"))
    return out
