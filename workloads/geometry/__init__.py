"""Geometry-guided correction study of seed 002 (docs/studies/geometry.md): per setting, Q1 asks
whether the 4-bit quantization error of each residual-stream point is linearly recoverable (ridge
map, float and 4-bit) and whether a correctability score predicts it; Q2 compares element-wise
correctors fed with quantization-time features, with the point identity, or both. Built on the
shared substrate (workloads/substrate: fake quantization, the taps, the pre-LN char transformer and
its backbone stage)."""
from __future__ import annotations

from typing import Any

from workloads.data.locate import data_files_for, preflight_for

from .schema import GeometryMetrics, GeometryParams, Q1PointRow, Q2VariantRow


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

    def run(self, config: dict[str, Any], ctx) -> dict[str, Any]:
        import torch

        from .study import run
        try:  # numpy's BLAS (ridge, eigvalsh) would otherwise start one thread per core in every trial
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - comes with scikit-learn
            return run(config, ctx)
        with threadpool_limits(limits=max(torch.get_num_threads(), 1), user_api="blas"):
            return run(config, ctx)


__all__ = ["Geometry"]
