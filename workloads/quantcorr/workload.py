"""The three quantcorr workload classes, one per task (workloads/quantcorr/__init__.py); their
parameters and metrics are in workloads/quantcorr/params.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator import NotBitIdentical, TrialContext, validate
from workloads.data.locate import data_files_for, dataset_files, mnist_test_files, preflight_for

from .params import (AutoencoderMetrics, AutoencoderParams, ClassificationMetrics, ClassificationParams,
                     TransformerMetrics, TransformerParams, transformer_group_key)

# The task modules import torch: each run imports its own, so loading and validating stay light.


def autoencoder_data_files(config: dict[str, Any], data_root) -> list[Path]:
    """The files an autoencoder trial reads under ``data_root`` (their sha256 go into study.json):
    ``real``: the full MNIST; ``auto``: the first there of the full MNIST, MNIST's test set alone (the
    seeded 8,000/2,000 split) and Fashion-MNIST (the disclosed substitute), as workloads/data/mnist.py
    picks them (``auto`` is ``real`` at full scale, where the preflight demands the full MNIST);
    ``standin``: none. A download into the cache directory is not listed."""
    data = config.get("data", "auto")
    if data == "standin":
        return []
    full = dataset_files("mnist", data_root)
    if full or data == "real":
        return full
    return mnist_test_files(Path(data_root)) or dataset_files("fashion-mnist", data_root)


class Classification:
    """Learned correctors for activation quantization of an MLP classifier on high-dimensional spirals."""

    name = "quantcorr.classification"
    version = "2"
    Params = ClassificationParams
    Metrics = ClassificationMetrics
    determinism = ()  # every metric bit-identical across the execution knobs (tests/orchestrator/test_determinism.py)

    def run(self, config: ClassificationParams, ctx: TrialContext) -> dict[str, Any]:
        from .classification import run
        # the task modules and the substrate read the config as a dict (every parameter present)
        return run(config.model_dump(), ctx)


class Autoencoder:
    """Learned correctors for activation quantization of an MLP autoencoder on MNIST (or sklearn digits)."""

    name = "quantcorr.autoencoder"
    version = "2"
    Params = AutoencoderParams
    Metrics = AutoencoderMetrics
    determinism = ()
    preflight = preflight_for("mnist")  # full scale needs MNIST itself (checked before Ray starts)
    data_files = staticmethod(autoencoder_data_files)

    def run(self, config: AutoencoderParams, ctx: TrialContext) -> dict[str, Any]:
        from .autoencoder import run
        return run(config.model_dump(), ctx)


class Transformer:
    """Learned correctors for activation quantization of a pre-LN char transformer on tinyshakespeare."""

    name = "quantcorr.transformer"
    version = "2"
    Params = TransformerParams
    Metrics = TransformerMetrics
    # On the CPU a grouped member draws the dropout masks of its lone trial and computes each op as
    # it does, so its metrics are bit-identical (test_determinism.py); on CUDA they cannot be.
    determinism = (NotBitIdentical(
        ("group", "resume"), device="cuda",
        why="a vectorised group (transformer_group.py) cannot draw the dropout masks a lone trial draws inside "
            "CUDA's fused dropout kernels, so its members draw their own (statistically the same, other numbers) "
            "and run batched kernels; a member's numbers then depend on whether it ran grouped or alone (a "
            "resumed group runs only its members without a row, or runs them one by one)"),)
    preflight = preflight_for("tinyshakespeare")
    data_files = data_files_for("tinyshakespeare")

    def run(self, config: TransformerParams, ctx: TrialContext) -> dict[str, Any]:
        from .transformer import run
        return run(config.model_dump(), ctx)

    # Vectorised trials (transformer_group.py): trials whose configs differ only in the seed (hydra,
    # grid) or in the seed and lambda (lambda) run as one batched computation.
    @staticmethod
    def group_key(config: dict[str, Any]) -> str | None:
        # called in the driver with the validated config; validating again serves direct callers
        return transformer_group_key(validate(TransformerParams, config))

    def run_group(self, configs: list[TransformerParams], ctxs: list[TrialContext]) -> list[dict[str, Any] | BaseException]:
        from .transformer_group import run_group
        return run_group([c.model_dump() for c in configs], ctxs)


__all__ = ["Autoencoder", "Classification", "Transformer"]
