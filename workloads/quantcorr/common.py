"""Pieces shared by the three tasks: config access, freezing, the backbone stage, corrector
training loops."""
from __future__ import annotations

import io
from typing import Any, Callable, Iterable

import torch
from torch import nn

from orchestrator.interface import check_finite


def trial_seed(cfg: dict, ctx) -> int:
    """The config's seed; when it is absent or None, the one the orchestrator derived for the trial."""
    return ctx.seed if cfg.get("seed") is None else int(cfg["seed"])


def protocol_config(defaults: dict[str, Any], cfg: dict) -> dict:
    """The config over its protocol's defaults; a None value ("the protocol's") keeps the default."""
    return {**defaults, **{k: v for k, v in cfg.items() if v is not None}}


def frozen(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def state_to_bytes(model: nn.Module) -> bytes:
    """A CPU copy of the weights, picklable for the stage cache and checkpoints."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def load_state(model: nn.Module, blob: bytes, device: str) -> nn.Module:
    model.load_state_dict(torch.load(io.BytesIO(blob), map_location=device, weights_only=True))
    return model.to(device)


class Checkpointer:
    """This trial's checkpoint as a dict of phases ({"float": ..., "correction": ...}), tagged with
    a key so a checkpoint of another configuration is never resumed."""

    def __init__(self, ctx, key: dict):
        self.ctx = ctx
        ck = ctx.load_checkpoint()
        self.state = ck if isinstance(ck, dict) and ck.get("key") == key else {"key": key}

    def get(self, phase: str) -> Any:
        return self.state.get(phase)

    def put(self, phase: str, value: Any) -> None:
        self.state[phase] = value
        self.ctx.save_checkpoint(self.state)


def backbone(cfg: dict, ctx, ckpt: Checkpointer, key: dict, build: Callable[[], Any]) -> Any:
    """The float backbone (picklable): from the content-addressed stage cache when ``stage_cache``
    is on (many trials share one backbone), else from this trial's checkpoint or freshly built.
    ``build`` may itself checkpoint under the phase "float_progress" to resume long trainings."""
    if cfg.get("stage_cache", True):
        return ctx.stage(key, build)
    done = ckpt.get("float")
    if done is not None:
        return done
    obj = build()
    ckpt.put("float", obj)
    return obj


def distill_correctors(correctors: nn.ModuleDict, batches: Iterable[tuple[int, Any]],
                       student: Callable[[Any], torch.Tensor], teacher: Callable[[Any], torch.Tensor],
                       lr: float, ctx, report_every: int = 50,
                       loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> float:
    """Train only the correctors: Adam on ``loss_fn(student(batch), teacher(batch))`` (MSE by
    default, i.e. distillation of the float output). ``batches`` yields (step, batch)."""
    loss_fn = loss_fn or nn.functional.mse_loss
    opt = torch.optim.Adam(correctors.parameters(), lr=lr)
    last = float("nan")
    for step, batch in batches:
        with torch.no_grad():
            target = teacher(batch)
        loss = loss_fn(student(batch), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = float(loss.detach())
        check_finite(step, correction_loss=last)
        if report_every and step % report_every == 0:
            ctx.report(step, phase="correction", loss=last)
    return last
