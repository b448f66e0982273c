"""Credit assignment without backprop across blocks (seed 004): BP, DFA, FA, state bridge (SB) and
credit bridge (CB) on block networks, with the credit metrics Gamma (cosine with the true gradient)
and rho (perturbation correlation). Method, metrics and studies: docs/studies/credit-bridge.md."""
from .workload import CreditBridge

__all__ = ["CreditBridge"]
