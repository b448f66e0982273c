"""Quantization correction (seeds 000 and 001): activation fake quantization with learned
correctors on the accumulated quantization error, on three tasks (spirals classification, MNIST
autoencoder, char-level transformer LM), one registered workload per task
(docs/studies/quantization-correction.md).

Each task is one file (classification.py, autoencoder.py, transformer.py) whose ``run`` reads top
to bottom as a chain of phases; the pieces they share (quantization, correctors, taps, training
loops, the transformer backbone, the result row) are in workloads/substrate/."""
from .workload import Autoencoder, Classification, Transformer

__all__ = ["Autoencoder", "Classification", "Transformer"]
