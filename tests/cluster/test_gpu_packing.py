"""`gpu: 1/k` packs k trials on a GPU; each trial sees exactly the one GPU Ray assigned to it and caps
its own memory share. Checked with Ray's fake GPUs (`--num-gpus` on a CPU machine)."""
from __future__ import annotations

import sys
import types

import pandas as pd
import pytest
import yaml

from orchestrator.run import trial as trialmod
from orchestrator.results.dataset import StudyStore
from tests.processes import overnight_subprocess, ray_env

pytestmark = pytest.mark.cluster


def max_overlap(intervals: list[tuple[pd.Timestamp, pd.Timestamp]]) -> int:
    """Most intervals open at the same moment (an end and a start at the same instant don't overlap)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    open_now = peak = 0
    for _, step in events:
        open_now += step
        peak = max(peak, open_now)
    return peak


def test_half_gpu_trials_pack_two_per_fake_gpu(tmp_path):
    study = {
        "name": "packing", "workload": "synthetic", "metric": "loss", "mode": "min",
        # the first 4 trials wait for each other: 4 at once on 2 GPUs means 2 per GPU
        "fixed": {"steps": 3, "work_units": 1, "sleep_s": 0.2, "placement": True,
                  "barrier_dir": str(tmp_path / "barrier"), "barrier_n": 4, "barrier_timeout_s": 60},
        "grid": {"lr": [0.1, 0.2, 0.3, 0.4], "seed": [0, 1]},
        "resources": {"cpu": 0.5, "gpu": 0.5},
    }
    path = tmp_path / "packing.yaml"
    path.write_text(yaml.safe_dump(study))
    res = tmp_path / "res"
    run = overnight_subprocess("run", path, "--results", res, "--num-cpus", "2", "--num-gpus", "2", "--no-report",
                               timeout=300, env=ray_env())
    assert run.returncode == 0, run.stderr[-3000:]

    rows = StudyStore(str(res / "packing" / "fast")).rows()
    assert len(rows) == 8 and rows["trial_id"].is_unique and set(rows["status"]) == {"completed"}
    # every trial saw exactly one GPU, and CUDA would see the same one
    assert rows["gpu_ids"].isin(["0", "1"]).all(), rows["gpu_ids"].tolist()
    assert (rows["cuda_visible_devices"] == rows["gpu_ids"]).all()
    assert set(rows["gpu_ids"]) == {"0", "1"}
    # never more than 2 trials on one GPU at a time, and the barrier made it exactly 2 at some point
    for gpu, group in rows.groupby("gpu_ids"):
        peak = max_overlap(list(zip(group["started_at"], group["finished_at"])))
        assert peak == 2, (gpu, group[["trial_id", "started_at", "finished_at"]])
    # a process keeps its GPU: reused actors never hop devices
    assert (rows.groupby("pid")["gpu_ids"].nunique() == 1).all()


class _FakeCuda:
    def __init__(self, available: bool):
        self.available = available
        self.caps: list[tuple[float, int]] = []

    def is_available(self) -> bool:
        return self.available

    def set_per_process_memory_fraction(self, fraction: float, device: int = 0) -> None:
        self.caps.append((fraction, device))


@pytest.fixture
def fake_torch(monkeypatch):
    def install(available: bool) -> _FakeCuda:
        cuda = _FakeCuda(available)
        monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
        return cuda

    return install


@pytest.mark.parametrize("gpu, cap", [(0.5, 0.475), (0.25, 0.2375), (1 / 3, 0.95 / 3), (0.02, 0.05)])
def test_fractional_gpu_caps_its_memory_share(fake_torch, gpu, cap):
    cuda = fake_torch(available=True)
    assert trialmod._device(gpu) == "cuda"
    # device 0 of the process is the GPU Ray assigned (CUDA_VISIBLE_DEVICES holds just that one)
    assert cuda.caps == [(pytest.approx(cap), 0)]


def test_whole_gpu_and_cpu_trials_are_not_capped(fake_torch):
    cuda = fake_torch(available=True)
    assert trialmod._device(1.0) == "cuda" and trialmod._device(2.0) == "cuda"
    assert trialmod._device(0.0) == "cpu"
    assert cuda.caps == []
    cuda = fake_torch(available=False)  # fake GPUs: Ray assigned one, CUDA has none
    assert trialmod._device(0.5) == "cpu" and cuda.caps == []
