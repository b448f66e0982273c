"""The credit-bridge workload class (workloads/creditbridge/__init__.py); its parameters, metrics
and per-layer table are in workloads/creditbridge/params.py, one trial in workloads/creditbridge/train.py."""
from __future__ import annotations

from typing import Any

from orchestrator import NotBitIdentical, TrialContext
from workloads.data.locate import data_files_for

from .params import LayerRow, Results, Settings


class CreditBridge:
    """One trial: train ``config.method`` on ``config.task`` (synthetic ladder or CIFAR-10), then
    measure its credit on held-out data. Config keys: workloads/creditbridge/params.py."""

    name = "creditbridge"
    version = "3"   # 3: rho over the samples above the gradient floor, floor shares reported
    Params = Settings
    Metrics = Results
    determinism = (NotBitIdentical(("resume",), metrics=("resumed_from_epoch",),
                                   why="it records the epoch the last execution resumed from (0 when the trial ran "
                                       "straight through); every other metric is bit-identical"),)
    artifacts = {"layers": LayerRow}

    data_files = data_files_for("cifar10", "fashion-mnist", when=lambda c: c.get("task") == "cifar10")

    def run(self, config: Settings, ctx: TrialContext) -> dict[str, Any]:
        from .train import run  # torch is imported only when a trial runs
        return run(config, ctx)

    @staticmethod
    def preflight(config: dict[str, Any], data_root, scale: str) -> None:
        """Before Ray starts (raises DataMissing): the cifar10 task needs CIFAR-10 itself at full
        scale with data: auto, and whenever data: real asks for it; Fashion-MNIST (a disclosed
        substitute below full scale) and the stand-in do not count (workloads/data/locate.py)."""
        if config.get("task") != "cifar10":
            return
        from workloads.data import require

        require("cifar10", data_root, scale, config.get("data", "auto"))

