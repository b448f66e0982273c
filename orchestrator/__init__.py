"""overnight: Ray Tune sweep orchestrator. Knows studies, trials, Ray and Parquet; never a specific workload.

From Python (``import orchestrator as overnight``): ``run``, ``load``, ``report_markdown``, ``describe``
(orchestrator/api.py); for a workload's own code: ``workload`` (decorate a plain function),
``Params``, ``Metrics``, ``param``, ``knob``, ``metric``, ``Diverged``.
"""
__version__ = "0.1.0"

_EXPORTS = {
    "run": "orchestrator.api", "load": "orchestrator.api", "report_markdown": "orchestrator.api",
    "describe": "orchestrator.api", "TrialsFailed": "orchestrator.api", "StudyError": "orchestrator.api",
    "workload": "orchestrator.interface", "Diverged": "orchestrator.interface",
    "LocalContext": "orchestrator.interface",
    "Params": "orchestrator.params", "Metrics": "orchestrator.params", "param": "orchestrator.params",
    "knob": "orchestrator.params", "metric": "orchestrator.params",
}


def __getattr__(name: str):
    """Imported on first use, so `import orchestrator` stays light (the CLI, Ray workers)."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
