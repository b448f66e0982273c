"""The synthetic workload's parameters and metrics (workloads/synthetic/workload.py runs it)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from orchestrator import Metrics, Params, knob, metric, param


class SyntheticParams(Params):
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


class SyntheticMetrics(Metrics):
    loss: float | None = metric("loss after the last step")
    resumed_from: int | None = metric("step the last execution resumed from (0: a fresh start)")
    final_step: int | None = metric("steps done")
    diverged_step: int | None = metric("step of the NaN loss (fail: nan)")
    # placement: true only
    node_id: str | None = metric("Ray node id of the last execution ('' outside Ray)")
    gpu_ids: str | None = metric("GPU ids Ray assigned to it, comma-separated")
    pid: int | None = metric("its process id")
    cuda_visible_devices: str | None = metric("CUDA_VISIBLE_DEVICES it saw")
