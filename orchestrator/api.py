"""overnight from Python (a notebook, a script): the same semantics as the CLI — resume, dedup,
the driver lock, one schema — with a result object in place of the printed summary.

    import orchestrator as overnight
    result = overnight.run("hydra_classification", scale="smoke", set={"bits": [2, 4]})
    result.rows                  # a DataFrame, one row per finished trial
    result.failed, result.best()
    result = overnight.load("results/hydra_classification/smoke")
    print(result.report())

``run`` returns a :class:`StudyResult` whether or not trials failed (``result.failed`` has them;
``raise_on_failure=True`` raises ``TrialsFailed`` instead, the CLI's exit 1), as Ray Tune's
``Tuner.fit()`` returns a ``ResultGrid``. A bad study or parameter raises ``StudyError`` (exit 2);
Ctrl-C raises KeyboardInterrupt (exit 130; run the same call again to resume).

Light to import (``import orchestrator`` imports this module): Ray, pandas and the rest are
imported inside the functions.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

from orchestrator.errors import UserError
from orchestrator.report.result import StudyResult
from orchestrator.run.launch import DEFAULT_DATA, DEFAULT_RESULTS

StudyError = UserError


class TrialsFailed(RuntimeError):
    """Some trials failed (after their retries) or were left unfinished, and ``run`` was asked to
    raise (``raise_on_failure=True``). ``result`` is the :class:`StudyResult`, ``rows`` its rows.

    >>> import orchestrator as overnight
    >>> study = {"name": "demo", "workload": "synthetic", "metric": "loss", "mode": "min", "max_failures": 0,
    ...          "fixed": {"steps": 2, "work_units": 1}, "grid": {"lr": [0.1, 0.2, 0.4], "fail": ["none", "raise"]}}
    >>> try:
    ...     overnight.run(study, scale="smoke", set={"lr": [0.1, 0.4]}, verbose=False, raise_on_failure=True)
    ... except overnight.TrialsFailed as e:
    ...     print(e, "|", len(e.result.failed), "failed rows")
    demo/smoke: 2 failed, 0 not finished | 2 failed rows
    """

    def __init__(self, message: str, result: StudyResult):
        super().__init__(message)
        self.result = result

    @property
    def rows(self):
        """The rows of the study's trials (``result.rows``), failed ones included.

        >>> import orchestrator as overnight
        >>> error = overnight.TrialsFailed("demo/smoke: 2 failed", overnight.load("results/demo/smoke"))
        >>> len(error.rows)
        4
        """
        return self.result.rows


def run(study: str | Path | Mapping[str, Any], scale: str = "fast", results: str = DEFAULT_RESULTS, *,
        set: Mapping[str, Any] | None = None, retry_failed: bool = False, max_concurrent: int | None = None,
        data_root: str = DEFAULT_DATA, address: str | None = None, num_cpus: int | None = None,
        num_gpus: float | None = None, bundle: int | str | None = None, group: int | str | None = None,
        verbose: bool = True, raise_on_failure: bool = False) -> StudyResult:
    """Run (or resume) a study and return its :class:`StudyResult`. ``study``: a YAML path, the
    name of a study in configs/studies/, or the study as a dict. ``set``: the study's overrides,
    as `overnight run --set` takes them: a list replaces a grid axis, a scalar pins a parameter,
    a dotted key sets a study field (``{"bits": [2, 4], "float_steps": 200, "resources.gpu": 0.25}``).
    ``bundle``: trials per Tune trial, "auto" or a number (default: the study's ``bundle``, auto).
    ``group``: the most trials per vectorised group, "auto", "off" or a number (default: the
    study's ``group``). ``raise_on_failure``: raise ``TrialsFailed`` when trials failed or were
    left unfinished (default: return the result; ``result.failed`` has them).

    The examples of orchestrator/api.py and orchestrator/report/result.py read the results of
    this one (written under ./results):

    >>> import orchestrator as overnight
    >>> study = {"name": "demo", "workload": "synthetic", "metric": "loss", "mode": "min", "max_failures": 0,
    ...          "fixed": {"steps": 2, "work_units": 1}, "grid": {"lr": [0.1, 0.2, 0.4], "fail": ["none", "raise"]}}
    >>> result = overnight.run(study, scale="smoke", set={"lr": [0.1, 0.4]}, verbose=False)
    >>> result
    StudyResult(demo/smoke: 4 trials, 2 completed, 2 failed, 0 diverged, 0 pending)
    >>> print(result.best()["lr"], sorted(result.failed["lr"]))
    0.4 [0.1, 0.4]
    """
    from orchestrator.run.execute import describe as summary
    from orchestrator.run.launch import check_bundle, check_group, execute_study, prepare_study, set_pairs

    prep = prepare_study(study, scale, set_pairs(set or {}), data_root=data_root)
    say = (lambda s: print(s, file=sys.stderr)) if verbose else (lambda s: None)
    if bundle is not None:
        check_bundle(bundle, "bundle")
    if group is not None:
        group = check_group(group, "group")
    out, store = execute_study(prep, results, data_root=data_root, retry_failed=retry_failed, address=address,
                               max_concurrent=max_concurrent, num_cpus=num_cpus, num_gpus=num_gpus, bundle=bundle,
                               group=group, say=say)
    ids = {t.trial_id for t in prep.trials}
    result = StudyResult.of_store(store, ids)
    if out.interrupted:
        raise KeyboardInterrupt("interrupted: run the same call again to resume")
    say(f"{prep.study.name}/{scale}: {summary(out)}")
    if out.exit_code and raise_on_failure:
        raise TrialsFailed(f"{prep.study.name}/{scale}: {out.failed} failed, {out.pending} not finished", result)
    return result


def load(results_dir: str | Path, all_rows: bool = False) -> StudyResult:
    """The :class:`StudyResult` of every study under ``results_dir`` (RESULTS, RESULTS/<study> or
    one RESULTS/<study>/<scale>): of each study's current trials; rows of earlier definitions (a
    changed fixed value, a removed grid value, another workload version) are kept aside with a
    warning that says how many and how they differ. ``all_rows``: include them, labelled in a
    ``definition`` column (orchestrator/report/definitions.py). Several studies make one combined
    result: ``rows`` has every study's rows one after the other, ``studies`` one result each.

    >>> import orchestrator as overnight
    >>> result = overnight.load("results/demo/smoke")
    >>> print(len(result), len(result.failed), result.pending)
    4 2 0
    >>> overnight.load("results").studies
    [StudyResult(demo/smoke: 4 trials, 2 completed, 2 failed, 0 diverged, 0 pending)]
    """
    import warnings

    result = StudyResult.read(str(results_dir), all_rows=all_rows)
    for line in result.kept_aside:
        warnings.warn(line, stacklevel=2)
    return result


def report_markdown(results_dir: str | Path, html: str | Path | None = None, all_rows: bool = False) -> str:
    """The Markdown report of every study under ``results_dir``, as `overnight report` writes it
    (report.md and its plots into each study's location); ``html``: also one self-contained page;
    ``all_rows``: rows of earlier definitions too, labelled (`overnight report --all-rows`).

    >>> import orchestrator as overnight
    >>> text = overnight.report_markdown("results/demo/smoke")
    >>> print(text.splitlines()[0])
    # demo — smoke scale
    """
    from orchestrator.report.result import write_reports
    from orchestrator.results.dataset import find_studies

    return write_reports(find_studies(str(results_dir)), str(html) if html else None, all_rows)


def describe(workload: str) -> str:
    """A workload's parameters (type, default, doc) and metrics, as `overnight describe` prints them.

    >>> import orchestrator as overnight
    >>> print("\\n".join(overnight.describe("synthetic").splitlines()[:4]))
    synthetic v2
    <BLANKLINE>
    Parameters:
      steps: int = 5
    """
    from orchestrator.study import params
    from orchestrator.run import registry

    return params.describe(registry.load(workload))
