"""The three study files: trial counts of the seed, smoke trials that run, report columns that exist."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from orchestrator.study import grid, loader
from orchestrator.report import page as report
from orchestrator.study.contract import LocalContext
from workloads.creditbridge import CreditBridge

STUDIES = Path(__file__).resolve().parents[2] / "configs" / "studies"


def _expand(path: Path, scale: str) -> list:
    study = loader.resolve(loader.load_raw(path), str(path), scale)
    return [dict(c) for c in grid.configs(study)]


@pytest.mark.parametrize("name,count", [("credit_ladder", 192), ("credit_ablations", 39), ("credit_cifar", 15)])
def test_full_scale_enumerates_the_seed_grid(name, count):
    configs = _expand(STUDIES / f"{name}.yaml", "full")
    unique = {grid.trial_id("creditbridge", CreditBridge.version, c) for c in configs}
    assert len(unique) == count


def test_ablations_cover_the_sixteen_configurations():
    configs = _expand(STUDIES / "credit_ablations.yaml", "full")
    combos = {(c["cond"], c["tgw"], c["wr"]) for c in configs}
    listed = ([(s, 1.0, 0.2) for s in ["eT", "deltaL", "eT+proj", "deltaL+proj"]]
              + [("eT", t, 0.2) for t in [0.0, 0.25, 1.0, 4.0]]
              + [(s, 1.0, w) for s in ["eT", "deltaL"] for w in [0.0, 0.05, 0.2, 0.5]])
    assert len(listed) == 16 and combos == set(listed)


@pytest.mark.parametrize("name", ["credit_ladder", "credit_ablations", "credit_cifar"])
def test_smoke_trials_fill_every_report_table(name, monkeypatch):
    monkeypatch.setenv("OVERNIGHT_OFFLINE", "1")
    path = STUDIES / f"{name}.yaml"
    study = loader.resolve(loader.load_raw(path), str(path), "smoke")
    configs = [dict(c) for c in grid.configs(study)]
    if name == "credit_ablations":
        configs = configs[:4]                      # one per conditioning code is enough here
    rows = []
    for cfg in configs:
        out = CreditBridge().run(CreditBridge.Params.model_validate(cfg), LocalContext(seed=int(cfg.get("seed", 0))))
        assert not set(out) & set(cfg), "metric names must not repeat config keys"
        rows.append({**cfg, **out, "status": "completed"})
    df = pd.DataFrame(rows)
    for table in study.report:
        out, notes = report.table(df, table)
        assert not out.empty, f"{name}: table {table.title!r} is empty: {notes}"


def test_fast_scale_keeps_the_grid_and_shrinks_the_budget():
    raw = yaml.safe_load((STUDIES / "credit_ladder.yaml").read_text())
    fast = raw["scales"]["fast"]["fixed"]
    assert fast["epochs"] * fast["n_train"] < raw["fixed"]["epochs"] * raw["fixed"]["n_train"] / 10
    assert len(_expand(STUDIES / "credit_ladder.yaml", "fast")) == 192
