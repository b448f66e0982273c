"""Run the pending trials of a study on Ray Tune (ray.tune APIs only, Ray 2.60).

Tune is the executor, not the database: the results directory decides what is done, every run
submits only the missing trials to a fresh Tuner, and in-flight trials resume from the checkpoint
they saved in the results location (so grid extensions and crashed drivers are handled the same
way). See ../shared/specs/ray-notes.md §1.5 and §4 for why.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, TextIO

from orchestrator.errors import UserError
from orchestrator.grid import Trial
from orchestrator.progress import Progress, fmt_duration
from orchestrator.spec import Study
from orchestrator.store import StudyStore, join, utcnow
from orchestrator.trial import TrialPayload, failed_row

# Set before Ray is imported anywhere in this process; embedded workers inherit them.
_RAY_ENV = {
    "RAY_CHDIR_TO_TRIAL_DIR": "0",               # trials keep the driver's cwd (relative data paths)
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",   # we write our own Parquet
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_MAX_PENDING_TRIALS_PG": "16",
    "RAY_DEDUP_LOGS": "0",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
}


@dataclass
class Plan:
    study: Study
    scale: str
    version: str
    trials: list[Trial]
    pending: list[Trial]
    store: StudyStore
    stage_cache: str
    data_root: str

    rerun: frozenset[str] = frozenset()   # failed trials sent again by --retry-failed
    schema: list | None = None            # the study's row schema (params.schema_to_json)
    workload_spec: dict | None = None     # workload: command only

    def payload(self, trial: Trial) -> dict[str, Any]:
        return TrialPayload(rerun=trial.trial_id in self.rerun,
            trial_id=trial.trial_id, config=trial.config, study=self.study.name, scale=self.scale,
            workload=self.study.workload, results=self.store.location, stage_cache=self.stage_cache,
            data_root=self.data_root, metric=self.study.metric, max_failures=self.study.max_failures,
            cpu=self.study.resources.cpu, gpu=self.study.resources.gpu, schema=self.schema,
            workload_spec=self.workload_spec,
        ).to_dict()


@dataclass
class Outcome:
    completed: int = 0
    failed: int = 0
    diverged: int = 0
    pending: int = 0
    interrupted: bool = False
    wall_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed or self.pending else 0


def _trainable(config: dict[str, Any]) -> None:
    from ray import tune

    from orchestrator.trial import run_trial

    run_trial(config["trial"], tune_report=tune.report)


def _init_ray(address: str | None, num_cpus: int | None, num_gpus: float | None) -> bool:
    """Connect to (or start) Ray. Returns True when this call started/connected it (so we shut it down)."""
    for k, v in _RAY_ENV.items():
        os.environ.setdefault(k, v)
    import ray

    # Tune logs every trial error with a full traceback and warns that it cannot read the
    # result.json files we switched off; the rows and our own one-line messages say it better.
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING,
                                  log_to_driver=bool(os.environ.get("OVERNIGHT_TRIAL_LOGS")),
                                  runtime_env={"env_vars": {**{k: os.environ[k] for k in _RAY_ENV}, **_import_path()}})
    if address:
        if num_cpus or num_gpus:
            raise UserError("--num-cpus/--num-gpus apply to the embedded local Ray only, not with --address", source="--address")
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"cannot connect to the Ray cluster: {str(e).splitlines()[0]}", source="--address", field=address) from None
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, embedded instance
        # "local" always starts a new instance, never one left behind by a killed driver.
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)
    return True


def _import_path() -> dict[str, str]:
    """Trials import the user's own workload code (``module:function``) from the driver's current
    directory. Inside `ray job submit` the job's working_dir already is the import path everywhere."""
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        return {}
    paths = [os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def _check_fits(study: Study) -> None:
    import ray

    total = ray.cluster_resources()
    need = {"CPU": study.resources.cpu, "GPU": study.resources.gpu, **study.resources.custom}
    for res, amount in need.items():
        if amount and total.get(res, 0) < amount:
            have = total.get(res, 0)
            raise UserError(f"each trial needs {res}={amount:g} but the Ray cluster has {have:g} "
                            f"(change resources in the study, --set resources.{res.lower()}=..., or use another scale)",
                            field="resources")


def _write_probe(location: str, name: str) -> str:
    """Runs on one node: write a small file into the results location; '' or the error."""
    try:
        StudyStore(location).write_bytes(name, b"ok")
        return ""
    except Exception as e:  # noqa: BLE001 - reported to the driver as text
        return (getattr(e, "strerror", None) or str(e).splitlines()[0] or type(e).__name__)[:200]


def _check_shared(store: StudyStore) -> None:
    """On a multi-node cluster, every node must write into the same results location: a local
    path that is not shared would scatter the rows over the nodes' own disks, and workers without
    permission (e.g. no S3 credentials) would fail every trial. One tiny task per node checks."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    probe = ray.remote(num_cpus=0, max_retries=0)(_write_probe)
    token = uuid.uuid4().hex[:12]
    names = [f".node-probe-{token}-{i}" for i in range(len(nodes))]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(store.location, name) for n, name in zip(nodes, names)]
    try:
        errors = ray.get(refs, timeout=120)
    except Exception:  # noqa: BLE001 - a node too busy or dying to answer: the trials will tell
        return
    try:
        for node, name, err in zip(nodes, names, errors):
            where = node.get("NodeManagerAddress", node["NodeID"][:12])
            if err:
                raise UserError(f"results location is not writable from node {where}: {err}", source="--results",
                                field=store.location)
            if not store.exists(name):
                raise UserError(f"node {where} does not see the same results directory: on a multi-node cluster use "
                                f"a directory every node mounts at the same path, or a URI such as s3://bucket/prefix",
                                source="--results", field=store.location)
    finally:
        for name in names:
            try:
                store.fs.delete_file(store.path(name))
            except OSError:
                pass


def run(plan: Plan, *, address: str | None = None, max_concurrent: int | None = None,
        num_cpus: int | None = None, num_gpus: float | None = None, stream: TextIO | None = None) -> Outcome:
    stream = stream or sys.stderr
    t0 = time.monotonic()
    label = f"{plan.study.name}/{plan.scale}"
    total = len(plan.trials)
    already = total - len(plan.pending)
    progress = Progress(label, total=total, already=already, stream=stream)
    started_here = False
    interrupted = False
    if plan.pending:
        started_here = _init_ray(address, num_cpus, num_gpus)
        try:
            _check_fits(plan.study)
            _check_shared(plan.store)
            interrupted = _fit(plan, max_concurrent, progress)
        finally:
            progress.close()
            if started_here:
                import ray

                ray.shutdown()
    out = summarize(plan)
    out.interrupted = interrupted
    out.wall_s = time.monotonic() - t0
    return out


def _fit(plan: Plan, max_concurrent: int | None, progress: Progress) -> bool:
    from ray import tune

    payloads = {t.trial_id: plan.payload(t) for t in plan.pending}
    store = plan.store
    unwritable: list[str] = []   # set once the results location refuses writes: stop the sweep
    interrupted: list[int] = []  # SIGINT (Ctrl-C) seen while Tune ran

    class StopWhenUnwritable(tune.Stopper):
        def __reduce__(self):  # pickled into tuner.pkl like the callbacks; never restored
            return (tune.stopper.NoopStopper, ())

        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return bool(unwritable)

    def storage_problem() -> bool:
        """After a trial failure: is it the results location that refuses writes (full, read-only)?
        Then every retry would fail the same way, so the sweep stops (see StopWhenUnwritable)."""
        if not unwritable:
            try:
                store.check_writable()
            except UserError as e:
                unwritable.append(e.bare)
        return bool(unwritable)

    class Bridge(tune.Callback):
        """Feeds the progress line and records trials whose process died for good."""

        def __reduce__(self):  # Tune pickles its callbacks into tuner.pkl; we never restore from it
            return (tune.Callback, ())

        def setup(self, **info):
            # Tune installs its own SIGINT handler (stop the trials, save its state, return from
            # fit() as if nothing happened) just before it sets up the callbacks. Wrap it, so that
            # a Ctrl-C is known and the run ends with exit 130 and the resume hint.
            if threading.current_thread() is not threading.main_thread():
                return
            tune_handler = signal.getsignal(signal.SIGINT)

            def on_sigint(sig, frame):
                interrupted.append(sig)
                progress.note("interrupted: stopping the trials (Ctrl-C again to stop at once)")
                if callable(tune_handler):
                    tune_handler(sig, frame)
                else:
                    raise KeyboardInterrupt

            signal.signal(signal.SIGINT, on_sigint)

        def on_trial_start(self, iteration, trials, trial, **info):
            progress.trial_started()

        def on_trial_recover(self, iteration, trials, trial, **info):
            progress.running = max(0, progress.running - 1)
            if storage_problem():
                return
            err = str(getattr(trial, "error_msg", "") or "").strip().splitlines()
            progress.note(f"trial {trial.config['trial']['trial_id']} failed, retrying"
                          + (f": {_last_error_line(err)}" if err else ""))

        def on_trial_complete(self, iteration, trials, trial, **info):
            status = (trial.last_result or {}).get("overnight_status", "completed")
            progress.trial_finished(status)

        def on_trial_error(self, iteration, trials, trial, **info):
            tid = trial.config["trial"]["trial_id"]
            if interrupted or storage_problem():  # not the trial's fault: the next run resumes it
                return
            if tid not in store.finished_ids():
                err = getattr(trial, "error_msg", None) or "trial process died (all retries used)"
                failed_row(payloads[tid], str(err).strip().splitlines()[-1] if err else "trial process died")
            progress.trial_finished("failed")

        def on_step_end(self, iteration, trials, **info):
            progress.running = sum(1 for t in trials if t.status == "RUNNING")
            progress.update()

    res = plan.study.resources
    resources = {"cpu": res.cpu, "gpu": res.gpu, **res.custom}
    limit = max_concurrent or plan.study.max_concurrent
    storage = join(store.location, "_tune") if "://" in store.location else os.path.join(store.location, "_tune")
    tuner = tune.Tuner(
        tune.with_resources(_trainable, resources),
        param_space={"trial": tune.grid_search(list(payloads.values()))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=limit, reuse_actors=True,
            trial_dirname_creator=lambda t: t.config["trial"]["trial_id"],
            trial_name_creator=lambda t: t.config["trial"]["trial_id"],
        ),
        run_config=tune.RunConfig(
            name=f"run-{utcnow().strftime('%Y%m%dT%H%M%S')}-{os.getpid()}",
            storage_path=storage, verbose=0, callbacks=[Bridge()], stop=StopWhenUnwritable(),
            # our own retry accounting lives in the trial; this covers processes that died outright
            failure_config=tune.FailureConfig(max_failures=plan.study.max_failures + 2),
        ),
    )
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": utcnow().isoformat(),
              "pending": len(payloads), "total": len(plan.trials)}
    store.write_json(f"runs/{record['started_at'].replace(':', '')}.json", record)
    main_thread = threading.current_thread() is threading.main_thread()
    sigint_before = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        tuner.fit()
    except KeyboardInterrupt:
        return True
    except Exception:
        if interrupted:
            return True
        # Tune's own state lives in the results location too: a full or read-only location
        # surfaces here as a TuneError wrapping an OSError
        store.check_writable()
        raise
    finally:
        if main_thread and sigint_before is not None:
            signal.signal(signal.SIGINT, sigint_before)
    if unwritable:
        raise UserError(f"{unwritable[0]}; finished trials are kept: make room (or fix permissions) and "
                        f"run the same command again", source="--results", field=store.location)
    return bool(interrupted)


def _last_error_line(lines: list[str]) -> str:
    """The exception line of a Ray error text (skipping traceback frames)."""
    for line in reversed(lines):
        line = line.strip()
        if line and not line.startswith(("File ", "^", "~")) and ("Error" in line or "Exception" in line):
            return line[:200]
    return lines[-1].strip()[:200] if lines else ""


def summarize(plan: Plan) -> Outcome:
    rows = plan.store.rows()
    out = Outcome()
    wanted = {t.trial_id for t in plan.trials}
    if not rows.empty:
        rows = rows[rows["trial_id"].isin(wanted)]
        counts = rows["status"].value_counts()
        out.completed = int(counts.get("completed", 0))
        out.failed = int(counts.get("failed", 0))
        out.diverged = int(counts.get("diverged", 0))
        bad = rows[rows["status"] == "failed"]
        out.failures = list(zip(bad["trial_id"], bad["error"].fillna("")))
    out.pending = len(wanted) - out.completed - out.failed - out.diverged
    return out


def describe(out: Outcome) -> str:
    parts = [f"{out.completed} completed", f"{out.failed} failed"]
    if out.diverged:
        parts.append(f"{out.diverged} diverged")
    if out.pending:
        parts.append(f"{out.pending} not finished")
    return ", ".join(parts) + f" in {fmt_duration(out.wall_s)}"
