"""Preparing and executing one study, for the CLI (`overnight run`) and the Python API alike:
finding the study file, checking the run options, running the pending trials under the driver
lock and saying what is about to happen. Light to import (the CLI and ``import orchestrator``
read the defaults here): everything heavy is imported inside the functions."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from orchestrator.errors import UserError

DEFAULT_RESULTS = os.environ.get("OVERNIGHT_RESULTS", "results")
DEFAULT_DATA = os.environ.get("OVERNIGHT_DATA", str(Path.home() / ".cache" / "overnight" / "data"))
STUDY_DIR = Path("configs/studies")


def study_path(arg: str | Path) -> Path:
    """A study file, or the name of one in configs/studies/."""
    p = Path(arg)
    if p.exists() or p.suffix in (".yaml", ".yml") or "/" in str(arg):
        return p
    candidate = STUDY_DIR / f"{arg}.yaml"
    if candidate.exists():
        return candidate
    raise UserError(f"no study file {str(arg)!r} (and no {candidate})", source="study")


def prepare_study(study: str | Path | Mapping[str, Any], scale: str, sets: list[str] | None = None,
                  data_root: str | None = None):
    """The prepared study (orchestrator/run/prepare.py): from a study file, the name of one in
    configs/studies/, or the study document itself (a mapping, named ``<name>`` in errors).
    ``sets``: ``key=value`` overrides, as `overnight run --set` takes them."""
    from orchestrator.run.prepare import prepare

    if isinstance(study, Mapping):
        doc = dict(study)
        return prepare(Path(f"<{doc.get('name', 'study')}>"), scale, sets, raw=doc, data_root=data_root)
    return prepare(study_path(study), scale, sets, data_root=data_root)


def set_pairs(values: Mapping[str, Any]) -> list[str]:
    """``set={...}`` as `overnight run --set` pairs: a list replaces a grid axis, a scalar pins a
    parameter, a dotted key sets a study field (``resources.gpu``, ``grid.seed``).

    >>> set_pairs({"bits": [2, 4], "group": 8, "resources.gpu": 0.25})
    ['bits=[2, 4]', 'group=8', 'resources.gpu=0.25']
    """
    pairs = []
    for key, value in values.items():
        if not isinstance(key, str) or not key or "=" in key:
            raise UserError(f"a parameter name, without '=' (got {key!r})", source="set")
        try:
            pairs.append(f"{key}={json.dumps(value)}")
        except (TypeError, ValueError) as e:
            raise UserError(f"{e} (values are numbers, strings, booleans, None, lists and dicts)",
                            source="set", field=key) from None
    return pairs


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
    check_job_results(results)
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
    """"auto" or a whole number >= 1 (the CLI's --bundle, the API's bundle=)."""
    from orchestrator.study import spec

    return _from_study_check(spec.check_bundle, value, source)


def check_group(value: Any, source: str) -> int | str:
    """"auto", "off" or a whole number >= 1 (the CLI's --group, the API's group=)."""
    from orchestrator.study import spec

    return _from_study_check(spec.check_group, value, source)


def _from_study_check(check: Callable[[Any], int | str], value: Any, source: str) -> int | str:
    """The study file's own check of a knob (orchestrator/study/spec.py), its ValueError given as
    a one-line UserError from ``source``."""
    try:
        return check(value)
    except ValueError as e:
        raise UserError(str(e), source=source) from None


def check_job_results(results: str) -> None:
    """Inside `ray job submit` the current directory is a temporary copy of --working-dir, deleted
    with the job: results written under a relative path would be lost, and a resubmitted job
    would not find them."""
    from orchestrator.results.layout import is_uri

    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ  # set by Ray's job supervisor
    if in_job and not is_uri(results) and not Path(results.removeprefix("file://")).expanduser().is_absolute():
        raise UserError("inside a Ray job the current directory is no place for results (with --working-dir it is a "
                        "temporary copy): give an absolute path that every node shares, or a URI such as "
                        "s3://bucket/prefix", source="--results", field=results)
