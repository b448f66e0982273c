"""RAM-LM (seed 003): tiered weightless language model with GA / TS / per-cluster connectivity
optimisation, on the native RAM-neuron memory. See docs/studies/ramlm.md."""
from workloads.ramlm.workload import RamLM, RamLMMetrics, RamLMParams

__all__ = ["RamLM", "RamLMMetrics", "RamLMParams"]
