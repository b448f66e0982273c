"""Test-only workloads referenced as ``tests.orchestrator.toy_workloads:Class`` in study files:
a declared one, the same one grown by a parameter, one that declares nothing, the declared
one as a decorated function, an undecorated function, and two that miss part of the contract."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import model_validator

from orchestrator import AnyParams, Metrics, Params, knob, metric, param, workload


class ToyParams(Params):
    lr: float = param(0.1, "learning rate", gt=0, le=10)
    bits: Literal[2, 4, 8] = param(4, "bit width")
    steps: int = param(3, "optimisation steps", ge=1)
    mode: Literal["ok", "raise", "nan", "undeclared", "badtype"] = param("ok", "what the trial does")
    seed: int = param(0, "seed")
    cache: bool = knob(True, "an execution-only switch")

    @model_validator(mode="after")
    def _steps_for_8_bits(self):
        if self.bits == 8 and self.steps < 2:
            raise ValueError(f"steps: 8 bits needs at least 2 steps (got {self.steps})")
        return self


class ToyMetrics(Metrics):
    loss: float | None = metric("final loss")
    final_step: int | None = metric("last step")


class Toy:
    """A tiny declared workload: loss = lr * bits / steps."""

    name = "toy"
    version = "1"
    Params = ToyParams
    Metrics = ToyMetrics

    def run(self, config: ToyParams, ctx):
        for step in range(config.steps):
            ctx.report(step, phase="train", loss=config.lr / (step + 1))
        loss = config.lr * config.bits / config.steps
        if config.mode == "raise":
            raise ValueError("toy failure")
        if config.mode == "nan":
            loss = math.nan
        out = {"loss": loss, "final_step": config.steps}
        if config.mode == "undeclared":
            out["surprise"] = 1.5
        if config.mode == "badtype":
            out["final_step"] = "many"
        return out


class ToyGrown(Toy):
    """Toy after its author added a parameter with a default (same name and version)."""

    class Params(ToyParams):
        momentum: float = param(0.0, "a new parameter; its default keeps the old behaviour")


class Undeclared:
    """A workload that declares nothing: any key is accepted, column types are inferred, and
    ``run`` gets an AnyParams."""

    name = "undeclared"
    version = "1"

    def run(self, config: AnyParams, ctx):
        return {"score": float(getattr(config, "x", 0)) * 2}


@workload(params=ToyParams, metrics=ToyMetrics, version="1", name="toy_function")
def toy_function(config: ToyParams, ctx):
    """Toy as a decorated function: it receives what Toy.run does."""
    return {"loss": config.lr * config.bits / config.steps, "received": type(config).__name__}


def plain_function(config: AnyParams, ctx):
    """An undecorated function: any key accepted, as attributes of an AnyParams."""
    return {"score": float(getattr(config, "x", 0)) * 2, "received": type(config).__name__}


class HalfGrouped(Toy):
    """Declares group_key without run_group: not a grouped workload."""

    @staticmethod
    def group_key(config):
        return "all"


class NoRun:
    name = "no_run"
    version = "1"
