"""The study YAML: 18 settings (3 seeds x 6 zipped architectures, 156 quantization points) at
every scale, and report tables that only name columns a trial row has."""
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.study import grid, loader
from orchestrator.report.page import table
from workloads.geometry import Geometry

STUDY = Path(__file__).resolve().parents[2] / "configs" / "studies" / "geometry.yaml"
ARCHS = {(64, 2), (64, 4), (128, 4), (128, 6), (256, 4), (256, 6)}


@pytest.mark.parametrize("scale", ["smoke", "fast", "full"])
def test_expands_to_the_18_settings(scale):
    study = loader.resolve(loader.load_raw(STUDY), str(STUDY), scale)
    trials = grid.expand(study, Geometry.version)
    assert len(trials) == 18
    cfgs = [t.config for t in trials]
    assert {(c["d_model"], c["n_layers"]) for c in cfgs} == ARCHS
    assert sorted({c["seed"] for c in cfgs}) == [42, 123, 999]
    assert sum(2 * c["n_layers"] for c in cfgs) == 156
    assert all(c["bits"] == 4 and c["n_heads"] == 4 and not c["legacy_prenorm_residual_bug"] for c in cfgs)


def test_full_scale_is_the_seed_budget():
    study = loader.resolve(loader.load_raw(STUDY), str(STUDY), "full")
    c = grid.expand(study, Geometry.version)[0].config
    assert (c["float_epochs"], c["batch_size"], c["seq_len"], c["q2_elements"], c["q2_epochs"], c["q2_batch"]) == \
        (4, 64, 128, 600000, 20, 4096)
    assert (c["trace_train_sequences"], c["trace_test_sequences"], c["trace_max_rows"], c["report_sequences"]) == \
        (512, 256, 20000, 64)


def test_report_tables_read_existing_row_and_artifact_columns():
    # a real (smoke-sized) row, as the workload returns it, plus the config columns, and its
    # artifacts (per-point and per-variant tables) as the store would give them to the report
    from tests.geometry.test_workload import TINY
    from orchestrator.study.contract import LocalContext

    ctx = LocalContext(seed=7)
    row = Geometry().run(Geometry.Params.model_validate(TINY), ctx)
    df = pd.DataFrame([{"trial_id": "t0", **TINY, **row}])
    artifacts = {name: pd.DataFrame(rows).assign(trial_id="t0") for name, rows in ctx.artifacts.items()}
    study = loader.resolve(loader.load_raw(STUDY), str(STUDY), "smoke")
    assert len(study.report) >= 10
    for t in study.report:
        out, notes = table(df, t, artifacts.get)
        if t.where and notes == ["no rows match"]:
            continue  # a filter this one setting does not meet
        assert not notes, (t.title, notes)
        assert len(out) >= 1, t.title
