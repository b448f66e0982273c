"""overnight: Ray Tune sweep orchestrator. Knows studies, trials, Ray and Parquet; never a specific workload.

From Python (``import orchestrator as overnight``): ``run``, ``load``, ``report_markdown``, ``describe``
(orchestrator/api.py). For a workload's own code, the names below: a workload imports these and
nothing else of orchestrator (tests/orchestrator/test_import_graph.py holds it to that).

`import orchestrator` stays light: the workload-facing modules import pydantic, never Ray, torch,
pandas or pyarrow, so a trial process or the CLI pays nothing for what it does not use.
"""
from orchestrator.study.contract import (BaseContext, DataMissing, Diverged, Grouped, LocalContext, Preflight,
                                         TrialContext, Workload, check_finite, params_of, workload)
from orchestrator.study.determinism import KNOBS, NotBitIdentical
from orchestrator.study.params import (AnyParams, Metrics, ParamError, Params, is_knob, knob, metric, param,
                                       validate)

__version__ = "0.1.0"

# Loaded on first use: the Python API imports the whole run machinery (Ray, pyarrow), and
# provenance reads this package's __version__ (imported here, it would close an import cycle).
_LAZY = {
    "run": "orchestrator.api", "load": "orchestrator.api", "report_markdown": "orchestrator.api",
    "describe": "orchestrator.api", "TrialsFailed": "orchestrator.api", "StudyError": "orchestrator.api",
    "sha256_file": "orchestrator.results.provenance",
}


def __getattr__(name: str):
    """The names of ``_LAZY``, imported on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")


__all__ = [
    # the Python API (orchestrator/api.py)
    "run", "load", "report_markdown", "describe", "TrialsFailed", "StudyError",
    # a workload's own code
    "sha256_file",
    "BaseContext", "DataMissing", "Diverged", "Grouped", "LocalContext", "Preflight", "TrialContext", "Workload",
    "check_finite", "params_of", "workload",
    "KNOBS", "NotBitIdentical",
    "AnyParams", "Metrics", "ParamError", "Params", "is_knob", "knob", "metric", "param", "validate",
]
