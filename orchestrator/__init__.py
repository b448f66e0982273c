"""overnight: Ray Tune sweep orchestrator. Knows studies, trials, Ray and Parquet; never a specific workload.

From Python (``import orchestrator as overnight``): ``run`` and ``load`` return a ``StudyResult``;
``report_markdown``, ``describe``; ``TrialsFailed``, ``StudyError`` (orchestrator/api.py). For a
workload's own code: ``workload`` (decorate a plain function), ``Params``, ``Metrics``, ``param``,
``knob``, ``metric``, ``Diverged``, ``LocalContext``.

Light to import (Ray workers and the CLI import it): none of these modules imports Ray, torch,
pandas or pyarrow until it is used.
"""
from orchestrator.version import __version__
# `run` names the API function here, not the room orchestrator/run/: orchestrator.api imports the
# room first, so this binding comes last and stays. Import the room's modules with `from
# orchestrator.run import x` (`import orchestrator.run.x as y` would look x up on the function).
from orchestrator.api import StudyError, TrialsFailed, describe, load, report_markdown, run
from orchestrator.report.result import StudyResult
from orchestrator.study.contract import Diverged, LocalContext, workload
from orchestrator.study.params import Metrics, Params, knob, metric, param

__all__ = [
    "__version__",
    "run", "load", "report_markdown", "describe", "StudyResult", "TrialsFailed", "StudyError",
    "workload", "Diverged", "LocalContext",
    "Params", "Metrics", "param", "knob", "metric",
]
