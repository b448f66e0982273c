"""A synthetic workload for testing and benchmarking the orchestrator itself.

It does a fixed amount of real CPU work (dense matrix products), reports a loss curve that depends
on its config, checkpoints after every step and resumes from the last one. On request it fails
(``fail: raise``), produces a NaN loss (``fail: nan``), or kills its own process (``fail: crash``),
so the orchestrator's handling of each case can be tested. With ``marker_dir`` it leaves one file
per execution start and per finished execution, which tests count. With ``placement: true`` it
also returns where its last execution ran as Ray sees it (node id, GPU ids, CUDA_VISIBLE_DEVICES,
pid) and writes the same into its start marker, for multi-node and GPU-packing tests. With
``barrier_dir`` and ``barrier_n`` each trial waits (up to ``barrier_timeout_s``) until ``barrier_n``
trials have reached that point, so a test can require that many to run at the same time.
"""
from __future__ import annotations

import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from workloads.base import Diverged


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
    version = "1"

    def run(self, config: dict[str, Any], ctx) -> dict[str, Any]:
        steps = int(config.get("steps", 5))
        units = int(config.get("work_units", 10))      # per step
        sleep_s = float(config.get("sleep_s", 0.0))    # per step, idle time (I/O-like)
        fail = config.get("fail", "none")
        lr = float(config.get("lr", 0.1))
        marker = config.get("marker_dir")
        where = placement() if config.get("placement") else {}
        if marker:
            Path(marker).mkdir(parents=True, exist_ok=True)
            start = Path(marker) / f"{ctx.trial_id}.{os.getpid()}.{uuid.uuid4().hex[:6]}.start"
            start.write_text(json.dumps(where) if where else "")

        if config.get("barrier_dir"):
            wait_for_peers(Path(config["barrier_dir"]), ctx.trial_id, int(config.get("barrier_n", 1)),
                           float(config.get("barrier_timeout_s", 120)))

        state = ctx.load_checkpoint() or {"step": 0, "loss": 1.0}
        resumed_from = state["step"]
        rng = np.random.default_rng(ctx.seed)
        for step in range(state["step"], steps):
            burn(units, rng)
            if sleep_s:
                time.sleep(sleep_s)
            state["loss"] = state["loss"] * (1 - lr) + 0.01 * (1 + math.sin(ctx.seed + step))
            if fail == "nan" and step == steps // 2:
                raise Diverged(f"loss became nan at step {step}", metrics={"diverged_step": step})
            if fail == "raise" and step == steps // 2:
                raise ValueError(f"synthetic failure at step {step} (lr={lr})")
            if fail == "crash" and step == steps // 2 and ctx.attempt == 1:
                os._exit(17)  # the process dies: only the driver can record this
            state["step"] = step + 1
            ctx.report(step, loss=state["loss"])
            ctx.save_checkpoint(state)
        if marker:
            (Path(marker) / f"{ctx.trial_id}.{os.getpid()}.{uuid.uuid4().hex[:6]}.end").touch()
        return {"loss": state["loss"], "resumed_from": resumed_from, "final_step": state["step"], **where}

    def check_config(self, config: dict[str, Any]) -> None:
        if config.get("fail", "none") not in ("none", "raise", "nan", "crash"):
            raise ValueError(f"fail: must be none, raise, nan or crash (got {config['fail']!r})")
        for key in ("steps", "work_units"):
            if key in config and (not isinstance(config[key], int) or config[key] < 0):
                raise ValueError(f"{key}: must be a whole number >= 0 (got {config[key]!r})")
