"""Run the pending trials of a study on Ray Tune (ray.tune APIs only, Ray 2.60).

Tune is the executor, not the database: the results directory decides what is done, every run
submits only the missing trials to a fresh Tuner, and in-flight trials resume from the checkpoint
they saved in the results location (so grid extensions and crashed drivers are handled the same
way). Why: docs/execution.md, 'Executor, not database' and 'Kill and restore'.
"""
from __future__ import annotations

import contextlib
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

from orchestrator.results import layout as L
from orchestrator.errors import UserError
from orchestrator.formats import fmt_duration
from orchestrator.run.progress import Progress
from orchestrator.run.protocol import Plan, Status
from orchestrator.study.spec import Study
from orchestrator.results.dataset import StudyStore
from orchestrator.results.rows import utcnow

# Set before Ray is imported anywhere in this process; embedded workers inherit them.
_RAY_ENV = {
    "RAY_CHDIR_TO_TRIAL_DIR": "0",               # trials keep the driver's cwd (relative data paths)
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",   # we write our own Parquet
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_MAX_PENDING_TRIALS_PG": "16",
    # Tune's experiment state is never read back (the results directory is the record), so it
    # need not be re-pickled every few seconds: with thousands of trials that is driver time
    "TUNE_GLOBAL_CHECKPOINT_S": "600",
    "RAY_DEDUP_LOGS": "0",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
}


@dataclass
class Outcome:
    completed: int = 0
    failed: int = 0
    diverged: int = 0
    pending: int = 0
    interrupted: bool = False
    wall_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    metric: str | None = None
    without_metric: int = 0   # completed rows without a value for `metric` (allow_missing_metric: true)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed or self.pending else 0


def _init_ray(address: str | None, num_cpus: int | None, num_gpus: float | None, preload: list[str] | None = None) -> bool:
    """Connect to (or start) Ray. Returns True when this call started/connected it (so we shut it down).
    ``preload``: modules the embedded Ray's worker processes import as they start, before they
    are given a trial (so that the first trials do not wait for Ray Tune's and the workload's imports)."""
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
                                  log_to_driver=bool(os.environ.get("OVERNIGHT_TRIAL_LOGS")))
    # Ray Tune takes a second or two to import: do it while Ray starts its processes
    tune_import = threading.Thread(target=_import_tune, name="overnight-import-tune", daemon=True)
    tune_import.start()
    try:
        if address:
            if num_cpus or num_gpus:
                raise UserError("--num-cpus/--num-gpus apply to the embedded local Ray only, not with --address", source="--address")
            # the cluster's workers get the variables (and the import path) through the job's runtime env
            env = {**{k: os.environ[k] for k in _RAY_ENV}, **_import_path()}
            try:
                ray.init(address=address, runtime_env={"env_vars": env}, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UserError(f"cannot connect to the Ray cluster: {str(e).splitlines()[0]}", source="--address", field=address) from None
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, embedded instance
            # The embedded Ray's processes inherit this process's environment, so its workers need
            # no runtime env (which would delay the first trials by a second or more).
            # "local" always starts a new instance, never one left behind by a killed driver.
            env = _import_path()
            if preload:  # read by the raylet, which passes it to every worker it starts
                env["RAY_preload_python_modules"] = ",".join(preload)
            with _environ(env):
                # Ray annotates num_gpus as int; --num-gpus is a float, passed through unchanged as before
                ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)  # type: ignore[arg-type]
    finally:
        tune_import.join()
    return True


def trial_modules(study: Study) -> list[str]:
    """What a trial process imports: Ray Tune, the trainable's module, the workload's."""
    from orchestrator.run import registry

    modules = ["ray.tune", "orchestrator.run.bundle", "orchestrator.run.trial"]
    if study.workload == "command":
        return modules + ["orchestrator.run.command"]
    try:
        target = registry.registered().get(study.workload, study.workload)
    except Exception:  # noqa: BLE001 - only a head start
        return modules
    module = target.partition(":")[0] if ":" in target else ""
    return modules + ([module] if module and all(c.isalnum() or c in "._" for c in module) else [])


def _import_tune() -> None:
    try:
        import ray.tune  # noqa: F401
    except Exception:  # noqa: BLE001 - the main thread's import will say what is wrong
        pass


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """os.environ with ``values`` set, restored afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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
    names = [L.node_probe(token, i) for i in range(len(nodes))]
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
        num_cpus: int | None = None, num_gpus: float | None = None, stream: TextIO | None = None,
        bundle: int | str | None = None) -> Outcome:
    """Run the plan's pending trials. ``bundle``: trials per Tune trial, "auto" or a number
    (default: the study's ``bundle``; see orchestrator/run/bundle.py)."""
    stream = stream or sys.stderr
    t0 = time.monotonic()
    label = f"{plan.study.name}/{plan.scale}"
    total = len(plan.trials)
    already = total - len(plan.pending)
    progress = Progress(label, total=total, already=already, stream=stream)
    started_here = False
    interrupted = False
    reported: dict[str, Status] = {}   # statuses the trials of this run reported with their rows
    if plan.pending:
        started_here = _init_ray(address, num_cpus, num_gpus, preload=trial_modules(plan.study))
        try:
            _check_fits(plan.study)
            _check_shared(plan.store)
            interrupted = _fit(plan, max_concurrent, progress, plan.study.bundle if bundle is None else bundle,
                               reported)
        finally:
            progress.close()
            if started_here:
                # Before the rows are read and the lock released, in the foreground: a shutdown in
                # a background thread while the driver wrote the report once ended the process
                # (Ray's core worker: "already been shutdown ... The process will exit", exit 1)
                # with a finished 126-trial study and no report.
                import ray

                ray.shutdown()
    out = summarize(plan, reported)
    out.interrupted = interrupted
    out.wall_s = time.monotonic() - t0
    return out


def slots(study: Study, max_concurrent: int | None) -> int:
    """How many trials the cluster runs at once (as it is now, for the bundle size)."""
    import ray

    total = ray.cluster_resources()
    need = {"CPU": study.resources.cpu, "GPU": study.resources.gpu, **study.resources.custom}
    fits = [int(total.get(res, 0) / amount + 1e-9) for res, amount in need.items() if amount]
    n = max(1, min(fits) if fits else 1)
    limit = max_concurrent or study.max_concurrent
    return min(n, limit) if limit else n


def _fit(plan: Plan, max_concurrent: int | None, progress: Progress, bundle: int | str = "auto",
         reported: dict[str, Status] | None = None) -> bool:
    """Run the pending trials as units on one Tuner; True when a Ctrl-C ended the run."""
    from orchestrator.run import bundle as B
    from orchestrator.run.sweep import Sweep   # imports Ray Tune: only now that Ray is set up

    members = plan.members()
    n_slots = slots(plan.study, max_concurrent)
    size = B.auto_size(len(members), n_slots) if bundle == "auto" else int(bundle)
    # auto: smaller bundles towards the end, so the slots finish together; a number: as asked;
    # vectorised groups first (orchestrator/run/groups.py)
    units = B.split_with_groups(members, size, n_slots, taper=bundle == "auto", plan=plan)
    n_groups = sum(1 for u in units if u.grouped)
    if size > 1 or n_groups:
        grouped = f", {n_groups} of them vectorised groups (--group off: none)" if n_groups else ""
        largest = max(size, *(len(u.members) for u in units))
        progress.note(f"{len(members)} trials in {len(units)} bundles of up to {largest} "
                      f"({n_slots} at once{grouped}; --bundle 1 to send them one by one)")
    sweep = Sweep(plan.store, units, progress, {} if reported is None else reported)
    tuner = _tuner(plan, sweep, max_concurrent or plan.study.max_concurrent)
    record: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": utcnow().isoformat(),
              "pending": len(members), "total": len(plan.trials), "bundles": len(units), "bundle_size": size}
    plan.store.write_json(L.run_record(record["started_at"]), record)
    return _fit_tuner(tuner, sweep)


def _tuner(plan: Plan, sweep, limit: int | None):
    """A Tuner over the sweep's units, its callback and stopper feeding ``sweep``."""
    import ray
    from ray import tune

    from orchestrator.run import bundle as B
    from orchestrator.run.sweep import Bridge, StopWhenUnwritable

    units, store = sweep.units, plan.store
    names = [u.name for u in units]
    res = plan.study.resources
    resources = {"cpu": res.cpu, "gpu": res.gpu, **res.custom}
    storage = L.tune_location(store.location)
    return tune.Tuner(
        tune.with_resources(tune.with_parameters(B.trainable, table=[ray.put(units)]), resources),
        # A Tune trial's config is the index of its unit; the units travel in the object store
        # (B.trainable; orchestrator/run/protocol.py). A grid of the units themselves would be
        # deep-copied once per Tune trial by Tune's variant generator and written into its
        # experiment state: seconds, then minutes, with thousands of trials. A range is copied as
        # one object.
        param_space={"bundle": tune.grid_search(range(len(units)))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=limit, reuse_actors=True,
            trial_dirname_creator=lambda t: names[t.config["bundle"]],
            trial_name_creator=lambda t: names[t.config["bundle"]],
        ),
        run_config=tune.RunConfig(
            name=f"run-{utcnow().strftime('%Y%m%dT%H%M%S')}-{os.getpid()}",
            storage_path=storage, verbose=0, callbacks=[Bridge(sweep)], stop=StopWhenUnwritable(sweep),
            # a member's own retries live in the trial (orchestrator/run/bundle.py); these cover
            # processes that died outright
            failure_config=tune.FailureConfig(
                max_failures=B.tune_retries(plan.study.max_failures, max(len(u.members) for u in units))),
        ),
    )


def _fit_tuner(tuner, sweep) -> bool:
    """``tuner.fit()``, with this process's SIGINT handler restored afterwards (Tune replaces it,
    and the Bridge wraps Tune's); True when a Ctrl-C ended it."""
    store = sweep.store
    main_thread = threading.current_thread() is threading.main_thread()
    sigint_before = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        tuner.fit()
    except KeyboardInterrupt:
        return True
    except Exception:
        if sweep.interrupted:
            return True
        # Tune's own state lives in the results location too: a full or read-only location
        # surfaces here as a TuneError wrapping an OSError
        store.check_writable()
        raise
    finally:
        if main_thread and sigint_before is not None:
            signal.signal(signal.SIGINT, sigint_before)
    if sweep.unwritable:
        raise UserError(f"{sweep.unwritable[0]}; finished trials are kept: make room (or fix permissions) and "
                        f"run the same command again", source="--results", field=store.location)
    return bool(sweep.interrupted)


def summarize(plan: Plan, reported: dict[str, Status] | None = None) -> Outcome:
    """The counts of the study's rows. ``reported``: statuses the trials of this run reported as
    they wrote their rows; with those and the statuses read when the run was planned, only the
    rows of other trials (and the failed rows, for their errors) are read again: the end of a run
    of 10,000 trials should not read 10,000 files."""
    store = plan.store
    wanted = [t.trial_id for t in plan.trials]
    on_disk = store.finished_ids()   # one listing: what is known counts only where its row is
    known = {t: st for t, st in plan.known.items() if t not in plan.rerun}
    known.update(reported or {})
    known = {t: st for t, st in known.items() if t in on_disk}
    unknown = [t for t in wanted if t not in known and t in on_disk]
    if unknown:
        if len(unknown) > len(wanted) // 4:
            rows = store.rows(columns=["trial_id", "status"])
            known.update(zip(rows["trial_id"], rows["status"]) if not rows.empty else ())
        else:
            known.update((t, store.row_value(t, "status")) for t in unknown)
    statuses = [known[t] for t in wanted if t in known]
    out = Outcome()
    out.completed = statuses.count(Status.COMPLETED)
    out.failed = statuses.count(Status.FAILED)
    out.diverged = statuses.count(Status.DIVERGED)
    out.failures = [(t, store.row_value(t, "error") or "") for t in wanted if known.get(t) == Status.FAILED]
    out.pending = len(wanted) - out.completed - out.failed - out.diverged
    metric = plan.study.metric
    if plan.study.allow_missing_metric and metric and out.completed:
        out.metric = metric
        done = {t for t in wanted if known.get(t) == Status.COMPLETED}
        rows = store.rows(columns=["trial_id", metric]) if done else None
        if rows is not None and not rows.empty:
            rows = rows[rows["trial_id"].isin(done)]
            out.without_metric = int(rows[metric].isna().sum()) if metric in rows else len(rows)
    return out


def describe(out: Outcome) -> str:
    parts = [f"{out.completed} completed" + (f" ({out.without_metric} without `{out.metric}`)" if out.without_metric else ""),
             f"{out.failed} failed"]
    if out.diverged:
        parts.append(f"{out.diverged} diverged")
    if out.pending:
        parts.append(f"{out.pending} not finished")
    return ", ".join(parts) + f" in {fmt_duration(out.wall_s)}"
