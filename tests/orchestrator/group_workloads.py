"""Test-only workload with vectorised groups (``tests.orchestrator.group_workloads:Grouped``).

Trials with the same ``width`` (and the same everything else but ``seed``, ``weight`` and the
failure switches) form a group. ``run`` and ``run_group`` compute the same numbers; every call
leaves a file in ``calls_dir``: ``run.<trial id>.<n>`` for a lone run, ``group.<n>`` holding the
members' trial ids (one a line) for a batched one. Switches:

- ``fail_in_group``: the member's entry in ``run_group`` is an exception (alone it runs fine);
- ``fail_always``: it raises alone too;
- ``group_raises``: ``run_group`` raises when any member has it (alone it runs fine).
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from orchestrator import Metrics, Params, knob, metric, param

FOLDED = ("seed", "weight", "fail_in_group", "fail_always", "group_raises")


class GroupedParams(Params):
    seed: int = param(0, "seed (folded into a group)")
    width: int = param(4, "a shape: trials of one group share it", ge=1)
    weight: float = param(1.0, "a loss weight (folded into a group)")
    steps: int = param(3, "history steps", ge=1)
    fail_in_group: bool = param(False, "its run_group entry is an exception")
    fail_always: bool = param(False, "raises alone as well")
    group_raises: bool = param(False, "run_group raises")
    calls_dir: str = knob("", "where each call leaves its file")


class GroupedMetrics(Metrics):
    loss: float | None = metric("final loss")
    score: float | None = metric("a second number")
    final_step: int | None = metric("last step")


def _one(config: GroupedParams, ctx) -> dict[str, Any]:
    loss = 0.0
    for step in range(config.steps):
        loss = config.weight * config.width / (step + 1 + config.seed)
        ctx.report(step, phase="train", loss=loss)
        ctx.save_checkpoint({"step": step + 1})
    return {"loss": loss, "score": (config.seed + 1) * 0.1 + config.width, "final_step": config.steps}


def _mark(config: GroupedParams, name: str, text: str = "") -> None:
    if config.calls_dir:
        folder = Path(config.calls_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.{uuid.uuid4().hex[:8]}").write_text(text)


class Grouped:
    name = "grouped"
    version = "1"
    Params = GroupedParams
    Metrics = GroupedMetrics

    def run(self, config: GroupedParams, ctx) -> dict[str, Any]:
        _mark(config, f"run.{ctx.trial_id}")
        if config.fail_always:
            raise RuntimeError("fails alone too")
        return _one(config, ctx)

    @staticmethod
    def group_key(config: dict[str, Any]) -> str | None:
        return json.dumps({k: v for k, v in sorted(config.items()) if k not in FOLDED}, default=str)

    def run_group(self, configs: list[GroupedParams], ctxs: list) -> list[dict[str, Any] | BaseException]:
        _mark(configs[0], "group", "\n".join(c.trial_id for c in ctxs))
        if any(c.group_raises for c in configs):
            raise MemoryError("the batched computation does not fit")
        return [RuntimeError("member failed in its group") if c.fail_in_group or c.fail_always else _one(c, ctx)
                for c, ctx in zip(configs, ctxs)]


def calls(folder: Path) -> tuple[list[list[str]], list[str]]:
    """(the run_group calls: each its members' trial ids, the trial ids of lone runs)."""
    if not folder.exists():
        return [], []
    groups = [p.read_text().split("\n") for p in folder.glob("group.*")]
    runs = [p.name.split(".")[1] for p in folder.glob("run.*")]
    return groups, runs
