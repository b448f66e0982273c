"""Each quantcorr study YAML expands to the trial count of its seed study.

The expansion is recomputed here from the YAML (grid x zip x variants, scale overrides applied), so
the test checks the files, not the orchestrator."""
import itertools
from pathlib import Path

import pytest
import yaml

from workloads.quantcorr import Autoencoder, Classification, Transformer

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


COUNTS = {"hydra_classification": 126, "hydra_autoencoder": 126, "hydra_transformer": 126,
          "lambda_classification": 162, "lambda_autoencoder": 162, "lambda_transformer": 162,
          "transformer_grid": 243, "transformer_grid_legacy": 243}
WORKLOADS = {"hydra_classification": Classification, "lambda_classification": Classification,
             "hydra_autoencoder": Autoencoder, "lambda_autoencoder": Autoencoder,
             "hydra_transformer": Transformer, "lambda_transformer": Transformer,
             "transformer_grid": Transformer, "transformer_grid_legacy": Transformer}


@pytest.mark.parametrize("name,count", sorted(COUNTS.items()))
@pytest.mark.parametrize("scale", ["smoke", "fast", "full"])
def test_study_trial_counts(name, count, scale):
    spec = load(name)
    assert spec["workload"] == WORKLOADS[name].name
    assert "task" not in (spec.get("fixed") or {})  # the workload is the task
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


@pytest.mark.parametrize("name,count", sorted(COUNTS.items()))
def test_orchestrator_expands_the_same_count(name, count):
    from orchestrator.study import grid, loader, params  # the project's own modules: an import error fails
    path = STUDIES / f"{name}.yaml"
    for scale in ("smoke", "fast", "full"):
        study = loader.resolve(loader.load_raw(path), str(path), scale)
        configs = list(grid.configs(study))
        assert len(configs) == count
        for cfg in configs:  # every trial of every scale is a valid config of its workload
            params.validate(WORKLOADS[name].Params, cfg)


def test_hydra_studies_have_18_baselines():
    for name in ("hydra_classification", "hydra_autoencoder", "hydra_transformer"):
        configs = expand(load(name), "full")
        assert sum(c["correct_every"] == 999 for c in configs) == 18, name


def test_lambda_studies_grid_and_semantics():
    for name in ("lambda_classification", "lambda_autoencoder", "lambda_transformer"):
        configs = expand(load(name), "full")
        assert {c["lam"] for c in configs} == {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}
        assert {c["bits"] for c in configs} == {2, 4, 8}
        assert {c["correction_hidden"] for c in configs} == {0, 32, 64}
        assert {c["seed"] for c in configs} == {42, 123, 999}
        assert all(c["guard"] == "lambda" and c["correction_init"] == "zero" for c in configs)
        assert not any(c["legacy_h0_unquantized"] for c in configs)  # correct by default
    assert {c["input_dim"] for c in expand(load("lambda_classification"), "full")} == {10000}


def test_transformer_grid_archs_and_legacy_switch():
    grid_cfgs = expand(load("transformer_grid"), "full")
    archs = {(c["d_model"], c["n_heads"], c["n_layers"], c["d_ff"]) for c in grid_cfgs}
    assert archs == {(64, 4, 2, 256), (128, 4, 4, 512), (256, 8, 6, 1024)}
    assert not any(c["legacy_prenorm_residual_bug"] for c in grid_cfgs)
    legacy = expand(load("transformer_grid_legacy"), "full")
    assert all(c["legacy_prenorm_residual_bug"] for c in legacy)
    strip = lambda cs: sorted(repr(sorted((k, v) for k, v in c.items() if k != "legacy_prenorm_residual_bug")) for c in cs)  # noqa: E731
    assert strip(grid_cfgs) == strip(legacy)  # the only difference is the switch
    assert {(c["float_epochs"], c["correction_epochs"], c["batch_size"], c["seq_len"]) for c in grid_cfgs} == {(10, 5, 64, 128)}
