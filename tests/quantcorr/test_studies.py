"""Each quantcorr study YAML expands to the trial count of its seed study.

The expansion is recomputed here from the YAML (grid x zip x variants, scale overrides applied), so
the test checks the files, not the orchestrator."""
import itertools
from pathlib import Path

import pytest
import yaml

from workloads.quantcorr import QuantCorr

STUDIES = Path(__file__).resolve().parents[2] / "configs" / "studies"


def expand(spec: dict, scale: str) -> list[dict]:
    over = (spec.get("scales") or {}).get(scale) or {}
    fixed = {**(spec.get("fixed") or {}), **(over.get("fixed") or {})}
    grid = {**(spec.get("grid") or {}), **(over.get("grid") or {})}
    zips = spec.get("zip") or {}
    variants = spec.get("variants") or [{}]
    configs = []
    for var in variants:
        vgrid = {**grid, **(var.get("grid") or {})}
        axes = list(vgrid.items())
        for values in itertools.product(*(v for _, v in axes)):
            for combo in itertools.product(*zips.values()) if zips else [()]:
                cfg = {**fixed, **(var.get("fixed") or {}), **dict(zip((k for k, _ in axes), values))}
                for entry in combo:
                    cfg.update(entry)
                configs.append(cfg)
    return configs


def load(name: str) -> dict:
    return yaml.safe_load((STUDIES / f"{name}.yaml").read_text())


COUNTS = {"hydra_classification": 126}


@pytest.mark.parametrize("name,count", sorted(COUNTS.items()))
@pytest.mark.parametrize("scale", ["smoke", "fast", "full"])
def test_study_trial_counts(name, count, scale):
    spec = load(name)
    assert spec["workload"] == QuantCorr.name
    configs = expand(spec, scale)
    assert len(configs) == count
    keys = [tuple(sorted((k, repr(v)) for k, v in c.items())) for c in configs]
    assert len(set(keys)) == count  # no duplicate trials


def test_hydra_classification_split_and_full_budget():
    configs = expand(load("hydra_classification"), "full")
    base = [c for c in configs if c["correct_every"] == 999]
    assert len(base) == 18 and {c["correction_hidden"] for c in base} == {0}
    corr = [c for c in configs if c["correct_every"] != 999]
    assert len(corr) == 108
    assert {(c["float_steps"], c["correction_steps"], c["input_dim"], c["n_samples"]) for c in configs} == {(1000, 600, 100, 2000)}


def test_report_tables_exclude_baselines_from_recovery():
    for table in load("hydra_classification")["report"]:
        if "recovery_pct" in table.get("values", []) or "best" in table:
            assert table.get("where") == "correct_every != 999", table["title"]
