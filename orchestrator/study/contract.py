"""The one small interface between overnight and a workload.

A workload is a class (``Workload``) with a ``name``, a ``version``, a ``run(config, ctx)`` method
that trains and evaluates one configuration and returns a flat dict of metrics, and the
declarations of its parameters and metrics (``Params``, ``Metrics``: see
orchestrator/study/params.py). ``run`` receives the trial's config as an instance of the
workload's ``Params``, validated before Ray starts (``config.lr``). It is registered in
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
from typing import Any, Callable, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

from pydantic import BaseModel

from orchestrator.study.params import AnyParams, declared


class DataMissing(Exception):
    """Raise from a workload's optional ``preflight(config, data_root, scale)`` when a trial would
    need a dataset that is not there (at full scale a study must not fall back to a stand-in).
    The orchestrator turns it into a one-line error (exit 2) before Ray starts.

    >>> import orchestrator as overnight
    >>> error = overnight.DataMissing("MNIST", "/data/mnist", "fetch it with workloads/data/fetch.py")
    >>> print(error)
    MNIST not found in /data/mnist: fetch it with workloads/data/fetch.py
    >>> error.dataset, error.looked_in
    ('MNIST', '/data/mnist')
    """

    def __init__(self, dataset: str, looked_in: str, how: str):
        super().__init__(f"{dataset} not found in {looked_in}: {how}")
        self.dataset, self.looked_in, self.how = dataset, looked_in, how


class Diverged(RuntimeError):
    """Raise from ``run`` when training blew up (NaN/inf loss). The trial is recorded with status
    ``diverged`` and is not retried. Any metrics passed along are kept in the row.

    >>> import orchestrator as overnight
    >>> try:
    ...     raise overnight.Diverged("loss exploded at step 7", metrics={"diverged_step": 7, "loss": 1e30})
    ... except overnight.Diverged as e:
    ...     print(e, e.metrics)
    loss exploded at step 7 {'diverged_step': 7, 'loss': 1e+30}
    >>> overnight.Diverged().metrics
    {}
    """

    def __init__(self, message: str = "training diverged", metrics: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.metrics = dict(metrics or {})


@runtime_checkable
class TrialContext(Protocol):
    """What a running trial can use. Provided by the orchestrator.

    >>> import orchestrator as overnight
    >>> def run(config, ctx: overnight.TrialContext):
    ...     ctx.log(f"trial {ctx.trial_id} on {ctx.device}, attempt {ctx.attempt}")
    ...     state = ctx.load_checkpoint() or {"step": 0}
    ...     ctx.save_checkpoint({"step": state["step"] + 1})
    ...     return {"step": state["step"] + 1}
    >>> ctx = overnight.LocalContext(trial_id="t1")
    >>> run(None, ctx), run(None, ctx), ctx.messages[0]
    ({'step': 1}, {'step': 2}, 'trial t1 on cpu, attempt 1')
    >>> isinstance(ctx, overnight.TrialContext)
    True
    """

    trial_id: str
    seed: int            # the config's ``seed`` if present, else derived from the trial id
    device: str          # "cpu" or "cuda" (already restricted to the GPU Ray assigned)
    data_root: Path      # where loaders look for / download real datasets
    cache_dir: Path      # scratch space shared by trials on this machine
    scale: str           # smoke | fast | full
    attempt: int         # 1 on the first execution, 2 after a crash/retry, ...

    def report(self, step: int, phase: str | None = None, **metrics: Any) -> None:
        """Record one row of per-step history (goes to the history dataset): numbers only, with
        an optional label for the part of training they come from (``phase="float"``)."""

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


# a workload's own Params (a subclass of orchestrator/study/params.py Params, or any pydantic model)
ConfigT = TypeVar("ConfigT", bound=BaseModel, contravariant=True)


@runtime_checkable
class Workload(Protocol[ConfigT]):
    """A workload class. Besides these members it declares, as class attributes
    (orchestrator/study/params.py), ``Params`` (checked for every trial before Ray starts; without
    it ``run`` gets an ``AnyParams``), ``Metrics`` (the row's metric columns) and optionally
    ``artifacts`` ({name: model} of its per-trial tables) and ``determinism`` (what of its metrics is
    not bit-identical across the execution knobs, orchestrator/study/determinism.py; ``()``: every
    metric is). Optional hooks: ``Preflight`` and ``Grouped`` below.

    >>> import orchestrator as overnight
    >>> class Square:
    ...     name, version = "square", "1"
    ...     def run(self, config, ctx):
    ...         ctx.report(0, y=config.x ** 2)
    ...         return {"y": config.x ** 2}
    >>> isinstance(Square(), overnight.Workload)
    True
    >>> Square().run(overnight.AnyParams(x=3), overnight.LocalContext())
    {'y': 9}
    """

    name: str
    version: str

    def run(self, config: ConfigT, ctx: TrialContext) -> Mapping[str, Any]:
        """One trial: ``config`` is the trial's ``Params`` instance; returns the row's metrics."""
        ...


@runtime_checkable
class Preflight(Protocol):
    """Optional: called in the driver, on the class, for every trial before Ray starts, with the
    full validated config as a dict; raises ``DataMissing`` when the trial's data is not there (a
    staticmethod or classmethod, or a plain function assigned to the class).

    >>> from pathlib import Path
    >>> import orchestrator as overnight
    >>> class Train:
    ...     name, version = "train", "1"
    ...     def run(self, config, ctx):
    ...         return {}
    ...     @staticmethod
    ...     def preflight(config, data_root, scale):
    ...         if scale == "full" and not (data_root / "mnist").is_dir():
    ...             raise overnight.DataMissing("MNIST", str(data_root / "mnist"), "fetch it first")
    >>> isinstance(Train, overnight.Preflight)
    True
    >>> Train.preflight({}, Path("/nonexistent"), "full")
    Traceback (most recent call last):
        ...
    orchestrator.study.contract.DataMissing: MNIST not found in /nonexistent/mnist: fetch it first
    """

    def preflight(self, config: Mapping[str, Any], data_root: Path, scale: str) -> None: ...


@runtime_checkable
class Grouped(Protocol):
    """Optional, both methods together: vectorised trial groups (orchestrator/run/groups.py; the
    study's ``group``, ``--group auto|off|N``).

    - ``group_key(config)`` (a staticmethod or classmethod, called in the driver with the full
      validated config as a dict): trials with equal keys can run as one batched computation: same
      shapes, their configs differing only in values (the seed, a loss weight, a bit width). None:
      this trial runs alone.
    - ``run_group(configs, ctxs)``: run such trials together, ``configs`` their ``Params``
      instances, each with its own ctx (own report/history, checkpoint, attempt, stage cache), and
      return one entry per config, in order: what ``run`` would have returned, or the exception
      ``run`` would have raised (a Diverged entry records the trial as diverged). Any other
      exception entry: that trial failed, and runs again alone through ``run``. An exception raised
      by ``run_group`` itself: the batched computation failed, and every member without a row runs
      again alone. Each member still gets its own row, and resume, retries and dedup stay per trial.

    >>> import orchestrator as overnight
    >>> class Seeds:
    ...     name, version = "seeds", "1"
    ...     def run(self, config, ctx):
    ...         return {"y": config.seed * 2}
    ...     @staticmethod
    ...     def group_key(config):
    ...         return f"width={config['width']}"
    ...     def run_group(self, configs, ctxs):
    ...         return [self.run(c, ctx) for c, ctx in zip(configs, ctxs)]
    >>> isinstance(Seeds(), overnight.Grouped), Seeds.group_key({"seed": 1, "width": 8})
    (True, 'width=8')
    >>> configs = [overnight.AnyParams(seed=s, width=8) for s in (1, 2)]
    >>> Seeds().run_group(configs, [overnight.LocalContext() for _ in configs])
    [{'y': 2}, {'y': 4}]
    """

    def group_key(self, config: Mapping[str, Any]) -> str | None: ...

    def run_group(self, configs: Sequence[Any],
                  ctxs: Sequence[TrialContext]) -> Sequence[Mapping[str, Any] | BaseException]: ...


def missing_members(obj: Any) -> list[str]:
    """The members of ``Workload`` that ``obj`` (a class or an instance) lacks; where this is
    empty, ``isinstance(obj, Workload)`` holds (the one check the registry makes)."""
    return [m for m in ("name", "version", "run") if not hasattr(obj, m)]


def preflight_of(workload: Any) -> Callable[[Mapping[str, Any], Path, str], None] | None:
    """The workload's ``preflight`` hook, or None when it has none."""
    if isinstance(workload, Preflight) and callable(workload.preflight):
        return workload.preflight
    return None


def grouped(workload: Any) -> Grouped | None:
    """The workload (class or instance) as a ``Grouped`` one when it declares both methods, else
    None: one of the two alone declares nothing."""
    if isinstance(workload, Grouped) and callable(workload.group_key) and callable(workload.run_group):
        return workload
    return None


def params_of(workload: Any, config: Mapping[str, Any]) -> BaseModel:
    """The ``Params`` instance ``run`` receives for a trial's config: an instance of the
    workload's ``Params``, or ``AnyParams`` when it declares none. The config is the one the driver
    validated (orchestrator/run/prepare.py) and sent as plain values; validating those values
    again gives the same instance (what the driver built) and restores their declared types.

    >>> import orchestrator as overnight
    >>> class Train:
    ...     name, version = "train", "1"
    ...     class Params(overnight.Params):
    ...         lr: float = overnight.param(0.1, "step size")
    >>> overnight.params_of(Train, {"lr": 1})
    Params(lr=1.0)
    >>> class Plain:
    ...     name, version = "plain", "1"
    >>> overnight.params_of(Plain, {"x": 3})
    AnyParams(x=3)
    """
    model = declared(workload)[0] or AnyParams
    return model.model_validate(dict(config))


def workload(*, params: Any = None, metrics: Any = None, artifacts: Mapping[str, Any] | None = None,
             version: str = "1", name: str | None = None) -> Callable[[Callable], Callable]:
    """Declare a plain ``run(config, ctx)`` function as a workload (study: ``workload:
    mypackage.train:run``): its parameter model, metric model, artifact models, version and name
    (default: the ``module:function`` reference). The function receives what a class's ``run``
    receives: an instance of ``params`` (``config.lr``). Without ``params``, or without the
    decorator, any keys are accepted and it receives an ``AnyParams`` (each key an attribute,
    ``config.model_dump()`` the dict); without ``metrics`` its metrics are kept in
    ``extra_metrics``. The decorator returns the function itself, so it can be called directly.

    >>> import orchestrator as overnight
    >>> class Params(overnight.Params):
    ...     lr: float = overnight.param(0.1, "step size", gt=0)
    >>> @overnight.workload(params=Params, version="1", name="demo.halve")
    ... def run(config: Params, ctx):
    ...     loss = 1.0
    ...     for step in range(2):
    ...         loss *= 1 - config.lr
    ...         ctx.report(step, loss=loss)
    ...     return {"loss": loss}
    >>> ctx = overnight.LocalContext()
    >>> run(Params(lr=0.5), ctx)
    {'loss': 0.25}
    >>> [entry["loss"] for entry in ctx.history]
    [0.5, 0.25]
    """
    def mark(fn: Callable) -> Callable:
        # a function object takes any attribute; Callable's type does not say so
        fn.__overnight__ = {"params": params, "metrics": metrics,  # type: ignore[attr-defined]
                            "artifacts": dict(artifacts or {}), "version": version, "name": name}
        return fn
    return mark


def check_finite(step: int, **values: float) -> None:
    """Raise :class:`Diverged` if any value is NaN or infinite.

    >>> import orchestrator as overnight
    >>> overnight.check_finite(3, loss=0.5, grad_norm=2.0)
    >>> overnight.check_finite(3, loss=float("nan"), grad_norm=float("inf"))
    Traceback (most recent call last):
        ...
    orchestrator.study.contract.Diverged: non-finite loss, grad_norm at step 3
    """
    bad = {k: v for k, v in values.items() if not math.isfinite(float(v))}
    if bad:
        raise Diverged(f"non-finite {', '.join(bad)} at step {step}", metrics={"diverged_step": step})


def check_report(metrics: Mapping[str, Any]) -> None:
    """``ctx.report``'s values are numbers (history is long: one float value per metric and step);
    a label goes in ``phase=``. NaN and inf are kept: the history of a run that diverges is worth
    having, and a non-finite result is judged on the row (orchestrator/run/trial.py, ``outcome``)."""
    for k, v in metrics.items():
        if isinstance(v, (str, bytes, list, tuple, dict)):
            raise TypeError(f"ctx.report: {k} must be a number (got {v!r}); pass a label as phase=")


class BaseContext:
    """What every ``TrialContext`` does the same way: ``report`` checks its values and keeps one
    history entry per call, ``{"step", "phase", **metrics}`` plus whatever ``entry_extras`` adds.
    ``LocalContext`` (here) and the trial process's ``WorkerContext`` (orchestrator/run/trial.py)
    derive from it, so a workload tested with the one behaves the same under the other.

    >>> import orchestrator as overnight
    >>> class Timed(overnight.BaseContext):
    ...     def __init__(self):
    ...         self.history = []
    ...     def entry_extras(self):
    ...         return {"time_s": 0.0}
    >>> ctx = Timed()
    >>> ctx.report(1, loss=0.5)
    >>> ctx.history
    [{'step': 1, 'time_s': 0.0, 'phase': None, 'loss': 0.5}]
    >>> ctx.report(2, loss="low")
    Traceback (most recent call last):
        ...
    TypeError: ctx.report: loss must be a number (got 'low'); pass a label as phase=
    """

    history: list[dict[str, Any]]

    def report(self, step: int, phase: str | None = None, **metrics: Any) -> None:
        check_report(metrics)
        self.history.append({"step": int(step), **self.entry_extras(), "phase": phase, **metrics})

    def entry_extras(self) -> dict[str, Any]:
        """Columns of a history entry beyond step, phase and the metrics (none here)."""
        return {}


@dataclass
class LocalContext(BaseContext):
    """A ``TrialContext`` that needs no Ray and no results directory: for unit tests, notebooks
    and quick manual runs of a workload. Everything it records stays on the object; ``report``
    keeps no wall time, so two runs of one trial have equal histories.

    >>> import orchestrator as overnight
    >>> ctx = overnight.LocalContext(seed=1)
    >>> ctx.report(step=1, loss=0.5)
    >>> ctx.report(step=2, phase="eval", loss=0.25)
    >>> ctx.history
    [{'step': 1, 'phase': None, 'loss': 0.5}, {'step': 2, 'phase': 'eval', 'loss': 0.25}]
    >>> ctx.stage({"width": 8}, lambda: "built"), ctx.stage({"width": 8}, lambda: "built again")
    ('built', 'built')
    """

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
