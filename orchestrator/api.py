"""overnight from Python (a notebook, a script): the same semantics as the CLI — resume, dedup,
the driver lock, one schema — with exit statuses as exceptions.

    import orchestrator as overnight
    rows = overnight.run("hydra_classification", scale="smoke", bits=[2, 4])   # a DataFrame
    rows = overnight.load("results/hydra_classification/smoke")
    print(overnight.report_markdown("results/hydra_classification/smoke"))

A bad study or parameter raises ``StudyError`` (the CLI's exit 2), failed trials raise
``TrialsFailed`` carrying the rows (exit 1), Ctrl-C raises KeyboardInterrupt (exit 130; run the
same call again to resume). This is the shape of Ray Tune's ``Tuner.fit()``.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from orchestrator.errors import UserError

StudyError = UserError
DEFAULT_RESULTS = os.environ.get("OVERNIGHT_RESULTS", "results")
DEFAULT_DATA = os.environ.get("OVERNIGHT_DATA", str(Path.home() / ".cache" / "overnight" / "data"))
STUDY_DIR = Path("configs/studies")


class TrialsFailed(RuntimeError):
    """Some trials failed (after their retries) or were left unfinished; ``rows`` has them all."""

    def __init__(self, message: str, rows: pd.DataFrame, outcome: Any):
        super().__init__(message)
        self.rows, self.outcome = rows, outcome


def study_path(arg: str | Path) -> Path:
    """A study file, or the name of one in configs/studies/."""
    p = Path(arg)
    if p.exists() or p.suffix in (".yaml", ".yml") or "/" in str(arg):
        return p
    candidate = STUDY_DIR / f"{arg}.yaml"
    if candidate.exists():
        return candidate
    raise UserError(f"no study file {str(arg)!r} (and no {candidate})", source="study")


def execute_study(prep, results: str, *, data_root: str, retry_failed: bool = False, address: str | None = None,
                  max_concurrent: int | None = None, num_cpus: int | None = None, num_gpus: float | None = None,
                  bundle: int | str | None = None, group: int | str | None = None,
                  say: Callable[[str], None] = lambda s: None):
    """Run the pending trials of a prepared study under the driver lock: (outcome, store).
    ``group``: the study's ``group`` overridden (orchestrator/run/groups.py)."""
    from orchestrator.run import execute
    from orchestrator.run.prepare import plan_run
    from orchestrator.results.dataset import study_store

    study, trials = prep.study, prep.trials
    store = study_store(results, study.name, prep.scale)
    _check_job_results(results)
    store.check_writable()
    with store.lock():
        plan = plan_run(prep, store, results, data_root, retry_failed)
        plan.group = group
        resumed = len(set(store.in_flight()) & {t.trial_id for t in plan.pending})
        say(f"{study.name}/{prep.scale}: {len(trials)} trials, {len(trials) - len(plan.pending)} already finished, "
            f"{len(plan.pending)} to run" + (f" ({resumed} resume from checkpoints)" if resumed else "")
            + f"; results in {store.location}")
        note = shared_cwd_note(prep, len(plan.pending), max_concurrent)
        if note:
            say(note)
        out = execute.run(plan, address=address, max_concurrent=max_concurrent, num_cpus=num_cpus, num_gpus=num_gpus,
                          bundle=bundle)
    return out, store


def shared_cwd_note(prep, pending: int, max_concurrent: int | None = None) -> str | None:
    """For a command workload whose trials run at once in one working directory, without a folder
    of their own in argv or env: one line saying what that means, and what to use instead."""
    from orchestrator.study.command_spec import placeholders

    command = prep.study.command
    limit = max_concurrent or prep.study.max_concurrent
    if command is None or command.cwd == "trial" or pending < 2 or (limit is not None and limit < 2):
        return None
    texts = list(command.argv) + list(command.env.values())
    if any(name in ("trial_dir", "checkpoint_dir") for t in texts for name in placeholders(t)):
        return None
    cwd = (Path((prep.workload_spec or {}).get("base_dir") or ".") / command.cwd).resolve()
    return (f"note: the trials run at the same time in one working directory, {cwd}: files the program writes "
            f"there (e.g. a checkpoint under a relative path) are shared by them, and a resumed trial may read "
            f"another's. Give each trial its own: {{checkpoint_dir}} (saved, handed back on resume; e.g. "
            f"--out_dir={{checkpoint_dir}}) or {{trial_dir}} in command.argv, or cwd: trial")


def check_bundle(value: Any, source: str) -> int | str:
    """"auto" or a whole number >= 1 (the CLI's --bundle, the API's bundle=); spec.check_bundle
    with its error as a UserError from ``source``."""
    from orchestrator.study import spec

    try:
        return spec.check_bundle(value)
    except ValueError as e:
        raise UserError(str(e), source=source) from None


def check_group(value: Any, source: str) -> int | str:
    """"auto", "off" or a whole number >= 1 (the CLI's --group, the API's group=); spec.check_group
    with its error as a UserError from ``source``."""
    from orchestrator.study import spec

    try:
        return spec.check_group(value)
    except ValueError as e:
        raise UserError(str(e), source=source) from None


def _check_job_results(results: str) -> None:
    """Inside `ray job submit` the current directory is a temporary copy of --working-dir, deleted
    with the job: results written under a relative path would be lost, and a resubmitted job
    would not find them."""
    from orchestrator.results.layout import is_uri

    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ  # set by Ray's job supervisor
    if in_job and not is_uri(results) and not Path(results.removeprefix("file://")).expanduser().is_absolute():
        raise UserError("inside a Ray job the current directory is no place for results (with --working-dir it is a "
                        "temporary copy): give an absolute path that every node shares, or a URI such as "
                        "s3://bucket/prefix", source="--results", field=results)


def run(study: str | Path | dict, scale: str = "fast", results: str = DEFAULT_RESULTS, *,
        sets: list[str] | None = None, retry_failed: bool = False, max_concurrent: int | None = None,
        data_root: str = DEFAULT_DATA, address: str | None = None, num_cpus: int | None = None,
        num_gpus: float | None = None, bundle: int | str | None = None, group: int | str | None = None,
        verbose: bool = True,
        **overrides: Any) -> pd.DataFrame:
    """Run (or resume) a study and return its rows. ``study``: a YAML path, the name of a study in
    configs/studies/, or the study as a dict. ``overrides`` are ``--set`` pairs: a list replaces a
    grid axis, a scalar pins a parameter (``bits=[2, 4]``, ``float_steps=200``). ``bundle``:
    trials per Tune trial, "auto" or a number (default: the study's ``bundle``, auto). ``group``:
    the most trials per vectorised group, "auto", "off" or a number (default: the study's ``group``)."""
    from orchestrator.run.prepare import prepare
    from orchestrator.report.page import study_rows

    sets = list(sets or []) + [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    if isinstance(study, dict):
        prep = prepare(Path(f"<{study.get('name', 'study')}>"), scale, sets, raw=study, data_root=data_root)
    else:
        prep = prepare(study_path(study), scale, sets, data_root=data_root)
    say = (lambda s: print(s, file=sys.stderr)) if verbose else (lambda s: None)
    if bundle is not None:
        check_bundle(bundle, "bundle")
    if group is not None:
        group = check_group(group, "group")
    out, store = execute_study(prep, results, data_root=data_root, retry_failed=retry_failed, address=address,
                               max_concurrent=max_concurrent, num_cpus=num_cpus, num_gpus=num_gpus, bundle=bundle,
                               group=group, say=say)
    rows = study_rows(store, {t.trial_id for t in prep.trials})
    if out.interrupted:
        raise KeyboardInterrupt("interrupted: run the same call again to resume")
    if out.exit_code:
        raise TrialsFailed(f"{prep.study.name}/{scale}: {out.failed} failed, {out.pending} not finished", rows, out)
    return rows


def load(results_dir: str | Path, all_rows: bool = False) -> pd.DataFrame:
    """The rows of every study under ``results_dir`` (RESULTS, RESULTS/<study> or one study/scale):
    of each study's current trials; rows of earlier definitions (a changed fixed value, a removed
    grid value, another workload version) are kept aside with a warning that says how many and how
    they differ. ``all_rows``: include them, labelled in a ``definition`` column (orchestrator/report/definitions.py)."""
    import warnings

    from orchestrator.report import definitions as D
    from orchestrator.results.dataset import find_studies

    frames = []
    for store in find_studies(str(results_dir)):
        m = store.manifest() or {}
        view = D.view(store, m, all_rows=all_rows)
        if view.groups and not all_rows:
            name = f"{m.get('study', {}).get('name', '?')}/{m.get('scale', '?')}"
            warnings.warn(f"{name}: {view.lines()[0]}", stacklevel=2)
        frames.append(view.rows)
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()


def report_markdown(results_dir: str | Path, html: str | Path | None = None, all_rows: bool = False) -> str:
    """The Markdown report of every study under ``results_dir``, as `overnight report` writes it
    (report.md and its plots into each study's location); ``html``: also one self-contained page;
    ``all_rows``: rows of earlier definitions too, labelled (`overnight report --all-rows`)."""
    from orchestrator.report import html as html_page
    from orchestrator.report import page as report
    from orchestrator.results.dataset import find_studies

    stores = find_studies(str(results_dir))
    reports = [report.for_store(store, all_rows=all_rows) for store in stores]
    for store, rep in zip(stores, reports):
        report.write(store, rep)
    if html:
        Path(html).write_text(html_page.page(reports))
    return "\n".join(report.markdown(rep, images=report.images_of(store)) for store, rep in zip(stores, reports))


def describe(workload: str) -> str:
    """A workload's parameters (type, default, doc) and metrics."""
    from orchestrator.study import params
    from orchestrator.run import registry

    return params.describe(registry.load(workload))
