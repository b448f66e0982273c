"""Test-only workloads, referenced from study files as ``tests.probe_workloads:Class`` (the
project root is on every Ray worker's path through the editable install).

- StoreProbe: the synthetic workload plus the two storage paths it does not use: a stage-cache
  entry shared by the trials of one ``lr``, and a per-trial artifact table.
- AlwaysCrash: the trial process dies on every attempt (only the driver can record it).
- NanMetric: returns a NaN metric without raising (the orchestrator must notice).
- ConfigClash: returns a metric named like one of its config keys.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from orchestrator import AnyParams
from workloads.synthetic import Synthetic, SyntheticParams


def _mark(config: AnyParams, trial_id: str, kind: str) -> None:
    folder = getattr(config, "marker_dir", None)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{trial_id}.{os.getpid()}.{uuid.uuid4().hex[:6]}.{kind}").write_text(
            json.dumps({"pid": os.getpid(), "time": time.time()}))


class StoreProbe(Synthetic):
    name = "store_probe"

    def run(self, config: SyntheticParams, ctx) -> dict[str, Any]:
        # built by the first trial of each lr, read back by the others (from the results location)
        stage = ctx.stage({"probe": "stage", "lr": config.lr}, lambda: {"lr": config.lr, "built_by": ctx.trial_id})
        metrics = super().run(config, ctx)
        ctx.write_artifact("curve", [{"step": s, "decay": (1 - config.lr) ** s} for s in range(config.steps)])
        return {**metrics, "stage_built_by": stage["built_by"]}


class AlwaysCrash:
    name = "always_crash"
    version = "1"

    def run(self, config: AnyParams, ctx) -> dict[str, Any]:
        _mark(config, ctx.trial_id, "start")
        os._exit(23)  # the process dies on every attempt: no row can come from the trial itself


class NanMetric:
    name = "nan_metric"
    version = "1"

    def run(self, config: AnyParams, ctx) -> dict[str, Any]:
        _mark(config, ctx.trial_id, "start")
        return {"loss": float("nan"), "acc": 0.5}


class ConfigClash:
    name = "config_clash"
    version = "1"

    def run(self, config: AnyParams, ctx) -> dict[str, Any]:
        _mark(config, ctx.trial_id, "start")
        return {"loss": 0.25, "lr": 99.0}
