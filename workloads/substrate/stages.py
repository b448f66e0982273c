"""Trial seeds, checkpoints and the stage cache.

A trial's checkpoint is a dict of phases ({"float": ..., "correction_progress": ...}) tagged with a
key, so a checkpoint of another configuration (or of other data) is never resumed. A trained float
backbone goes to the content-addressed stage cache instead when ``stage_cache`` is on, so every
trial whose backbone key is the same loads the one trained first.
"""
from __future__ import annotations

import io
from typing import Any, Callable, Mapping

import torch
from torch import nn

from orchestrator import is_knob


def trial_seed(p: Mapping[str, Any], ctx) -> int:
    """The config's seed; when it is None, the one the orchestrator derived for the trial."""
    return ctx.seed if p["seed"] is None else int(p["seed"])


def frozen(model: nn.Module) -> nn.Module:
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def state_to_bytes(model: nn.Module) -> bytes:
    """A CPU copy of the weights, picklable for the stage cache and checkpoints."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def load_state(model: nn.Module, blob: bytes, device: str | torch.device) -> nn.Module:
    model.load_state_dict(torch.load(io.BytesIO(blob), map_location=device, weights_only=True))
    return model.to(device)


class Checkpointer:
    """This trial's checkpoint as a dict of phases, tagged with ``key``."""

    def __init__(self, ctx, key: dict):
        self.ctx = ctx
        ck = ctx.load_checkpoint()
        self.state = ck if isinstance(ck, dict) and ck.get("key") == key else {"key": key}

    def get(self, phase: str) -> Any:
        return self.state.get(phase)

    def put(self, phase: str, value: Any) -> None:
        self.state[phase] = value
        self.ctx.save_checkpoint(self.state)

    def drop(self, phase: str) -> None:
        """Forget a phase; the next ``put`` saves without it."""
        self.state.pop(phase, None)


def trial_checkpoint(ctx, params_model, p: Mapping[str, Any], stage_key: dict) -> Checkpointer:
    """The checkpoint of a trial: its backbone's stage key (which names its data) and its
    parameters, execution knobs left out (they do not change what the checkpoint holds)."""
    trial = {k: p[k] for k in sorted(p) if not is_knob(params_model, k)}
    return Checkpointer(ctx, {**stage_key, "trial": trial})


def staged(stage_cache: bool, ctx, ckpt: Checkpointer, key: dict, build: Callable[[], Any]) -> Any:
    """The float backbone (picklable): from the stage cache when ``stage_cache`` is on (many trials
    share one backbone), else from this trial's checkpoint or freshly built. ``build`` may save
    per-epoch progress under "float_progress"; once the backbone exists that progress is dropped,
    so the later checkpoints of the trial stay small."""
    if stage_cache:
        obj = ctx.stage(key, build)
        ckpt.drop("float_progress")
        return obj
    obj = ckpt.get("float")
    if obj is None:
        obj = build()
        ckpt.drop("float_progress")
        ckpt.put("float", obj)
    return obj
