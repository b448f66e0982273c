"""The synthetic workload: a fixed amount of CPU work per step, a loss curve, and failures on
request (workloads/synthetic/__init__.py says what each switch is for)."""
from __future__ import annotations

import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator import KNOBS, Diverged, NotBitIdentical, TrialContext

from .params import SyntheticMetrics, SyntheticParams


def burn(units: int, rng: np.random.Generator) -> float:
    """About one millisecond of single-core work per unit (64x64 float64 matrix products)."""
    a = rng.standard_normal((64, 64)) / 8.0
    acc = np.eye(64)
    for _ in range(units * 60):
        acc = np.tanh(acc @ a)
    return float(acc.sum())


def placement() -> dict[str, Any]:
    """Where this process runs: the Ray node, the GPUs Ray assigned to it, the devices CUDA sees."""
    info: dict[str, Any] = {"node_id": "", "gpu_ids": "", "pid": os.getpid(),
                            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    try:
        import ray
    except ImportError:
        return info
    if ray.is_initialized():
        info["node_id"] = ray.get_runtime_context().get_node_id()
        info["gpu_ids"] = ",".join(str(g) for g in ray.get_gpu_ids())
    return info


def wait_for_peers(folder: Path, trial_id: str, n: int, timeout_s: float) -> None:
    """Check in, then wait until ``n`` trials have checked in (or the timeout passes)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / trial_id).touch()
    deadline = time.monotonic() + timeout_s
    while sum(1 for _ in folder.iterdir()) < n and time.monotonic() < deadline:
        time.sleep(0.05)


class Synthetic:
    name = "synthetic"
    version = "2"
    Params = SyntheticParams
    Metrics = SyntheticMetrics
    determinism = (
        NotBitIdentical(("resume",), metrics=("resumed_from",),
                        why="it records the step the last execution resumed from (0 when it ran straight through)"),
        NotBitIdentical(KNOBS, metrics=("node_id", "gpu_ids", "pid", "cuda_visible_devices"),
                        why="with placement: true, where the last execution ran (another process on every run)"),
    )

    def run(self, config: SyntheticParams, ctx: TrialContext) -> dict[str, Any]:
        where = placement() if config.placement else {}
        if config.marker_dir:
            Path(config.marker_dir).mkdir(parents=True, exist_ok=True)
            start = Path(config.marker_dir) / f"{ctx.trial_id}.{os.getpid()}.{uuid.uuid4().hex[:6]}.start"
            start.write_text(json.dumps(where) if where else "")

        if config.barrier_dir:
            wait_for_peers(Path(config.barrier_dir), ctx.trial_id, config.barrier_n, config.barrier_timeout_s)

        state = ctx.load_checkpoint() or {"step": 0, "loss": 1.0}
        resumed_from = state["step"]
        rng = np.random.default_rng(ctx.seed)
        for step in range(state["step"], config.steps):
            burn(config.work_units, rng)
            if config.sleep_s:
                time.sleep(config.sleep_s)
            state["loss"] = state["loss"] * (1 - config.lr) + 0.01 * (1 + math.sin(ctx.seed + step))
            if config.fail == "nan" and step == config.steps // 2:
                raise Diverged(f"loss became nan at step {step}", metrics={"diverged_step": step})
            if config.fail == "raise" and step == config.steps // 2:
                raise ValueError(f"synthetic failure at step {step} (lr={config.lr})")
            if config.fail == "crash" and step == config.steps // 2 and ctx.attempt == 1:
                os._exit(17)  # the process dies: only the driver can record this
            state["step"] = step + 1
            ctx.report(step, loss=state["loss"])
            ctx.save_checkpoint(state)
        if config.marker_dir:
            (Path(config.marker_dir) / f"{ctx.trial_id}.{os.getpid()}.{uuid.uuid4().hex[:6]}.end").touch()
        return {"loss": state["loss"], "resumed_from": resumed_from, "final_step": state["step"], **where}
