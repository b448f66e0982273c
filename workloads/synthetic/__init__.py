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
from typing import Any, Literal

import numpy as np
from pydantic import field_validator

from orchestrator.study import params as overnight_params
from orchestrator.study.params import knob, metric, param
from orchestrator.study.contract import KNOBS, Diverged, NotBitIdentical


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


class SyntheticParams(overnight_params.Params):
    steps: int = param(5, "training steps (one checkpoint after each)")
    work_units: int = param(10, "CPU work per step, about 1 ms each")
    sleep_s: float = param(0.0, "idle seconds per step (I/O-like)", ge=0.0)
    lr: float = param(0.1, "decay rate of the loss curve: loss <- loss * (1 - lr) + noise")
    seed: int | None = param(None, "seed of the work and of the loss curve; None: derived from the trial id",
                             ge=0)
    fail: Literal["none", "raise", "nan", "crash"] = param(
        "none", "at step steps // 2: raise ValueError, raise Diverged (NaN loss) or kill the process (first try)")
    placement: bool = param(False, "also return (and write into the start marker) where the trial ran")
    # not read: orchestrator tests vary these as a zipped "shape" group, each pair its own trial
    width: int | None = param(None, "ignored; a shape axis for orchestrator tests")
    depth: int | None = param(None, "ignored; a shape axis for orchestrator tests")
    marker_dir: str | None = knob(None, "folder for one file per execution start and per finished execution")
    barrier_dir: str | None = knob(None, "folder where trials check in and wait for barrier_n of them")
    barrier_n: int = knob(1, "trials that must have checked in before any continues", ge=1)
    barrier_timeout_s: float = knob(120.0, "longest wait at the barrier, seconds", ge=0.0)

    @field_validator("steps", "work_units", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError("must be a whole number >= 0")
        return value


class SyntheticMetrics(overnight_params.Metrics):
    loss: float | None = metric("loss after the last step")
    resumed_from: int | None = metric("step the last execution resumed from (0: a fresh start)")
    final_step: int | None = metric("steps done")
    diverged_step: int | None = metric("step of the NaN loss (fail: nan)")
    # placement: true only
    node_id: str | None = metric("Ray node id of the last execution ('' outside Ray)")
    gpu_ids: str | None = metric("GPU ids Ray assigned to it, comma-separated")
    pid: int | None = metric("its process id")
    cuda_visible_devices: str | None = metric("CUDA_VISIBLE_DEVICES it saw")


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

    def run(self, config: dict[str, Any], ctx) -> dict[str, Any]:
        # validated again so that direct callers (benchmarks, notebooks) get the same defaults
        p = SyntheticParams.model_validate(config)
        where = placement() if p.placement else {}
        if p.marker_dir:
            Path(p.marker_dir).mkdir(parents=True, exist_ok=True)
            start = Path(p.marker_dir) / f"{ctx.trial_id}.{os.getpid()}.{uuid.uuid4().hex[:6]}.start"
            start.write_text(json.dumps(where) if where else "")

        if p.barrier_dir:
            wait_for_peers(Path(p.barrier_dir), ctx.trial_id, p.barrier_n, p.barrier_timeout_s)

        state = ctx.load_checkpoint() or {"step": 0, "loss": 1.0}
        resumed_from = state["step"]
        rng = np.random.default_rng(ctx.seed)
        for step in range(state["step"], p.steps):
            burn(p.work_units, rng)
            if p.sleep_s:
                time.sleep(p.sleep_s)
            state["loss"] = state["loss"] * (1 - p.lr) + 0.01 * (1 + math.sin(ctx.seed + step))
            if p.fail == "nan" and step == p.steps // 2:
                raise Diverged(f"loss became nan at step {step}", metrics={"diverged_step": step})
            if p.fail == "raise" and step == p.steps // 2:
                raise ValueError(f"synthetic failure at step {step} (lr={p.lr})")
            if p.fail == "crash" and step == p.steps // 2 and ctx.attempt == 1:
                os._exit(17)  # the process dies: only the driver can record this
            state["step"] = step + 1
            ctx.report(step, loss=state["loss"])
            ctx.save_checkpoint(state)
        if p.marker_dir:
            (Path(p.marker_dir) / f"{ctx.trial_id}.{os.getpid()}.{uuid.uuid4().hex[:6]}.end").touch()
        return {"loss": state["loss"], "resumed_from": resumed_from, "final_step": state["step"], **where}
