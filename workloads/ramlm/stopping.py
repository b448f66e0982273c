"""When the tier-level search stops or widens: early stopping on too little progress, and the
overfitting monitor with its diversity modes. See docs/studies/ramlm.md,
'Early stopping' and 'Overfitting monitor'."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Log = Callable[[str], None]


class EarlyStopper:
    """Every ``check_every`` steps: PPL improvement since the last successful check, in percent;
    below ``threshold_pct`` counts against ``patience``; stop once the count exceeds it."""

    def __init__(self, start_ce: float, threshold_pct: float, patience: int, check_every: int = 5):
        self.ref_ce = start_ce
        self.threshold_pct = threshold_pct
        self.patience = patience
        self.check_every = check_every
        self.failures = 0

    def due(self, step: int) -> bool:
        return step > 0 and step % self.check_every == 0

    def check(self, best_ce: float) -> bool:
        """True = stop."""
        ref, best = math.exp(self.ref_ce), math.exp(best_ce)
        improvement = (ref - best) / ref * 100.0
        if improvement >= self.threshold_pct:
            self.failures = 0
            self.ref_ce = best_ce
        else:
            self.failures += 1
        return self.failures > self.patience


@dataclass
class OverfittingMonitor:
    """ratio = CE_dev / CE_eval of the current best; delta% against ``baseline_ratio``.
    delta > critical: stop (severe diversity during the grace period); > severe: severe diversity;
    > warning: mild; <= healthy: leave diversity; in between: keep the current mode."""

    dev_ce: Callable[[np.ndarray], float]
    baseline_ratio: float
    grace_checks: int = 1
    healthy_pct: float = -1.0
    warning_pct: float = 0.0
    severe_pct: float = 1.0
    critical_pct: float = 3.0
    mode: str = "none"
    checks: int = 0
    history: list = field(default_factory=list)

    def check(self, genome: np.ndarray, eval_ce: float) -> bool:
        """Update the mode; True = stop the search."""
        self.checks += 1
        dev = self.dev_ce(genome)
        ratio = dev / eval_ce if eval_ce > 0 else 1.0
        delta = (ratio - self.baseline_ratio) / self.baseline_ratio * 100.0
        stop = False
        if delta > self.critical_pct:
            if self.checks <= self.grace_checks + 1:
                self.mode = "severe"
            else:
                stop = True
        elif delta > self.severe_pct:
            self.mode = "severe"
        elif delta > self.warning_pct:
            self.mode = "mild"
        elif delta <= self.healthy_pct:
            self.mode = "none"
        self.history.append({"check": self.checks, "dev_ce": dev, "eval_ce": eval_ce, "delta_pct": delta,
                             "mode": self.mode, "stop": stop})
        return stop


class Supervisor:
    """What the tier-level GA and TS do after every step: keep the history, log a line, run the
    periodic early-stop and overfitting check, and hand a new diversity mode to ``adapt``."""

    def __init__(self, stopper: EarlyStopper, monitor: OverfittingMonitor | None,
                 adapt: Callable[[str], None], log: Log | None):
        self.stopper, self.monitor, self.adapt, self.log = stopper, monitor, adapt, log
        self.mode = "none"
        self.history: list[dict] = []

    def record(self, row: dict, line: str | None = None) -> None:
        self.history.append(row)
        if line is not None and self.log:
            self.log(line)

    def check(self, step: int, best: np.ndarray, best_ce: float) -> str | None:
        """The reason to stop (early_stop, overfitting) or None; a mode change is adapted to at once."""
        if not self.stopper.due(step):
            return None
        if self.stopper.check(best_ce):
            return "early_stop"
        if self.monitor is None:
            return None
        if self.monitor.check(best, best_ce):
            return "overfitting"
        if self.monitor.mode != self.mode:
            self.mode = self.monitor.mode
            self.adapt(self.mode)
        return None
