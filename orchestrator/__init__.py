"""overnight: Ray Tune sweep orchestrator. Knows studies, trials, Ray and Parquet; never a specific workload.

From Python (``import orchestrator as overnight``): ``run``, ``load``, ``report_markdown``, ``describe``
(orchestrator/api.py); for a workload's own code: ``workload`` (decorate a plain function),
``Params``, ``Metrics``, ``param``, ``knob``, ``metric``, ``Diverged``.
"""
__version__ = "0.1.0"

_EXPORTS = {
    "run": "orchestrator.api", "load": "orchestrator.api", "report_markdown": "orchestrator.api",
    "describe": "orchestrator.api", "TrialsFailed": "orchestrator.api", "StudyError": "orchestrator.api",
    "workload": "orchestrator.study.contract", "Diverged": "orchestrator.study.contract",
    "LocalContext": "orchestrator.study.contract",
    "Params": "orchestrator.study.params", "Metrics": "orchestrator.study.params", "param": "orchestrator.study.params",
    "knob": "orchestrator.study.params", "metric": "orchestrator.study.params",
}


def __getattr__(name: str):
    """Imported on first use, so `import orchestrator` stays light (the CLI, Ray workers)."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
