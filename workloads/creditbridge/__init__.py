"""Credit assignment without backprop across blocks (seed 004): BP, DFA, FA, state bridge (SB) and
credit bridge (CB) on block networks, with the credit metrics Gamma (cosine with the true gradient)
and rho (perturbation correlation). Method, metrics and studies: docs/studies/credit-bridge.md."""
from __future__ import annotations

from typing import Any

from .outputs import LayerRow, Results
from .settings import Settings


class CreditBridge:
    """One trial: train ``config["method"]`` on ``config["task"]`` (synthetic ladder or CIFAR-10),
    then measure its credit on held-out data. Config keys: workloads/creditbridge/settings.py."""

    name = "creditbridge"
    version = "2"
    Params = Settings
    Metrics = Results
    artifacts = {"layers": LayerRow}

    def run(self, config: dict[str, Any], ctx) -> dict[str, Any]:
        from .train import run  # torch is imported only when a trial runs
        return run(config, ctx)


__all__ = ["CreditBridge"]
