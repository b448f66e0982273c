"""Geometry-guided correction study of seed 002 (docs/studies/geometry.md): per setting, Q1 asks
whether the 4-bit quantization error of each residual-stream point is linearly recoverable (ridge
map, float and 4-bit) and whether a correctability score predicts it; Q2 compares element-wise
correctors fed with quantization-time features, with the point identity, or both. Built on the
shared substrate (workloads/substrate: fake quantization, the taps, the pre-LN char transformer and
its backbone stage)."""
from .workload import Geometry

__all__ = ["Geometry"]
