"""What of a workload's metrics is not bit-identical across the execution knobs: the
``determinism`` declaration a workload class may carry (``NotBitIdentical``), checked against its
``Metrics``, and its one-line text for ``overnight describe`` and the report. Apart from the
contract (orchestrator/study/contract.py) so that the parameter declarations
(orchestrator/study/params.py, ``describe``) can read it without importing the contract.

``KNOBS``: the execution knobs a declaration may name.

>>> import orchestrator as overnight
>>> overnight.KNOBS
('bundle', 'group', 'max_concurrent', 'resume')
>>> overnight.NotBitIdentical(overnight.KNOBS, metrics=("pid",), why="the process that ran it").text()
'every run changes pid: the process that ran it'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

KNOBS = ("bundle", "group", "max_concurrent", "resume")
_KNOB_TEXT = {"bundle": "--bundle", "group": "--group", "max_concurrent": "--max-concurrent",
              "resume": "a resume from a checkpoint"}


@dataclass(frozen=True)
class NotBitIdentical:
    """A workload's declaration that some of its metrics are not bit-identical across execution
    knobs. On one machine a trial's metrics are otherwise bit for bit the same whatever the run's
    ``--bundle`` (1 or auto), ``--group`` (off or auto) and ``--max-concurrent``, and whether the
    trial was resumed from a checkpoint or ran straight through (tests/orchestrator/test_determinism.py
    checks every registered workload at smoke scale).

    A workload class declares ``determinism = (NotBitIdentical(...), ...)``, or ``()`` for "every
    metric bit-identical"; without the attribute nothing is declared. ``overnight describe`` prints
    the declaration, and ``orchestrator.run.registry.determinism_note`` gives it as one line for the report.

    - ``knobs``: which of ``KNOBS`` change the metrics ("bundle", "group", "max_concurrent", "resume");
    - ``metrics``: the metric columns that change (empty: every metric);
    - ``why``: the reason, for the reader of the report;
    - ``device``: "cpu" or "cuda" when it happens only there (None: on any device).

    >>> import orchestrator as overnight
    >>> class Train:
    ...     name, version = "train", "1"
    ...     determinism = (overnight.NotBitIdentical(("group", "resume"), metrics=("loss",), device="cuda",
    ...                                              why="batched kernels sum in another order"),)
    >>> print(Train.determinism[0].text())
    on CUDA, --group or a resume from a checkpoint changes loss: batched kernels sum in another order
    >>> overnight.NotBitIdentical("seed", why="another seed")
    Traceback (most recent call last):
        ...
    ValueError: NotBitIdentical.knobs: ['seed'] (knobs: bundle, group, max_concurrent, resume)
    """

    knobs: tuple[str, ...]
    why: str
    metrics: tuple[str, ...] = ()
    device: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "knobs", tuple([self.knobs] if isinstance(self.knobs, str) else self.knobs))
        object.__setattr__(self, "metrics", tuple([self.metrics] if isinstance(self.metrics, str) else self.metrics))
        bad = [k for k in self.knobs if k not in KNOBS]
        if not self.knobs or bad:
            raise ValueError(f"NotBitIdentical.knobs: {bad or 'none given'} (knobs: {', '.join(KNOBS)})")
        if not self.why.strip():
            raise ValueError("NotBitIdentical.why: say why the metrics differ")
        if self.device not in (None, "cpu", "cuda"):
            raise ValueError(f"NotBitIdentical.device: {self.device!r} (cpu, cuda or None)")

    def applies(self, knobs: Iterable[str], device: str) -> bool:
        """Whether it covers a comparison of runs that differ in ``knobs``, on ``device``."""
        return bool(set(self.knobs) & set(knobs)) and self.device in (None, device)

    def text(self) -> str:
        where = f"on {self.device.upper() if self.device == 'cuda' else self.device}, " if self.device else ""
        names = [_KNOB_TEXT[k] for k in self.knobs]
        knobs = "every run" if set(self.knobs) == set(KNOBS) else (
            names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1])
        what = ", ".join(self.metrics) if self.metrics else "every metric"
        return f"{where}{knobs} changes {what}: {self.why}"


def determinism(workload: Any) -> tuple[NotBitIdentical, ...] | None:
    """A workload's ``determinism`` declaration, checked (knobs, and metric names against its
    ``Metrics`` when it declares them); None when it declares none."""
    declared = getattr(workload, "determinism", None)
    if declared is None:
        return None
    entries = (declared,) if isinstance(declared, NotBitIdentical) else tuple(declared)
    name = getattr(workload, "name", workload)
    for e in entries:
        if not isinstance(e, NotBitIdentical):
            raise TypeError(f"workload {name}: determinism entries must be NotBitIdentical, not {type(e).__name__}")
    metrics_model = getattr(workload, "Metrics", None)
    known = set(getattr(metrics_model, "model_fields", {}) or {})
    unknown = sorted({m for e in entries for m in e.metrics} - known) if known else []
    if unknown:
        raise ValueError(f"workload {name}: determinism names metrics it does not declare: {unknown}")
    return entries


def determinism_text(workload: Any) -> str | None:
    """The declaration as one line (None: every metric bit-identical, or nothing declared)."""
    entries = determinism(workload)
    if not entries:
        return None
    return ("Not bit-identical across execution knobs on one machine: "
            + "; ".join(e.text() for e in entries) + ".")
