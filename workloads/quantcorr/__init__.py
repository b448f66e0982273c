"""Quantization correction (seeds 000 and 001): activation fake quantization with learned
correctors on the accumulated quantization error, on three tasks (spirals classification, MNIST
autoencoder, char-level transformer LM). Spec: quantization-correction.md."""
from __future__ import annotations

from typing import Any


class QuantCorr:
    """One trial of a quantization-correction study; ``config["task"]`` picks the task."""

    name = "quantcorr"
    version = "1"

    def run(self, config: dict[str, Any], ctx) -> dict[str, Any]:
        task = config.get("task")
        if task == "classification":
            from .classification import run_classification
            return run_classification(config, ctx)
        if task == "transformer":
            from .transformer import run_transformer
            return run_transformer(config, ctx)
        if task == "autoencoder":
            from .autoencoder import run_autoencoder
            return run_autoencoder(config, ctx)
        raise ValueError(f"quantcorr: unknown task {task!r} (expected classification|autoencoder|transformer)")


__all__ = ["QuantCorr"]
