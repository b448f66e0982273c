"""The geometry workload class (workloads/geometry/__init__.py); its parameters, metrics and
artifact tables are in workloads/geometry/params.py, one trial's phases in workloads/geometry/study.py."""
from __future__ import annotations

from typing import Any

from orchestrator import TrialContext
from workloads.data.locate import data_files_for, preflight_for

from .params import GeometryMetrics, GeometryParams, Q1PointRow, Q2VariantRow


class Geometry:
    """One (seed, architecture) setting of the geometry study."""

    name = "geometry"
    version = "2"
    Params = GeometryParams
    Metrics = GeometryMetrics
    determinism = ()  # every metric bit-identical across the execution knobs (tests/orchestrator/test_determinism.py)
    artifacts = {"q1_points": Q1PointRow, "q2_variants": Q2VariantRow}
    preflight = preflight_for("tinyshakespeare")  # full scale needs the real corpus
    data_files = data_files_for("tinyshakespeare")

    def run(self, config: GeometryParams, ctx: TrialContext) -> dict[str, Any]:
        import torch

        from .study import run
        try:  # numpy's BLAS (ridge, eigvalsh) would otherwise start one thread per core in every trial
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - comes with scikit-learn
            return run(config, ctx)
        with threadpool_limits(limits=max(torch.get_num_threads(), 1), user_api="blas"):
            return run(config, ctx)

