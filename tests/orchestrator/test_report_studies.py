"""The report sections of the committed study files: every table and plot names only columns its
workload declares (parameters, metrics, row columns, artifact columns), and geometry's report
reproduces the seed-002 pooled summary (verdict counts, pooled R_lin aggregates, Spearman, depth
and sub-layer profiles) that a side script used to print — checked here against that script's
formulas on a results location read through the store."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.study import params as P
from orchestrator.report import plots, page as report
from orchestrator.run import registry
from orchestrator.study import loader
from orchestrator.results.rows import ROW_COLUMNS
from orchestrator.study.report_schema import ReportPlot
from orchestrator.report.tables import needed
from tests.orchestrator.report_data import geometry_like, write_study

STUDIES = sorted((Path(__file__).resolve().parents[2] / "configs" / "studies").glob("*.yaml"))
SEED_STUDIES = {"hydra_classification", "transformer_grid", "geometry", "ramlm_quick", "credit_ladder"}


def declared_columns(workload_name: str) -> tuple[set[str], dict[str, set[str]]]:
    cls = registry.load(workload_name)
    params, metrics, arts = P.declared(cls)
    row = set(ROW_COLUMNS) | set(params.model_fields if params else {}) | set(metrics.model_fields if metrics else {})
    return row, {name: set(model.model_fields) | {"trial_id"} for name, model in arts.items()}


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_report_items_name_declared_columns(path):
    study = loader.load(path)
    row, arts = declared_columns(study.workload)
    if study.workload != "synthetic":
        assert any(isinstance(i, ReportPlot) for i in study.report), f"{path.stem} declares no plot"
    for item in study.report:
        known = row | (arts[item.artifact] if item.artifact else set())
        assert not item.artifact or item.artifact in arts, (item.title, item.artifact)
        unknown = [c for c in needed(item) + list(item.order) if c not in known]
        assert not unknown, f"{path.stem}: {item.title!r} reads {unknown}, which {study.workload} does not declare"


def test_every_seed_study_has_plots_and_the_side_script_tables():
    kinds = {p.stem: {getattr(i, "kind", "plot") for i in loader.load(p).report} for p in STUDIES if p.stem in SEED_STUDIES}
    assert all("plot" in k for k in kinds.values()), kinds
    assert {"count"} <= kinds["geometry"] and {"pivot", "compare"} <= kinds["credit_ladder"]
    assert any(i.artifact for i in loader.load(STUDIES[[p.stem for p in STUDIES].index("geometry")]).report)


# ------------------------------------------------------------------ geometry: the seed-002 summary
def rank_spearman(x, y) -> float:
    """The study's Spearman (Pearson on average ranks), as the removed summary script called it."""
    from workloads.geometry.q1 import spearman

    return spearman(np.asarray(x, float), np.asarray(y, float))


def geometry_items(*titles: str):
    study = loader.load(next(p for p in STUDIES if p.stem == "geometry"))
    by_title = {i.title: i for i in study.report}
    return [by_title[t] for t in titles]


@pytest.fixture
def geometry_results(tmp_path):
    rows, points = geometry_like(seed=5)
    store = write_study(str(tmp_path / "geometry" / "fast"), "geometry_check", rows, {"q1_points": points})
    pooled = pd.DataFrame([{**p, "trial_id": r["trial_id"]} for r in rows for p in points[r["trial_id"]]])
    done = store.rows()
    return done, pooled, report.study_artifacts(store, set(done.trial_id))


def test_geometry_verdict_counts(geometry_results):
    rows, _, read = geometry_results
    (item,) = geometry_items("Verdicts (settings)")
    out, notes = report.table(rows, item, read)
    assert not notes and out.iloc[0]["n"] == len(rows)
    for col in item.count:
        for verdict, n in rows[col].value_counts().items():    # "Q1 verdicts: refuted 14, unclear 4"
            assert out.iloc[0][f"{col}={verdict}"] == n
    assert [c.split("=")[1] for c in out.columns if c.startswith("q2_verdict_legacy=")] == \
        [v for v in ("supported", "unclear", "refuted") if v in set(rows.q2_verdict_legacy)]


def test_geometry_pooled_r_lin_and_spearman(geometry_results):
    rows, pooled, read = geometry_results
    r_lin, corr = geometry_items("Pooled per-point R_lin (every quantization point of every setting)",
                                 "Spearman(correctability_score, R_lin) pooled over points")
    out, notes = report.table(rows, r_lin, read)
    assert not notes
    for rec in out.itertuples(index=False, name=None):
        got = dict(zip(out.columns, rec))
        x = pooled[got["value"]].astype(float)                  # "R_lin_q4: mean, median, positive %, > 0.2 %"
        assert got["mean"] == pytest.approx(x.mean()) and got["median"] == pytest.approx(x.median())
        assert got["% > 0"] == pytest.approx(100 * (x > 0).mean()) and got["% > 0.2"] == pytest.approx(100 * (x > 0.2).mean())
        assert got["n"] == len(pooled) == 48
    out, notes = report.table(rows, corr, read)
    assert not notes
    for rec in out.to_dict("records"):
        assert rec["spearman:correctability_score"] == pytest.approx(
            rank_spearman(pooled.correctability_score, pooled[rec["value"]]), abs=1e-12)


def test_geometry_depth_and_sub_layer_profiles(geometry_results):
    rows, pooled, read = geometry_results
    depth, sub = geometry_items("Depth profile of R_lin_q4, pooled (tertiles of k/(P-1))",
                                "Sub-layer profile of R_lin_q4, pooled")
    for item, col, order in ((depth, "depth_bucket", ["early", "mid", "late"]), (sub, "sub_layer", ["attn", "ffn"])):
        out, notes = report.table(rows, item, read)
        assert not notes and list(out[col]) == order
        for rec in out.to_dict("records"):                  # "- early: mean, median, positive % (n=54)"
            x = pooled.loc[pooled[col] == rec[col], "R_lin_q4"].astype(float)
            assert (rec["mean"], rec["median"], rec["% > 0"], rec["n"]) == \
                (pytest.approx(x.mean()), pytest.approx(x.median()), pytest.approx(100 * (x > 0).mean()), len(x))
    (plot,) = [i for i in loader.load(next(p for p in STUDIES if p.stem == "geometry")).report
               if isinstance(i, ReportPlot) and i.title.startswith("Depth profile")]
    fig = plots.render(rows, plot, read)
    assert fig.png and not fig.notes
    assert fig.data["n"].sum() == len(pooled)
