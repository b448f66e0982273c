"""examples/spirals_hydra: the seed-000 Hydra spirals sweep as a standalone script run
through `workload: command` gives the same rows as the built-in quantcorr.classification workload
for the same configs, and the script resumes from its own phase checkpoints.

The comparison is exact (==, NaN == NaN): the script repeats the built-in computation op for op
(same numpy draws, same torch RNG order, same init, same Adam, same quantizer and accumulated-error
rule), and both sides run on one intra-op thread. That last condition matters: torch's CPU kernels
may sum in another order on more threads, and over hundreds of Adam steps a last-bit difference
grows into different accuracies. Ray runs the script with OMP_NUM_THREADS=1 (one CPU per trial), so
the built-in side is pinned to one thread too.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from orchestrator.cli import main
from orchestrator.study.contract import LocalContext
from orchestrator.results.dataset import StudyStore
from tests.conftest import ROOT
from workloads.quantcorr import Classification

EXAMPLE = ROOT / "examples" / "spirals_hydra"
STUDY = EXAMPLE / "study.yaml"
SCRIPT = EXAMPLE / "train.py"
DOC = yaml.safe_load(STUDY.read_text())
PARAMS = list(DOC["params"])
# Metrics both rows have; wall times are not results.
SHARED = sorted(set(DOC["metrics"]) & set(Classification.Metrics.model_fields) - {"float_phase_s", "total_s"})
# {2, 4} bits x {linear correctors at points 1 and 3, the baseline}: 4 smoke trials of the 126 (the
# MLP corrector, h = 32, is the by-hand test's).
SUBSET = ["--set", "width=[32]", "--set", "depth=[4]", "--set", "correct_every=[2]", "--set", "correction_hidden=[0]"]


def same(a, b) -> bool:
    """Equal, both missing (the built-in row has NaN where the script writes null), or both NaN."""
    missing = lambda v: v is None or (isinstance(v, float) and math.isnan(v))  # noqa: E731
    return (missing(a) and missing(b)) or a == b


def plain(v):
    return v.item() if hasattr(v, "item") else v


def builtin(config: dict) -> tuple[dict, LocalContext]:
    """The built-in workload in this process on one thread, as a Ray trial would run the script."""
    ctx = LocalContext(seed=config["seed"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return Classification().run(Classification.Params.model_validate(config), ctx), ctx
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def command_rows(ray_local, tmp_path_factory):
    """The four trials through the CLI: the study file, Ray, the command workload, the store."""
    res = tmp_path_factory.mktemp("spirals") / "res"
    code = main(["run", str(STUDY), "--scale", "smoke", "--results", str(res), "--no-report", *SUBSET])
    assert code == 0
    store = StudyStore(str(res / "spirals_hydra" / "smoke"))
    out = store.artifact("output")
    first = out[(out.stream == "stdout") & (out.line == 0)]["text"]
    assert len(first) == 4 and all(t.endswith(", 1 torch thread(s)") for t in first), first.tolist()
    return store.rows(), store.history()


@pytest.fixture(scope="module")
def builtin_runs(command_rows):
    """The built-in workload on each trial's config: {trial_id: (row, ctx with its history)}."""
    rows, _ = command_rows
    return {r["trial_id"]: builtin({k: plain(r[k]) for k in PARAMS}) for r in rows.to_dict("records")}


def test_rows_equal_the_builtin_workloads(command_rows, builtin_runs):
    rows, _ = command_rows
    assert len(rows) == 4 and set(rows["status"]) == {"completed"}
    assert sorted(zip(rows["bits"], rows["correct_every"], rows["correction_hidden"])) == [
        (2, 2, 0), (2, 999, 0), (4, 2, 0), (4, 999, 0)]
    assert {"acc_float", "acc_quant", "acc_corrected", "acc_oracle", "recovery_pct", "gap",
            "recovery_reliable", "correction_final_loss", "num_correction_layers"} <= set(SHARED)
    for r in rows.to_dict("records"):
        config = {k: plain(r[k]) for k in PARAMS}
        assert config["float_steps"] == 20 and config["correction_steps"] == 15 and config["seed"] == 42
        want, _ = builtin_runs[r["trial_id"]]
        diff = {k: (plain(r[k]), want.get(k)) for k in SHARED if not same(plain(r[k]), want.get(k))}
        assert not diff, f"{config}: command != built-in for {diff}"
        assert r["resumed_from"] == "start"
        if r["correct_every"] == 999:  # baseline: no corrector, no loss
            assert r["num_correction_layers"] == 0 and math.isnan(want["correction_final_loss"])
        else:  # a real, trained number to agree on
            assert r["num_correction_layers"] == 2 and math.isfinite(r["correction_final_loss"])


def test_history_equals_the_builtin_workloads(command_rows, builtin_runs):
    """The training-loss records (float every 100 steps and the last, correction every 50) too."""
    rows, hist = command_rows
    for r in rows.to_dict("records"):
        _, ctx = builtin_runs[r["trial_id"]]
        want = sorted((h["phase"], h["step"], h["loss"]) for h in ctx.history)
        mine = hist[(hist.trial_id == r["trial_id"]) & hist.phase.isin(["float", "correction"])]
        assert sorted(zip(mine.phase, mine.step, mine.value)) == want and want == [("float", 20, want[0][2])]


# -------------------------------------------------------------------------------- by hand, no Ray
# A budget where the correctors move the accuracy (smoke's 15 steps leave recovery at 0).
HAND = {"seed": 42, "bits": 2, "width": 32, "depth": 4, "correct_every": 2, "correction_hidden": 32,
        "float_steps": 200, "correction_steps": 60, "correction_lr": 0.001}


def run_script(ck: Path, metrics: Path, config: dict) -> tuple[str, list[dict]]:
    argv = [sys.executable, str(SCRIPT)] + [x for k, v in config.items() for x in (f"--{k}", str(v))]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "OVERNIGHT_CHECKPOINT_DIR": str(ck), "OVERNIGHT_METRICS_FILE": str(metrics)}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, cwd=EXAMPLE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, [json.loads(line) for line in metrics.read_text().splitlines()]


def test_resumes_from_its_phase_checkpoints(tmp_path):
    # an uninterrupted run: both phases train, both checkpoints are written, the row is the built-in's
    ck = tmp_path / "ck"
    out, records = run_script(ck, tmp_path / "m1.jsonl", HAND)
    first = records[-1]
    assert "float step 200" in out and "resumed" not in out and first["resumed_from"] == "start"
    assert sorted(p.name for p in ck.iterdir()) == ["correction.pt", "float.pt"]  # no temporary left
    want, _ = builtin(HAND)
    assert all(same(first.get(k), want.get(k)) for k in SHARED), {k: (first.get(k), want.get(k)) for k in SHARED}
    assert first["recovery_pct"] != 0 and first["acc_corrected"] != first["acc_quant"]
    results = {k: v for k, v in first.items() if k not in ("resumed_from", "float_phase_s", "total_s")}

    # a folder holding only the float phase (as overnight hands it back after a kill during the
    # correction), and a metrics file with that run's float record, a correction record of the
    # interrupted phase and a line torn by the kill
    ck2 = tmp_path / "ck2"
    ck2.mkdir()
    shutil.copy(ck / "float.pt", ck2 / "float.pt")
    handed_back = tmp_path / "m2.jsonl"
    float_records = [r for r in records if r.get("phase") == "float"]
    assert [r["step"] for r in float_records] == [100, 200]
    handed_back.write_text("".join(json.dumps(r) + "\n" for r in float_records)
                           + json.dumps({"step": 50, "phase": "correction", "loss": 9.9}) + '\n{"step": 100, "pha')
    out, records = run_script(ck2, handed_back, HAND)
    assert "resumed: float training done" in out and "float step" not in out
    assert records[-1]["resumed_from"] == "float"
    assert {k: records[-1][k] for k in results} == results
    # the float records kept once, the interrupted phase's record and the torn line gone, the
    # correction logged afresh (step 50 of 60), then the row
    assert [(r.get("phase"), r.get("step")) for r in records] == [
        ("float", 100), ("float", 200), ("correction", 50), (None, None)]
    assert records[:2] == float_records and records[2]["loss"] != 9.9

    # both phases done: nothing trains again
    out, records = run_script(ck, tmp_path / "m3.jsonl", HAND)
    assert "resumed: correction done" in out and "step" not in out
    assert records[-1]["resumed_from"] == "correction" and {k: records[-1][k] for k in results} == results

    # a checkpoint of another configuration is not resumed
    out, records = run_script(ck, tmp_path / "m4.jsonl", {**HAND, "bits": 4, "float_steps": 20, "correction_steps": 5})
    assert "resumed" not in out and records[-1]["resumed_from"] == "start"
