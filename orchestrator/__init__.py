"""overnight: Ray Tune sweep orchestrator. Knows studies, trials, Ray and Parquet; never a specific workload.

From Python (``import orchestrator as overnight``): ``run`` and ``load`` return a ``StudyResult``;
``report_markdown``, ``describe``; ``TrialsFailed``, ``StudyError`` (orchestrator/api.py). For a
workload's own code, the workload-facing names below: a workload imports these and nothing else of
orchestrator (tests/orchestrator/test_import_graph.py holds it to that).

Light to import (Ray workers and the CLI import it): none of these modules imports Ray, torch,
pandas or pyarrow until it is used.
"""
from orchestrator.version import __version__
from orchestrator.results.provenance import sha256_file
from orchestrator.study.contract import (BaseContext, DataMissing, Diverged, Grouped, LocalContext, Preflight,
                                         TrialContext, Workload, check_finite, params_of, workload)
from orchestrator.study.determinism import KNOBS, NotBitIdentical
from orchestrator.study.params import (AnyParams, Metrics, ParamError, Params, is_knob, knob, metric, param,
                                       validate)
from orchestrator.report.result import StudyResult
# `run` names the API function here, not the room orchestrator/run/: orchestrator.api imports the
# room first, so this binding comes last and stays. Import the room's modules with `from
# orchestrator.run import x` (`import orchestrator.run.x as y` would look x up on the function).
from orchestrator.api import StudyError, TrialsFailed, describe, load, report_markdown, run

__all__ = [
    "__version__",
    "run", "load", "report_markdown", "describe", "StudyResult", "TrialsFailed", "StudyError",
    "sha256_file",
    "BaseContext", "DataMissing", "Diverged", "Grouped", "LocalContext", "Preflight", "TrialContext", "Workload",
    "check_finite", "params_of", "workload",
    "KNOBS", "NotBitIdentical",
    "AnyParams", "Metrics", "ParamError", "Params", "is_knob", "knob", "metric", "param", "validate",
]
