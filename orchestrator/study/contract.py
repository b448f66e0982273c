"""The one small interface between overnight and a workload.

A workload is a class with a ``name``, a ``version``, a ``run(config, ctx)`` method that trains
and evaluates one configuration and returns a flat dict of metrics, and the declarations of its
parameters and metrics (``Params``, ``Metrics``: see orchestrator/study/params.py). It is registered in
pyproject.toml under the ``overnight.workloads`` entry-point group; the orchestrator loads it by
that name and never imports workload code directly.

``ctx`` is supplied by the orchestrator (see :class:`TrialContext` for what it offers). Workloads
must work with any object that has these attributes, so unit tests can pass a ``LocalContext``.
"""
from __future__ import annotations

import math
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, runtime_checkable

Metrics = dict[str, Any]  # flat: str -> int | float | str | bool


class DataMissing(Exception):
    """Raise from a workload's optional ``preflight(config, data_root, scale)`` when a trial would
    need a dataset that is not there (at full scale a study must not fall back to a stand-in).
    The orchestrator turns it into a one-line error (exit 2) before Ray starts."""

    def __init__(self, dataset: str, looked_in: str, how: str):
        super().__init__(f"{dataset} not found in {looked_in}: {how}")
        self.dataset, self.looked_in, self.how = dataset, looked_in, how


class Diverged(RuntimeError):
    """Raise from ``run`` when training blew up (NaN/inf loss). The trial is recorded with status
    ``diverged`` and is not retried. Any metrics passed along are kept in the row."""

    def __init__(self, message: str = "training diverged", metrics: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.metrics = dict(metrics or {})


@runtime_checkable
class TrialContext(Protocol):
    """What a running trial can use. Provided by the orchestrator."""

    trial_id: str
    seed: int            # the config's ``seed`` if present, else derived from the trial id
    device: str          # "cpu" or "cuda" (already restricted to the GPU Ray assigned)
    data_root: Path      # where loaders look for / download real datasets
    cache_dir: Path      # scratch space shared by trials on this machine
    scale: str           # smoke | fast | full
    attempt: int         # 1 on the first execution, 2 after a crash/retry, ...

    def report(self, step: int, **metrics: Any) -> None:
        """Record one row of per-step history (goes to the history dataset)."""

    def save_checkpoint(self, state: Any) -> None:
        """Persist picklable state (torch tensors are fine). Overwrites the previous one atomically."""

    def load_checkpoint(self) -> Any | None:
        """The last saved state of this trial, or None on a fresh start."""

    def write_artifact(self, name: str, rows: Any) -> None:
        """Store a table (pandas DataFrame or list of dicts) as a Parquet artifact of this trial."""

    def stage(self, key: Mapping[str, Any], build: Callable[[], Any]) -> Any:
        """Content-addressed stage cache: return the artifact for ``key``, building it once."""

    def log(self, message: str) -> None:
        """A line for the trial's log."""


class Workload(Protocol):
    name: str
    version: str

    def run(self, config: dict[str, Any], ctx: TrialContext) -> Metrics: ...

    # Declared as class attributes (orchestrator/study/params.py): ``Params`` (checked for every trial
    # before Ray starts), ``Metrics`` (the row's metric columns) and optionally ``artifacts``.
    # Optional: ``preflight(config, data_root: Path, scale: str) -> None`` (a classmethod or
    # staticmethod), called for every trial before Ray starts; raises DataMissing.
    #
    # Optional, together: vectorised trial groups (orchestrator/run/groups.py; the study's ``group``,
    # ``--group auto|off|N``).
    # - ``group_key(config) -> str | None`` (a staticmethod or classmethod, called in the driver):
    #   trials with equal keys can run as one batched computation: same shapes, their configs
    #   differing only in values (the seed, a loss weight, a bit width). None: this trial runs alone.
    # - ``run_group(configs, ctxs) -> list[Metrics | BaseException]``: run such trials together,
    #   each with its own ctx (own report/history, checkpoint, attempt, stage cache), and return one
    #   entry per config, in order: what ``run`` would have returned, or the exception ``run`` would
    #   have raised (a Diverged entry records the trial as diverged). Any other exception entry: that
    #   trial failed, and runs again alone through ``run``. An exception raised by ``run_group``
    #   itself: the batched computation failed, and every member without a row runs again alone.
    #   Each member still gets its own row, and resume, retries and dedup stay per trial.
    #
    # Optional: ``determinism``, what of the trial's metrics is not bit-identical across the
    # execution knobs (``NotBitIdentical`` below): ``()`` declares every metric bit-identical.


# -------------------------------------------------------------------------------- determinism
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


def workload(*, params: Any = None, metrics: Any = None, artifacts: Mapping[str, Any] | None = None,
             version: str = "1", name: str | None = None) -> Callable[[Callable], Callable]:
    """Declare a plain ``run(config, ctx)`` function as a workload (study: ``workload:
    mypackage.train:run``): its parameter model, metric model, artifact models, version and name
    (default: the ``module:function`` reference). Without it a function still works, with any keys
    accepted and its metrics kept in ``extra_metrics``."""
    def mark(fn: Callable) -> Callable:
        # a function object takes any attribute; Callable's type does not say so
        fn.__overnight__ = {"params": params, "metrics": metrics,  # type: ignore[attr-defined]
                            "artifacts": dict(artifacts or {}), "version": version, "name": name}
        return fn
    return mark


def check_finite(step: int, **values: float) -> None:
    """Raise :class:`Diverged` if any value is NaN or infinite."""
    bad = {k: v for k, v in values.items() if not math.isfinite(float(v))}
    if bad:
        raise Diverged(f"non-finite {', '.join(bad)} at step {step}", metrics={"diverged_step": step})


@dataclass
class LocalContext:
    """A ``TrialContext`` that needs no Ray and no results directory: for unit tests, notebooks
    and quick manual runs of a workload. Everything it records stays on the object."""

    trial_id: str = "local"
    seed: int = 0
    device: str = "cpu"
    data_root: Path = field(default_factory=lambda: Path(os.environ.get("OVERNIGHT_DATA", Path.home() / ".cache/overnight/data")))
    cache_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="overnight-cache-")))
    scale: str = "smoke"
    attempt: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    _checkpoint: bytes | None = None
    _stages: dict[str, Any] = field(default_factory=dict)

    def report(self, step: int, **metrics: Any) -> None:
        self.history.append({"step": step, **metrics})

    def save_checkpoint(self, state: Any) -> None:
        self._checkpoint = pickle.dumps(state)

    def load_checkpoint(self) -> Any | None:
        return None if self._checkpoint is None else pickle.loads(self._checkpoint)

    def write_artifact(self, name: str, rows: Any) -> None:
        self.artifacts[name] = rows

    def stage(self, key: Mapping[str, Any], build: Callable[[], Any]) -> Any:
        k = repr(sorted(key.items()))
        if k not in self._stages:
            self._stages[k] = build()
        return self._stages[k]

    def log(self, message: str) -> None:
        self.messages.append(message)
