"""Recovery and gap (spec §1.5): always computed from the raw f (float), q (quantized) and
c (corrected) values, which every row also carries."""
from __future__ import annotations

import math


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
    noise. Reliable iff the gap is at least ``rel`` of |f|: 0.5% by default, so the 8-bit gap of the
    spec's check (1e-4 nats on f = 2.49) is flagged and its 4-bit gap (0.025 nats, 1%) is not."""
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
