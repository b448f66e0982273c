"""The end of a quantcorr trial: recovery and gap, the phase clock, and the result row
(docs/studies/quantization-correction.md, 'Metrics').

Recovery and gap are always computed from the raw f (float), q (quantized) and c (corrected)
values of the task's own metric, which every row also carries.
"""
from __future__ import annotations

import math
import time
from typing import Any, Mapping

from orchestrator import Diverged


def gap(f: float, q: float, *, higher_is_better: bool) -> float:
    """How much quantization hurt, positive when q is worse than f."""
    return (f - q) if higher_is_better else (q - f)


def recovery_pct(f: float, q: float, c: float, *, higher_is_better: bool, guard: str = "hydra") -> float:
    """Share of the quantization gap the correction closes, in percent.

    Lower is better (loss, MSE): 100 (q - c) / (q - f). Higher is better (accuracy):
    100 (c - q) / (f - q). Guard ``hydra`` (Hydra runner, 243-run grid): 0 when the gap is <= 0.
    Guard ``lambda`` (lambda sweep): 0 only when the gap is exactly 0, so a negative gap flips the sign.
    """
    g = gap(f, q, higher_is_better=higher_is_better)
    gain = (c - q) if higher_is_better else (q - c)
    if guard == "hydra":
        return 0.0 if g <= 0 else 100.0 * gain / g
    if guard == "lambda":
        return 0.0 if g == 0 else 100.0 * gain / g
    raise ValueError(f"guard must be hydra|lambda, got {guard!r}")


def is_reliable(f: float, q: float, *, higher_is_better: bool, rel: float = 0.005) -> bool:
    """Recovery is a ratio over the gap; when the gap is tiny (8-bit transformers: ~1e-4 nats) it is
    noise. Reliable iff the gap is at least ``rel`` of |f|: 0.5% by default, so an 8-bit gap of
    1e-4 nats on f = 2.49 is flagged and a 4-bit gap of 0.025 nats (1%) is not."""
    g = gap(f, q, higher_is_better=higher_is_better)
    return bool(math.isfinite(g) and g >= rel * max(abs(f), 1e-12))


def summary(f: float, q: float, c: float, *, higher_is_better: bool, guard: str, rel: float = 0.005) -> dict:
    """The generic columns present in every row of every task."""
    g = gap(f, q, higher_is_better=higher_is_better)
    return {
        "f": float(f), "q": float(q), "c": float(c),
        "gap": float(g), "gap_abs": float(abs(q - f)),
        "recovery_pct": float(recovery_pct(f, q, c, higher_is_better=higher_is_better, guard=guard)),
        "recovery_reliable": is_reliable(f, q, higher_is_better=higher_is_better, rel=rel),
    }


class PhaseClock:
    """Wall and CPU time at the start of a trial and at the end of each named phase."""

    def __init__(self) -> None:
        self._marks = {"start": self._now()}

    @staticmethod
    def _now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def mark(self, phase: str) -> None:
        self._marks[phase] = self._now()

    def wall(self, since: str, until: str | None = None) -> float:
        return (self._marks[until] if until else self._now())[0] - self._marks[since][0]

    def cpu(self, since: str, until: str | None = None) -> float:
        return (self._marks[until] if until else self._now())[1] - self._marks[since][1]

    def share(self, fraction: float) -> "ClockShare":
        """This clock's times times ``fraction``: a member's share of a vectorised group's times."""
        return ClockShare(self, fraction)


class ClockShare:
    def __init__(self, clock: PhaseClock, fraction: float):
        self.clock, self.fraction = clock, fraction

    def wall(self, since: str, until: str | None = None) -> float:
        return self.clock.wall(since, until) * self.fraction

    def cpu(self, since: str, until: str | None = None) -> float:
        return self.clock.cpu(since, until) * self.fraction


def result_row(f: float, q: float, c: float, *, p: Mapping[str, Any], higher_is_better: bool,
               n_correctors: int, n_points: int, final_loss: float, data_source: str,
               clock: PhaseClock, **task_metrics: Any) -> dict:
    """The row of a quantcorr trial: the generic columns, the task's own ones, the float phase's
    and the whole trial's times. Without correctors the recovery is 0 (the Hydra skip rule).
    Raises Diverged, with the row, when an evaluation gave a non-finite value."""
    row = summary(f, q, c, higher_is_better=higher_is_better, guard=p["guard"], rel=float(p["reliable_gap_rel"]))
    if not n_correctors:
        row["recovery_pct"] = 0.0
    row.update(task_metrics, num_correction_layers=n_correctors, num_quant_points=n_points,
               correction_final_loss=final_loss, data_source=data_source,
               float_phase_s=clock.wall("start", "float"), float_phase_cpu_s=clock.cpu("start", "float"),
               total_s=clock.wall("start"), total_cpu_s=clock.cpu("start"))
    if not all(math.isfinite(v) for v in (f, q, c)):
        raise Diverged("non-finite evaluation metric", metrics=row)
    return row
