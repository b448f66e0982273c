"""The typed contract at both ends: declared parameters are checked before anything
runs, trial ids hash the canonical config, and every part file of a study has one schema that
pandas, pyarrow, DuckDB and polars read whole."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from orchestrator import AnyParams, BaseContext, LocalContext, Workload, params_of
from orchestrator.run import registry
from orchestrator.run.trial import WorkerContext
from orchestrator.study import params as P
from orchestrator.study.contract import grouped, preflight_of
from orchestrator.results import rows as R
from orchestrator.errors import UserError
from orchestrator.run.prepare import prepare
from orchestrator.results.dataset import StudyStore
from tests.orchestrator.toy_workloads import HalfGrouped, NoRun, Toy, ToyParams, Undeclared
from tests.processes import overnight_subprocess

TOY = "tests.orchestrator.toy_workloads:Toy"


def toy_study(**over):
    doc = {"name": "toy", "workload": TOY, "metric": "loss", "mode": "min",
           "fixed": {"steps": 3}, "grid": {"lr": [1, 0.5], "bits": [2, 4]}}
    doc.update(over)
    return doc


def ids(path, *sets):
    return [t.trial_id for t in prepare(path, "fast", list(sets)).trials]


# ---- canonical trial ids -------------------------------------------------------------------
def test_int_and_float_spellings_of_a_float_parameter_give_one_id(write_study):
    a = write_study(toy_study(grid={"lr": [1, 0.5]}), "a.yaml")
    b = write_study(toy_study(grid={"lr": [1.0, 0.5]}), "b.yaml")
    assert ids(a) == ids(b)
    trials = prepare(a, "fast").trials
    assert [type(t.config["lr"]) for t in trials] == [float, float]


def test_explicit_default_equals_omitted_default(write_study):
    omitted = write_study(toy_study(fixed={"steps": 3}), "a.yaml")
    explicit = write_study(toy_study(fixed={"steps": 3, "bits": 4, "mode": "ok"}, grid={"lr": [1, 0.5]}), "b.yaml")
    plain = write_study(toy_study(fixed={"steps": 3}, grid={"lr": [1, 0.5]}), "c.yaml")
    assert ids(explicit) == ids(plain)
    assert set(ids(plain)) < set(ids(omitted)) | set(ids(plain))
    # the full config handed to the workload has every parameter, defaults filled in
    cfg = prepare(plain, "fast").trials[0].config
    assert cfg == {"lr": 1.0, "bits": 4, "steps": 3, "mode": "ok", "seed": 0, "cache": True}


def test_new_parameter_with_default_keeps_existing_ids(write_study):
    old = write_study(toy_study(), "old.yaml")
    new = write_study(toy_study(workload="tests.orchestrator.toy_workloads:ToyGrown"), "new.yaml")
    assert ids(old) == ids(new)
    # setting the new parameter away from its default is a different trial
    assert set(ids(new, "momentum=0.9")).isdisjoint(ids(old))


def test_execution_knobs_are_not_part_of_the_id(write_study):
    path = write_study(toy_study())
    assert ids(path, "cache=false") == ids(path)
    assert ids(path, "steps=5") != ids(path)


def test_values_normalised_in_the_canonical_config():
    full = P.validate(P.Params.__subclasses__()[0] if False else __import__(
        "tests.orchestrator.toy_workloads", fromlist=["ToyParams"]).ToyParams, {"lr": 2})
    assert full["lr"] == 2.0 and isinstance(full["lr"], float)


# ---- parameter errors: one line, exit 2, naming where the bad key came from ---------------
def _err(write_study, doc, *sets):
    path = write_study(doc)
    with pytest.raises(UserError) as e:
        prepare(path, "fast", list(sets))
    return str(e.value), path


def test_unknown_key_from_set_names_set_and_suggests(write_study):
    msg, _ = _err(write_study, toy_study(), "bitz=4")
    assert msg.startswith("--set: bitz: unknown parameter (did you mean `bits`?)"), msg


def test_unknown_key_in_file_names_file_and_field(write_study):
    msg, path = _err(write_study, toy_study(variants=[{"grid": {"stpes": [1, 2]}}]))
    assert msg.startswith(f"{path}: variants.0.grid.stpes: unknown parameter (did you mean `steps`?)"), msg


def test_wrong_type_in_grid_names_field_and_value(write_study):
    msg, path = _err(write_study, toy_study(grid={"bits": [2, "four"]}))
    assert msg.startswith(f"{path}: grid.bits:") and "'four'" in msg, msg


def test_out_of_range_value(write_study):
    msg, path = _err(write_study, toy_study(zip={"pair": [{"lr": 0.1, "seed": 1}, {"lr": -1, "seed": 2}]}, grid={}))
    assert msg.startswith(f"{path}: zip.pair.lr:") and "greater than 0" in msg and "-1" in msg, msg


def test_model_level_rule(write_study):
    msg, path = _err(write_study, toy_study(fixed={"steps": 1}, grid={"bits": [8]}))
    assert "steps: 8 bits needs at least 2 steps" in msg and str(path) in msg


def test_scale_override_is_named(write_study):
    msg, path = _err(write_study, toy_study(scales={"fast": {"fixed": {"steps": 0}}}))
    assert msg.startswith(f"{path}: scales.fast.fixed.steps:"), msg


def test_duplicate_yaml_key_names_the_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(f"name: dup\nworkload: {TOY}\ngrid:\n  lr: [0.1]\nfixed: {{steps: 2}}\ngrid:\n  bits: [2]\n")
    p = overnight_subprocess("run", path, "--dry-run", "--results", tmp_path / "r")
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert "line 6" in p.stderr and "duplicate key 'grid' (first at line 3)" in p.stderr, p.stderr
    # nested mappings too
    path.write_text(f"name: dup\nworkload: {TOY}\nfixed:\n  steps: 2\n  steps: 3\n")
    p = overnight_subprocess("run", path, "--dry-run", "--results", tmp_path / "r")
    assert p.returncode == 2 and "line 5" in p.stderr and "duplicate key 'steps'" in p.stderr, p.stderr


def test_undeclared_workload_accepts_any_key_and_infers_types(write_study):
    path = write_study({"name": "u", "workload": "tests.orchestrator.toy_workloads:Undeclared",
                        "grid": {"x": [1, 2.5], "tag": ["a", "b"]}})
    prep = prepare(path, "fast")
    assert len(prep.trials) == 4
    assert prep.schema.field("x").type == pa.float64() and prep.schema.field("tag").type == pa.string()


# ---- what run receives, what the contexts check -------------------------------------------
STUDIES = sorted((Path(__file__).resolve().parents[2] / "configs" / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_run_gets_the_instance_of_the_config_the_driver_validated(path):
    """The trial process rebuilds the Params instance from the validated config that travels as
    plain values: the same values, of the same types, as the driver validated."""
    prep = prepare(path, "smoke")
    model = P.declared(prep.workload)[0]
    for t in prep.trials[:4]:
        config = params_of(prep.workload, t.config)
        assert type(config) is model
        assert config.model_dump() == t.config
        assert {k: type(v) for k, v in config.model_dump().items()} == {k: type(v) for k, v in t.config.items()}


def test_an_undeclared_workload_gets_its_keys_as_attributes():
    config = params_of(Undeclared, {"x": 2.5, "tag": "a"})
    assert isinstance(config, AnyParams) and (config.x, config.tag) == (2.5, "a")
    assert config.model_dump() == {"x": 2.5, "tag": "a"}
    assert Undeclared().run(config, LocalContext()) == {"score": 5.0}
    assert Undeclared().run(params_of(Undeclared, {}), LocalContext()) == {"score": 0.0}


def test_a_function_gets_what_a_class_gets():
    decorated = registry.load("tests.orchestrator.toy_workloads:toy_function")
    assert (decorated.name, decorated.Params) == ("toy_function", ToyParams)
    out = decorated().run(params_of(decorated, {"lr": 0.5, "steps": 2}), LocalContext())
    assert out == {"loss": 0.5 * 4 / 2, "received": "ToyParams"}
    plain = registry.load("tests.orchestrator.toy_workloads:plain_function")
    assert plain().run(params_of(plain, {"x": 3}), LocalContext()) == {"score": 6.0, "received": "AnyParams"}


def test_the_contract_and_its_optional_hooks_are_recognised():
    from tests.orchestrator.group_workloads import Grouped as TwoMethods

    assert isinstance(Toy, Workload) and isinstance(Toy(), Workload) and not isinstance(NoRun, Workload)
    with pytest.raises(UserError, match="has no 'run'"):
        registry.load("tests.orchestrator.toy_workloads:NoRun")
    assert grouped(TwoMethods) is TwoMethods and grouped(registry.load("quantcorr.transformer")) is not None
    assert grouped(HalfGrouped) is None and grouped(Toy) is None
    assert callable(preflight_of(registry.load("geometry"))) and preflight_of(Toy) is None


def _worker_context() -> WorkerContext:
    return WorkerContext(trial_id="t", seed=0, device="cpu", data_root=Path("."), cache_dir=Path("."),
                         scale="smoke", attempt=1, _store=None, _stages=None)  # report uses neither


def test_both_contexts_keep_and_refuse_the_same_reports():
    local, worker = LocalContext(), _worker_context()
    for ctx in (local, worker):
        ctx.report(0, loss=1.5)
        ctx.report(1.0, phase="correction", loss=math.nan, acc=1)
        for bad in ("high", [1.0], {"a": 1.0}, (1.0,), b"1"):
            with pytest.raises(TypeError, match="must be a number"):
                ctx.report(2, value=bad)
    assert isinstance(worker, BaseContext) and isinstance(local, BaseContext)
    assert all(isinstance(h["time"], float) for h in worker.history)
    without_time = [{k: v for k, v in h.items() if k != "time"} for h in worker.history]
    assert repr(without_time) == repr(local.history) == repr([
        {"step": 0, "phase": None, "loss": 1.5}, {"step": 1, "phase": "correction", "loss": math.nan, "acc": 1}])


# ---- one schema per study, read whole by the four readers ---------------------------------
@pytest.fixture(scope="module")
def mixed_study(tmp_path_factory, ray_local):
    """A 14-trial toy study with completed, failed, diverged rows, an undeclared metric, a metric
    of the wrong type, and an int/float axis, run through the CLI on the local Ray."""
    from orchestrator.cli import main

    tmp = tmp_path_factory.mktemp("mixed")
    doc = toy_study(max_failures=0, grid={"lr": [1, 0.5]},
                    variants=[{"fixed": {"mode": m}} for m in ("ok", "raise", "nan", "undeclared", "badtype")]
                    + [{"grid": {"bits": [2, 8]}}])
    path = tmp / "mixed.yaml"
    path.write_text(yaml.safe_dump(doc))
    code = main(["run", str(path), "--results", str(tmp / "res"), "--scale", "fast", "--no-report"])
    assert code == 1  # some trials failed
    return StudyStore(str(tmp / "res" / "toy" / "fast"))


def test_every_part_file_has_the_study_schema(mixed_study):
    folder = mixed_study.files.local_path("trials")
    schemas = {pq.read_schema(p).remove_metadata() for p in folder.glob("*.parquet")}
    assert len(schemas) == 1
    frozen = R.schema_from_json(mixed_study.manifest()["schema"])
    assert schemas.pop() == frozen
    assert frozen.field("lr").type == pa.float64() and frozen.field("final_step").type == pa.int64()
    hist = {pq.read_schema(p).remove_metadata() for p in mixed_study.files.local_path("history").glob("*.parquet")}
    assert len(hist) == 1


def test_statuses_and_metric_handling(mixed_study):
    rows = mixed_study.rows().set_index(["mode", "bits", "lr"])
    assert len(rows) == 14
    assert rows.loc[("ok", 4, 1.0), "status"] == "completed" and rows.loc[("ok", 4, 1.0), "loss"] == pytest.approx(4 / 3)
    failed = rows.loc[("raise", 4, 1.0)]
    assert failed["status"] == "failed" and "toy failure" in failed["error"]
    assert pd_isna(failed["loss"]) and pd_isna(failed["final_step"])
    assert rows.loc[("nan", 4, 0.5), "status"] == "diverged"
    # an undeclared metric does not become a column: it is kept in extra_metrics (JSON)
    und = rows.loc[("undeclared", 4, 1.0)]
    assert und["status"] == "completed" and json.loads(und["extra_metrics"]) == {"surprise": 1.5}
    assert "surprise" not in rows.columns
    # a metric of the wrong type fails the trial, naming the column
    bad = rows.loc[("badtype", 4, 1.0)]
    assert bad["status"] == "failed" and "final_step" in bad["error"] and "'many'" in bad["error"]


def pd_isna(v):
    import pandas as pd

    return pd.isna(v)


def test_four_readers_read_the_whole_mixed_study(mixed_study):
    import duckdb
    import pandas as pd
    import polars as pl

    folder = str(mixed_study.files.local_path("trials"))
    frames = {
        "pandas": pd.read_parquet(folder),
        "pyarrow": pq.read_table(folder).to_pandas(),
        "duckdb": duckdb.sql(f"SELECT * FROM '{folder}/*.parquet'").df(),
        "polars": pl.read_parquet(f"{folder}/*.parquet").to_pandas(),
    }
    expected_cols = set(R.schema_from_json(mixed_study.manifest()["schema"]).names)
    for reader, df in frames.items():
        assert len(df) == 14, reader
        assert set(df.columns) == expected_cols, reader
        assert sorted(df["status"]) == sorted(["completed"] * 8 + ["failed"] * 4 + ["diverged"] * 2), reader
        assert sorted(df["lr"].tolist()) == [0.5] * 7 + [1.0] * 7, reader
        # null in failed rows, NaN in diverged ones: both missing to pandas; 8 real values
        assert df["loss"].notna().sum() == 8, reader
        assert df.loc[df["status"] == "failed", "final_step"].isna().all(), reader
    hist = str(mixed_study.files.local_path("history"))
    assert len(duckdb.sql(f"SELECT * FROM '{hist}/*.parquet'").df()) == len(pd.read_parquet(hist))
    assert len(pl.read_parquet(f"{hist}/*.parquet")) == len(pd.read_parquet(hist)) > 0


def test_export_parquet_and_csv(mixed_study, tmp_path):
    import pandas as pd

    for name in ("all.parquet", "all.csv"):
        p = overnight_subprocess("export", mixed_study.location, "--out", tmp_path / name)
        assert p.returncode == 0, p.stderr
        df = pd.read_parquet(tmp_path / name) if name.endswith("parquet") else pd.read_csv(tmp_path / name)
        assert len(df) == 14 and df["trial_id"].is_unique
        assert set(df.columns) == set(mixed_study.rows().columns)
    p = overnight_subprocess("export", mixed_study.location, "--out", tmp_path / "x.xlsx")
    assert p.returncode == 2 and "--out" in p.stderr and ".parquet or .csv" in p.stderr


def test_old_datasets_with_differing_part_schemas_still_read(tmp_path):
    """Datasets written before one-schema-per-study (int in one part, float in another, a
    column missing in a failed row) still open through the store, status and report."""
    import pandas as pd

    st = StudyStore(str(tmp_path / "old" / "s" / "fast"))
    t = {"started_at": pd.Timestamp("2026-01-01", tz="UTC"), "finished_at": pd.Timestamp("2026-01-01 00:01", tz="UTC")}
    st.write_table("trials/a.parquet", pa.Table.from_pylist([{"trial_id": "a", "status": "completed", "lr": 1, "loss": 0.5,
                                                              "wall_s": 1.0, **t}]))
    st.write_table("trials/b.parquet", pa.Table.from_pylist([{"trial_id": "b", "status": "completed", "lr": 0.5, "loss": 0.25,
                                                              "wall_s": 1.0, **t}]))
    st.write_table("trials/c.parquet", pa.Table.from_pylist([{"trial_id": "c", "status": "failed", "lr": 0.1, "error": "x",
                                                              "wall_s": 0.0, **t}]))
    rows = st.rows()
    assert len(rows) == 3 and rows["lr"].dtype == float and rows["loss"].isna().sum() == 1
    st.write_manifest({"study": {"name": "s", "workload": "synthetic"}, "scale": "fast",
                       "trials": [{"trial_id": t, "config": {}} for t in "abc"]})
    p = overnight_subprocess("status", tmp_path / "old")
    assert p.returncode == 1 and "3 trials | 2 completed | 1 failed" in p.stdout, p.stdout + p.stderr
    p = overnight_subprocess("report", tmp_path / "old")
    assert p.returncode == 0 and "2 completed, 1 failed" in p.stdout, p.stdout + p.stderr


def test_describe_lists_parameters_and_metrics():
    p = overnight_subprocess("describe", TOY)
    assert p.returncode == 0, p.stderr
    assert "lr: float = 0.1" in p.stdout and "learning rate" in p.stdout
    assert "bits: 2 | 4 | 8 = 4" in p.stdout and "[execution only, not in the trial id]" in p.stdout
    assert "loss: float | None" in p.stdout
    p = overnight_subprocess("describe", "synthtic")
    assert p.returncode == 2 and "did you mean `synthetic`?" in p.stderr
