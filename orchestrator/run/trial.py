"""What runs inside one trial process: seeding, device, the ctx, and the trial's result row.

The row is written from here (not from the driver) so a finished trial is recorded even if the
driver is killed a moment later; the driver only fills in rows for trials whose process died.
"""
from __future__ import annotations

import json
import math
import os
import random
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from orchestrator.results import layout as L
from orchestrator.study import params as P
from orchestrator.results import rows as R
from orchestrator.run import registry
from orchestrator.run.cache import StageCache
from orchestrator.run.protocol import Member, Status
from orchestrator.errors import UserError
from orchestrator.study.contract import BaseContext, Diverged, Workload, params_of
from orchestrator.results.dataset import StudyStore
from orchestrator.results.rows import utcnow


def error_text(exc: BaseException) -> str:
    """The exception line plus the innermost frames: enough to act on, short enough for a cell."""
    tb = traceback.TracebackException.from_exception(exc)
    frames = list(tb.stack)[-3:]
    where = "; ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames)
    text = "".join(tb.format_exception_only()).strip()
    return f"{text} [{where}]"[:4000]


@dataclass
class WorkerContext(BaseContext):
    """The ``ctx`` handed to ``Workload.run`` (see orchestrator/study/contract.py TrialContext;
    ``report`` is BaseContext's, its entries stamped with the wall time)."""

    trial_id: str
    seed: int
    device: str
    data_root: Path
    cache_dir: Path
    scale: str
    attempt: int
    _store: StudyStore
    _stages: StageCache
    history: list[dict[str, Any]] = field(default_factory=list)
    _artifacts: dict[str, Any] = field(default_factory=dict)   # declared artifact models
    _tune_report: Callable[[dict], None] | None = None

    def entry_extras(self) -> dict[str, Any]:
        return {"time": time.time()}

    def save_checkpoint(self, state: Any) -> None:
        # history travels with the state, so a resumed trial keeps the steps before the crash
        self._store.save_checkpoint(self.trial_id, {"state": state, "history": self.history})

    def load_checkpoint(self) -> Any | None:
        saved = self._store.load_checkpoint(self.trial_id)
        if saved is None:
            return None
        self.history = list(saved.get("history", []))
        return saved["state"]

    def write_artifact(self, name: str, rows: Any) -> None:
        self._store.write_artifact(name, self.trial_id, rows, self._artifacts.get(name))

    def stage(self, key: Mapping[str, Any], build: Callable[[], Any]) -> Any:
        return self._stages.get(key, build)

    def log(self, message: str) -> None:
        print(f"[{self.trial_id}] {message}", flush=True)


def seed_everything(seed: int) -> None:
    """Seed the generators the workload has loaded (importing torch just to seed it costs seconds)."""
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def _device(gpu: float) -> str:
    if gpu <= 0:
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    if not torch.cuda.is_available():
        return "cpu"
    if gpu < 1:
        # Ray's fractional GPUs are logical only: cap this process so k packed trials fit.
        torch.cuda.set_per_process_memory_fraction(max(0.05, gpu * 0.95), 0)
    return "cuda"


def _threads(cpu: float) -> None:
    n = max(1, int(cpu))
    # BLAS/OpenMP and rayon (native extensions) size their pools from these on first use
    for var in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def derive_seed(trial_id: str) -> int:
    return int(trial_id[:8], 16) % 2**31


def run_trial(p: Member, *, store: StudyStore | None = None,
              on_retry: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Run one trial to its row. A workload error is retried ``max_failures`` times: by raising
    (so Ray runs the trial again), or, given ``on_retry``, in this process (bundles, see
    orchestrator/run/bundle.py; ``on_retry`` gets the error line). Each try resumes from the trial's
    last checkpoint. After that the failure is recorded as a ``failed`` row and the function
    returns normally. Returns the row (None when the trial already had one)."""
    store = store or StudyStore(p.results)
    if not p.rerun and store.exists(L.trial_row(p.trial_id)):
        # A worker of a killed driver can finish a trial after the next driver listed it as pending.
        return None
    row = None
    while row is None:  # None: the workload raised and has retries left (on_retry only)
        row = _attempt(p, store, on_retry)
    return row


def _attempt(p: Member, store: StudyStore, on_retry: Callable[[str], None] | None) -> dict[str, Any] | None:
    """One try of a trial: its row once written, or None to try again here."""
    t = open_try(p, store)
    workload: Workload[Any] = t.workload_cls()
    retry = False
    try:
        status, error, metrics = outcome(p, workload.run(params_of(workload, t.config), t.ctx), workload)
    except Diverged as e:
        status, error, metrics = outcome(p, e)
    except Exception as e:  # any workload error becomes a row once retries are spent
        errors = store.bump(p.trial_id, L.ERRORS)
        if errors <= p.max_failures and on_retry is None:
            raise
        retry = errors <= p.max_failures
        status, error, metrics = Status.FAILED, error_text(e), {}
    if retry and on_retry is not None:  # outside the except block, so the failed try's frames (and tensors) are freed
        on_retry(error.split(" [")[0][:300])
        return None
    return close_try(t, store, status, error, metrics)


@dataclass
class Try:
    """One execution of one trial, between ``open_try`` and ``close_try`` (a vectorised group,
    orchestrator/run/groups.py, opens one for each of its members and runs them together)."""

    p: Member
    workload_cls: Any
    config: dict[str, Any]
    ctx: WorkerContext
    attempts: int
    declared_metrics: set[str] | None
    started: Any
    t0: float


def open_try(p: Member, store: StudyStore) -> Try:
    """Count the try (``attempts``), load the workload, seed, and build the trial's ctx."""
    attempts = store.bump(p.trial_id, L.ATTEMPTS)
    workload_cls = registry.load(p.workload, p.workload_spec)
    _, metrics_model, artifact_models = P.declared(workload_cls)
    declared_metrics = set(metrics_model.model_fields) if metrics_model is not None else None

    config = dict(p.config)
    seed = int(config["seed"]) if isinstance(config.get("seed"), int) else derive_seed(p.trial_id)
    _threads(p.cpu)
    seed_everything(seed)
    ctx = WorkerContext(
        trial_id=p.trial_id, seed=seed, device=_device(p.gpu), data_root=Path(p.data_root),
        cache_dir=Path(p.stage_cache) if not L.is_uri(p.stage_cache) else L.SCRATCH,
        scale=p.scale, attempt=attempts, _store=store, _stages=StageCache(p.stage_cache),
        _artifacts=artifact_models,
    )
    return Try(p, workload_cls, config, ctx, attempts, declared_metrics, utcnow(), time.perf_counter())


def outcome(p: Member, result: Mapping[str, Any] | Diverged | None,
            workload: Any = None) -> tuple[Status, str, dict[str, Any]]:
    """(status, error, metrics) of what ``run`` returned, or of the Diverged it raised. A run
    without a value for the study's metric is failed (unless the study allows it): a completed
    row without it would leave ``best`` and every table of the metric silently empty.
    ``workload.missing_metric(name)``, where it has one, says what it looked for."""
    if isinstance(result, Diverged):
        return Status.DIVERGED, str(result), dict(result.metrics)
    metrics = dict(result or {})
    if p.metric and p.metric in metrics and _not_finite(metrics[p.metric]):
        return Status.DIVERGED, f"{p.metric} is {metrics[p.metric]}", metrics
    if p.metric and metrics.get(p.metric) is None and p.metric not in p.config and not p.allow_missing_metric:
        explain = getattr(workload, "missing_metric", None)
        error = explain(p.metric) if callable(explain) else (
            f"returned no `{p.metric}` (the study's metric; set allow_missing_metric: true to keep such rows as completed)")
        return Status.FAILED, error, metrics
    return Status.COMPLETED, "", metrics


def close_try(t: Try, store: StudyStore, status: Status, error: str, metrics: dict[str, Any],
              wall_s: float | None = None) -> dict[str, Any]:
    """Write the trial's history and row and drop its checkpoint; returns the row. ``wall_s``: the
    trial's share of a group's time (default: since ``open_try``)."""
    p, config = t.p, t.config
    clash = sorted(set(metrics) & set(config))
    if clash:
        status, error = Status.FAILED, f"workload returned metrics that repeat config keys: {clash}"
        metrics = {}
    wall = time.perf_counter() - t.t0 if wall_s is None else wall_s
    row = {
        "trial_id": p.trial_id, "study": p.study, "scale": p.scale, "status": status, **config,
        "started_at": t.started, "finished_at": utcnow(), "wall_s": round(wall, 4),
        "host": socket.gethostname(), "device": t.ctx.device, "attempts": t.attempts, "error": error,
    }
    schema = _schema(p.schema)
    table = _row_with_metrics(row, metrics, schema, t.declared_metrics)
    # In this order, before the next trial of a bundle starts (which may kill the process): the
    # history, the row (fsynced: it survives a power cut), then the checkpoint goes.
    store.write_history(p.trial_id, t.ctx.history)
    store.write_table(L.trial_row(p.trial_id), table, durable=True)
    store.clear_checkpoint(p.trial_id)
    return table.to_pylist()[0]


_SCHEMA: list = [None, None]   # (schema JSON, its pyarrow schema): the last one built


def _schema(schema_json: list | None):
    """The row schema, built once for all the members of a bundle (they share one JSON list)."""
    if not schema_json:
        return None
    if _SCHEMA[0] is not schema_json:
        _SCHEMA[:] = [schema_json, R.schema_from_json(schema_json)]
    return _SCHEMA[1]


def _row_with_metrics(row: dict[str, Any], metrics: dict[str, Any], schema, declared: set[str] | None):
    """The row as a one-row table of the study's schema. Declared metrics are columns; any other
    metric goes into ``extra_metrics`` (JSON), so a stray key never changes the dataset's schema.
    A metric whose value does not fit its declared type fails the trial with a clear error."""
    if schema is None:  # no schema (direct calls of run_trial): columns as returned
        return R.row_table({**row, **metrics})
    declared = declared if declared is not None else set()
    columns = {k: v for k, v in metrics.items() if k in declared}
    extra = {k: _json_safe(v) for k, v in metrics.items() if k not in declared}
    if extra:
        row["extra_metrics"] = json.dumps(extra, sort_keys=True, default=str)
    try:
        return R.row_table({**row, **columns}, schema)
    except TypeError as e:
        failed = {**row, "status": Status.FAILED, "error": f"metric {e}", "extra_metrics": None}
        return R.row_table(failed, schema)


def _json_safe(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


def _not_finite(value: Any) -> bool:
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def failed_row(p: Member, error: str) -> dict[str, Any]:
    """Row for a trial whose process died (node loss, OOM kill) after all retries."""
    store = StudyStore(p.results)
    now = utcnow()
    row = {"trial_id": p.trial_id, "study": p.study, "scale": p.scale, "status": Status.FAILED, **p.config,
           "started_at": now, "finished_at": now, "wall_s": 0.0, "host": "", "device": "",
           "attempts": store.counter(p.trial_id, L.ATTEMPTS), "error": error[:4000]}
    store.write_row(row, R.schema_from_json(p.schema) if p.schema else None)
    return row


class Unwritable(OSError):
    """The results location refuses writes: every member of a bundle would fail the same way."""


def check_writable(store: StudyStore) -> None:
    """Raise Unwritable where the results location refuses writes (full, read-only): no retries,
    the driver stops (orchestrator/run/bundle.py, orchestrator/run/groups.py)."""
    try:
        store.check_writable()
    except UserError as e:
        raise Unwritable(e.bare) from None


def row_status(store: StudyStore, trial_id: str) -> Status:
    """The status in a trial's row (completed where it cannot be read)."""
    try:
        return Status(store.row_value(trial_id, "status") or Status.COMPLETED)
    except Exception:  # noqa: BLE001 - only for the progress line
        return Status.COMPLETED
