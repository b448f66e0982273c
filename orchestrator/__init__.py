"""overnight: Ray Tune sweep orchestrator. Knows studies, trials, Ray and Parquet; never a specific workload.

From Python (``import orchestrator as overnight``): ``run``, ``load``, ``report_markdown``, ``describe``
(orchestrator/api.py). For a workload's own code, the names imported below: a workload imports these
and nothing else of orchestrator (tests/orchestrator/test_import_graph.py holds it to that).

Light to import (Ray workers and the CLI import it): the workload-facing modules import pydantic,
never Ray, torch, pandas or pyarrow.
"""
from orchestrator.version import __version__
from orchestrator.results.provenance import sha256_file
from orchestrator.study.contract import (BaseContext, DataMissing, Diverged, Grouped, LocalContext, Preflight,
                                         TrialContext, Workload, check_finite, params_of, workload)
from orchestrator.study.determinism import KNOBS, NotBitIdentical
from orchestrator.study.params import (AnyParams, Metrics, ParamError, Params, is_knob, knob, metric, param,
                                       validate)

# The Python API imports the whole run machinery (Ray, pandas): loaded on first use.
_API = {
    "run": "orchestrator.api", "load": "orchestrator.api", "report_markdown": "orchestrator.api",
    "describe": "orchestrator.api", "TrialsFailed": "orchestrator.api", "StudyError": "orchestrator.api",
}


def __getattr__(name: str):
    """The API's names, imported on first use."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")


__all__ = [
    "__version__",
    "run", "load", "report_markdown", "describe", "TrialsFailed", "StudyError",
    "sha256_file",
    "BaseContext", "DataMissing", "Diverged", "Grouped", "LocalContext", "Preflight", "TrialContext", "Workload",
    "check_finite", "params_of", "workload",
    "KNOBS", "NotBitIdentical",
    "AnyParams", "Metrics", "ParamError", "Params", "is_knob", "knob", "metric", "param", "validate",
]
