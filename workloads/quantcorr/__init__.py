"""Quantization correction (seeds 000 and 001): activation fake quantization with learned
correctors on the accumulated quantization error, on three tasks (spirals classification, MNIST
autoencoder, char-level transformer LM), one registered workload per task.
Spec: quantization-correction.md."""
from __future__ import annotations

from typing import Any

from orchestrator.params import validate

from .params import (AutoencoderMetrics, AutoencoderParams, ClassificationMetrics, ClassificationParams,
                     TransformerMetrics, TransformerParams)

# The task modules import torch: each run imports its own, so loading and validating stay light.


class Classification:
    """Learned correctors for activation quantization of an MLP classifier on high-dimensional spirals."""

    name = "quantcorr.classification"
    version = "2"
    Params = ClassificationParams
    Metrics = ClassificationMetrics

    def run(self, config: dict[str, Any], ctx) -> dict[str, Any]:
        from .classification import run_classification
        # The orchestrator passes the full validated config; validating again (idempotent) fills the
        # defaults for direct callers (tests, notebooks) and rejects their typos.
        return run_classification(validate(self.Params, config), ctx)


class Autoencoder:
    """Learned correctors for activation quantization of an MLP autoencoder on MNIST (or sklearn digits)."""

    name = "quantcorr.autoencoder"
    version = "2"
    Params = AutoencoderParams
    Metrics = AutoencoderMetrics

    def run(self, config: dict[str, Any], ctx) -> dict[str, Any]:
        from .autoencoder import run_autoencoder
        return run_autoencoder(validate(self.Params, config), ctx)


class Transformer:
    """Learned correctors for activation quantization of a pre-LN char transformer on tinyshakespeare."""

    name = "quantcorr.transformer"
    version = "2"
    Params = TransformerParams
    Metrics = TransformerMetrics

    def run(self, config: dict[str, Any], ctx) -> dict[str, Any]:
        from .transformer import run_transformer
        return run_transformer(validate(self.Params, config), ctx)


__all__ = ["Autoencoder", "Classification", "Transformer"]
