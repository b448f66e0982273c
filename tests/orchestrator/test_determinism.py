"""Determinism: on one machine a trial's metrics are bit-identical whatever the execution knobs
(--bundle, --group, --max-concurrent; resumed from a checkpoint or run straight through), except
what its workload declares (``determinism``, a tuple of orchestrator.study.contract.NotBitIdentical:
which knob changes which metrics, on which device, and why; ``overnight describe`` prints it and
the report gets it from ``orchestrator.run.registry.determinism_note``).

- every registered workload declares ``determinism``, and the declaration is valid;
- every workload, through a few trials of one of its studies at smoke scale (grids shrunk with
  --set), run *packed* (--group auto, --bundle 2 (auto sends a grid this short one by one),
  --max-concurrent 2) and *lone* (--bundle 1 --group off --max-concurrent 1): every column of every
  row is the same bit for bit, but for timings (the VOLATILE names of the regression tests) and
  the metrics the workload declares for these knobs on the CPU. The transformer runs its grid
  protocol (as in the transformer_grid study, at d_model 128, where grouped members once differed from
  their lone runs in the last bits: per-member gradient clipping reduced in another order) and its
  lambda protocol (corrector QAT);
- resume: a transformer group whose driver is SIGKILLed mid-way through the correction epochs
  (``kill_when`` of tests/processes.py), then run again, resumes from its
  members' checkpoints (members caught at different epochs train in sub-batches) and gives the
  rows of a straight lone run.
"""
from __future__ import annotations

import json
import math
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from orchestrator.run import registry
from orchestrator.cli import main
from orchestrator.study.determinism import KNOBS, NotBitIdentical, determinism
from orchestrator.results.dataset import StudyStore
from tests.orchestrator.test_bundles import run_record
from tests.processes import kill_when, start_overnight
from tests.regression.smoke_cases import VOLATILE

PACKED = ["--bundle", "2", "--max-concurrent", "2"]              # --group: auto
LONE = ["--bundle", "1", "--group", "off", "--max-concurrent", "1"]
RUN_COLUMNS = {"started_at", "finished_at", "wall_s", "host", "attempts"}   # of the run, not of the trial

EPOCHS = 5   # corrector epochs of the transformer cases: room for a kill mid-way (test_a_group_killed...)
TRANSFORMER_GRID = ["--set", "seed=[42,123,999]", "--set", "bits=[4]", "--set", "correct_every=[1]",
                    "--set", "correction_hidden=[32]", "--set", f"correction_epochs={EPOCHS}",
                    "--set", "zip.arch=[{d_model: 128, n_heads: 4, n_layers: 4, d_ff: 512}]"]
# workload -> (study, --set arguments): a few trials each, at smoke scale
CASES = {
    "synthetic": ("synthetic", ["--set", "lr=[0.05,0.2]", "--set", "seed=[0,1]"]),
    # 3 trials sharing one float stage, in 2 bundles at once
    "quantcorr.classification": ("hydra_classification", [
        "--set", "width=[32]", "--set", "depth=[4]", "--set", "bits=[2]", "--set", "correct_every=[1,2]",
        "--set", "correction_hidden=[32]"]),
    "quantcorr.autoencoder": ("hydra_autoencoder", [
        "--set", "hidden=[[128,64]]", "--set", "latent=[16]", "--set", "bits=[2]", "--set", "correct_every=[2]",
        "--set", "correction_hidden=[32]"]),
    "quantcorr.transformer": ("transformer_grid", TRANSFORMER_GRID),   # one vectorised group of 3
    "geometry": ("geometry", ["--set", "seed=[42,123]", "--set", "zip.arch=[{d_model: 64, n_layers: 2}]"]),
    "ramlm": ("ramlm_quick", ["--set", 'zip.experiment=[{experiment: context_6_sparse, '
                                       'tiers: "100,12,14;400,8,10;rest,5,8", context: 6}]']),   # x 2 variants
    "creditbridge": ("credit_ladder", ["--set", "method=[bp,cb]"]),
}


def workload_of(case: str) -> str:
    return case.split("/")[0]


# ---- comparison ------------------------------------------------------------------------------
def trial_values(rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """trial_id -> every column that describes the trial (its config, status, error and metrics,
    extra_metrics unpacked), without the run's own columns and timings."""
    out = {}
    for r in rows.to_dict("records"):
        extra = r.pop("extra_metrics", None)
        extra = json.loads(extra) if isinstance(extra, str) else {}   # null: NaN in pandas
        values = {**r, **{f"extra_metrics.{k}": v for k, v in extra.items()}}
        out[r["trial_id"]] = {k: v for k, v in values.items() if k not in RUN_COLUMNS and not VOLATILE.search(k)}
    return out


def same_bits(a: Any, b: Any) -> bool:
    a, b = (v.tolist() if hasattr(v, "tolist") else v for v in (a, b))   # numpy scalars and arrays
    floats = [isinstance(v, float) for v in (a, b)]
    if any(floats):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
            return False
        a, b = float(a), float(b)
        return (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b)
    return a == b


def differences(want: pd.DataFrame, got: pd.DataFrame) -> dict[str, list[str]]:
    """column -> the trials whose values differ in it (bit for bit)."""
    w, g = trial_values(want), trial_values(got)
    assert sorted(w) == sorted(g), "the two runs have different trials"
    out: dict[str, list[str]] = {}
    for tid in sorted(w):
        for col in sorted(set(w[tid]) | set(g[tid])):
            if not same_bits(w[tid].get(col), g[tid].get(col)):
                out.setdefault(col, []).append(tid)
    return out


def assert_only_declared(case: str, diff: dict[str, list[str]], knobs: set[str], device: str = "cpu") -> None:
    """Every difference is in a metric the workload declares as changed by ``knobs`` on ``device``."""
    entries = [e for e in determinism(registry.load(workload_of(case))) or () if e.applies(knobs, device)]
    if any(not e.metrics for e in entries):   # declared: every metric may change
        return
    allowed = {m for e in entries for m in e.metrics}
    allowed |= {f"extra_metrics.{m}" for m in allowed}
    unexplained = {c: t for c, t in diff.items() if c not in allowed}
    assert not unexplained, (f"{case}: not bit-identical across {sorted(knobs)} in {sorted(unexplained)} "
                             f"(trials {sorted({t for ts in unexplained.values() for t in ts})}); "
                             f"declared: {[e.text() for e in entries] or 'nothing'}")


def run(study: str, results: Path, *args: str) -> tuple[StudyStore, pd.DataFrame]:
    """`overnight run STUDY --scale smoke` in-process (on the session's Ray): its store and rows."""
    code = main(["run", study, "--scale", "smoke", "--results", str(results), "--no-report", *args])
    assert code == 0, f"overnight run {study} {' '.join(args)}: exit {code}"
    store = StudyStore(str(results / study / "smoke"))
    rows = store.rows()
    assert len(rows) and set(rows["status"]) == {"completed"}, rows[["trial_id", "status", "error"]]
    return store, rows


@pytest.fixture(scope="module")
def lone_transformer(ray_local, tmp_path_factory) -> pd.DataFrame:
    """The transformer case run lone, straight through: the reference of its knob and resume tests."""
    store, rows = run("transformer_grid", tmp_path_factory.mktemp("lone_transformer"), *LONE, *TRANSFORMER_GRID)
    assert run_record(store)["bundles"] == len(rows) == 3
    return rows


# ---- the declarations ------------------------------------------------------------------------
def test_every_workload_is_covered_and_declares_its_determinism():
    assert {workload_of(c) for c in CASES} == set(registry.registered())
    for name in registry.registered():
        cls = registry.load(name)
        assert determinism(cls) is not None, f"{name} declares no determinism (() : every metric bit-identical)"
        note = registry.determinism_note(name)
        assert (note is None) == (not determinism(cls)), name
    assert registry.determinism_note("quantcorr.classification") is None
    assert "resumed_from" in registry.determinism_note("synthetic")
    assert "on CUDA, --group" in registry.determinism_note("quantcorr.transformer")


def test_a_declaration_is_checked_and_printed_by_describe(cli):
    with pytest.raises(ValueError, match="knobs"):
        NotBitIdentical(("threads",), why="x")
    with pytest.raises(ValueError, match="why"):
        NotBitIdentical(("group",), why=" ")

    class Bad:
        name, Metrics = "bad", registry.load("synthetic").Metrics
        determinism = (NotBitIdentical(KNOBS, metrics=("los",), why="typo"),)
    with pytest.raises(ValueError, match="does not declare.*los"):
        determinism(Bad)
    code, out, _ = cli("describe", "synthetic")
    assert code == 0 and "Determinism: bit-identical on one machine" in out
    assert "a resume from a checkpoint changes resumed_from: it records the step" in out
    code, out, _ = cli("describe", "quantcorr.classification")
    assert code == 0 and "Determinism: every metric is bit-identical" in out


# ---- the knobs -------------------------------------------------------------------------------
@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("case", list(CASES))
def test_packed_and_lone_runs_give_the_same_bits(case, tmp_path, request):
    study, sets = CASES[case]
    packed_store, packed = run(study, tmp_path / "packed", *PACKED, *sets)
    if workload_of(case) == "quantcorr.transformer":
        lone = request.getfixturevalue("lone_transformer")
        assert run_record(packed_store)["bundles"] == 1   # one vectorised group
    else:
        lone_store, lone = run(study, tmp_path / "lone", *LONE, *sets)
        assert run_record(lone_store)["bundles"] == len(lone)
    assert 2 <= len(lone) <= 4
    assert run_record(packed_store)["bundles"] < len(lone)   # the packed run did share Tune trials
    assert_only_declared(case, differences(lone, packed), {"bundle", "group", "max_concurrent"})


@pytest.mark.parametrize("protocol", ["grid", "hydra", "lambda"])
def test_a_group_member_is_its_lone_trial_bit_for_bit(protocol, monkeypatch):
    """Every protocol of the vectorised transformer (the smoke cases above run the grid protocol
    only): ``run_group`` over members that differ in the seed (and lambda), against ``run`` one by
    one, in-process (test_vectorised.py's small configs; it allows float rounding, this does not)."""
    import torch

    from orchestrator.study.contract import LocalContext
    from tests.quantcorr.test_vectorised import TIMES, group, run_alone, run_grouped

    monkeypatch.setenv("OVERNIGHT_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as in a trial (resources.cpu: 1)
    try:
        cfgs = group(protocol, stage_cache=False, d_model=64)
        want = [run_alone(c, LocalContext()) for c in cfgs]
        got = run_grouped(cfgs, [LocalContext() for _ in cfgs])
    finally:
        torch.set_num_threads(threads)
    for c, w, g in zip(cfgs, want, got):
        assert not isinstance(g, BaseException), g
        diff = sorted(k for k in w if k not in TIMES and not same_bits(w[k], g.get(k)))
        assert not diff, (protocol, c["seed"], c.get("lam"), {k: (w[k], g[k]) for k in diff})


# ---- resume ----------------------------------------------------------------------------------
def test_a_group_killed_mid_way_resumes_to_the_bits_of_a_straight_lone_run(tmp_path, lone_transformer):
    epochs, sets = EPOCHS, TRANSFORMER_GRID
    res = tmp_path / "resumed"
    store = StudyStore(str(res / "transformer_grid" / "smoke"))

    def mid_correction() -> dict[str, int]:
        """Members without a row whose checkpoint is at correction epoch 1 to epochs - 2."""
        caught = {}
        for tid in store.in_flight():
            state = (store.load_checkpoint(tid) or {}).get("state") or {}
            epoch = (state.get("correction_progress") or {}).get("epoch", 0)
            if 1 <= epoch <= epochs - 2:
                caught[tid] = epoch
        return caught

    first = start_overnight("run", "transformer_grid", "--scale", "smoke", "--results", res, "--no-report", *sets,
                            log=tmp_path / "run1.log")
    caught = kill_when(first, "a member mid-way through its correction epochs", mid_correction, tmp_path / "run1.log")
    assert caught and not store.finished_ids()
    _, resumed = run("transformer_grid", res, *sets)             # default knobs: the group again

    by_id = resumed.set_index("trial_id")
    history = store.history()
    for tid in caught:   # resumed from its checkpoint: a second try, and each correction epoch reported once
        assert by_id.loc[tid, "attempts"] >= 2
        steps = Counter(history[(history.trial_id == tid) & (history.phase == "correction") & (history.metric == "loss")]["step"])
        assert sorted(steps) == list(range(1, epochs + 1)) and set(steps.values()) == {1}, steps
    assert_only_declared("quantcorr.transformer", differences(lone_transformer, resumed), {"resume", "group"})
