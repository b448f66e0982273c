"""The table kinds a study's `report:` declares besides grouped statistics and best rows — pivot,
compare (ratios and differences between groups), count-by-value, correlation statistics, tables
pooled over a per-trial artifact joined with the trial's row, and `order` — each checked against
an independent computation; and the one-line errors of malformed report items."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from orchestrator.report import page as report
from orchestrator.study import spec
from orchestrator.study import loader
from orchestrator.errors import UserError
from orchestrator.study.report_schema import ReportTable
from tests.orchestrator.report_data import geometry_like, ladder_rows, write_study

LADDER = pd.DataFrame(ladder_rows())


def mean_of(df: pd.DataFrame, col: str, **where) -> float:
    sel = df
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return float(sel[col].mean())


def test_pivot_puts_one_column_per_value():
    t = ReportTable(title="p", where="alpha == 1.0 and method != 'bp'", by=["depth"], pivot="method",
                    values=["gamma", "rho"], stats=["mean"], order={"method": ["dfa", "sb", "cb"]})
    out, notes = report.table(LADDER, t)
    assert not notes
    assert list(out.columns) == ["depth"] + [f"{v} {m}" for v in ("gamma", "rho") for m in ("dfa", "sb", "cb")]
    assert list(out["depth"]) == [2, 4]
    for _, r in out.iterrows():
        for m in ("dfa", "sb", "cb"):
            assert r[f"gamma {m}"] == pytest.approx(mean_of(LADDER, "gamma", alpha=1.0, depth=r["depth"], method=m))


def test_compare_ratio_per_cell_then_range_over_depths():
    t = ReportTable(title="r", by=["alpha"], values=["gamma", "rho"],
                    compare={"column": "method", "pairs": [["cb", "sb"], ["cb", "dfa"]], "over": ["depth"]},
                    stats=["min", "max", "count>1", "n"])
    out, notes = report.table(LADDER, t)
    assert not notes and list(out["alpha"]) == [0.0, 1.0]
    for _, r in out.iterrows():
        ratios = [mean_of(LADDER, "rho", alpha=r["alpha"], depth=d, method="cb")
                  / mean_of(LADDER, "rho", alpha=r["alpha"], depth=d, method="dfa") for d in (2, 4)]
        assert r["rho cb/dfa min"] == pytest.approx(min(ratios)) and r["rho cb/dfa max"] == pytest.approx(max(ratios))
        assert r["rho cb/dfa n > 1"] == sum(x > 1 for x in ratios) and r["rho cb/dfa n"] == 2
    # the seed's table: CB/SB on Gamma is 0.5/0.8 at alpha 0 (SB doubled there) and 0.5/0.4 at alpha 1
    assert out.loc[0, "gamma cb/sb max"] == pytest.approx(0.625, abs=0.02)
    assert out.loc[1, "gamma cb/sb min"] == pytest.approx(1.25, abs=0.05)


def test_compare_leaves_out_a_ratio_to_about_zero_and_takes_differences():
    rows = pd.DataFrame([{"k": 1, "m": "a", "v": 0.5}, {"k": 1, "m": "b", "v": 0.2},
                         {"k": 2, "m": "a", "v": 0.5}, {"k": 2, "m": "b", "v": 0.001}])
    ratio = ReportTable(title="r", by=["k"], values=["v"], compare={"column": "m", "pairs": [["a", "b"]]})
    out, _ = report.table(rows, ratio)
    assert out.loc[0, "v a/b"] == pytest.approx(2.5) and math.isnan(out.loc[1, "v a/b"])
    diff = ReportTable(title="d", by=["k"], values=["v"], compare={"column": "m", "pairs": [["a", "b"]], "op": "difference"})
    out, _ = report.table(rows, diff)
    assert list(out["v a-b"]) == pytest.approx([0.3, 0.499])


def test_count_by_value_with_order_and_several_columns():
    rows, _ = geometry_like()
    df = pd.DataFrame(rows)
    t = ReportTable(title="c", by=["d_model"], count=["q1_verdict", "q2_verdict_correct"],
                    order={"q1_verdict": ["supported", "unclear", "refuted"]})
    out, notes = report.table(df, t)
    assert not notes
    seen = [c for c in out.columns if c.startswith("q1_verdict=")]
    assert seen == [f"q1_verdict={v}" for v in ["supported", "unclear", "refuted"] if v in set(df.q1_verdict)]
    for _, r in out.iterrows():
        g = df[df.d_model == r["d_model"]]
        assert r["n"] == len(g)
        for v, n in g.q1_verdict.value_counts().items():
            assert r[f"q1_verdict={v}"] == n
    single, _ = report.table(df, ReportTable(title="c", count=["q1_verdict"]))
    assert single.iloc[0].drop("n").sum() == len(df) == single.iloc[0]["n"]


def test_correlation_stats_match_scipy():
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"g": ["a"] * 30 + ["b"] * 30, "x": rng.normal(size=60)})
    df["y"] = df["x"] * np.where(df["g"] == "a", 1.0, -0.5) + rng.normal(scale=0.5, size=60)
    df.loc[4, "y"] = np.nan  # pairwise complete: this row is left out
    t = ReportTable(title="c", by=["g"], values=["y"], stats=["spearman:x", "pearson:x", "n"])
    out, notes = report.table(df, t)
    assert not notes
    for _, r in out.iterrows():
        g = df[df.g == r["g"]].dropna()
        assert r["spearman:x"] == pytest.approx(sps.spearmanr(g.x, g.y).statistic, abs=1e-12)
        assert r["pearson:x"] == pytest.approx(sps.pearsonr(g.x, g.y).statistic, abs=1e-12)
    assert list(out["n"]) == [29, 30]


def test_artifact_tables_pool_points_joined_with_their_trial(tmp_path):
    rows, points = geometry_like()
    rows[0]["status"] = "failed"   # a failed trial's points are not pooled
    store = write_study(str(tmp_path / "g" / "fast"), "pooled", rows, {"q1_points": points})
    ids = {r["trial_id"] for r in rows}
    read = report.study_artifacts(store, ids)
    t = ReportTable(title="depth", artifact="q1_points", by=["d_model", "depth_bucket"], values=["R_lin_q4"],
                    stats=["mean", "n"], order={"depth_bucket": ["early", "mid", "late"]})
    done = store.rows()
    out, notes = report.table(done[done.status == "completed"], t, read)
    assert not notes
    pooled = pd.DataFrame([{**p, "d_model": r["d_model"]} for r in rows[1:] for p in points[r["trial_id"]]])
    assert out["n"].sum() == len(pooled) == 48 - 4
    assert list(out[out.d_model == 32]["depth_bucket"]) == ["early", "mid", "late"]
    for _, r in out.iterrows():
        sel = pooled[(pooled.d_model == r["d_model"]) & (pooled.depth_bucket == r["depth_bucket"])]
        assert r["mean"] == pytest.approx(sel.R_lin_q4.mean()) and r["n"] == len(sel)
    missing, notes = report.table(done, ReportTable(title="x", artifact="nope", values=["v"]), read)
    assert missing.empty and notes == ["no artifact 'nope' in the results"]


@pytest.mark.parametrize("item, field, words", [
    ({"title": "x", "values": ["v"], "pivot": "m", "count": ["m"]}, "report.0.count", "one of best, pivot"),
    ({"title": "x", "count": ["m"], "values": ["v"]}, "report.0.values", "takes no values"),
    ({"title": "x", "values": ["v"], "stats": ["spearman"]}, "report.0.stats", "spearman:COLUMN"),
    ({"title": "x", "values": ["v"], "compare": {"column": "m", "pairs": [["a", "b"]]}, "stats": ["min"]},
     "report.0.stats", "compare.over"),
    ({"title": "x", "values": ["v"], "compare": {"column": "m", "pairs": [["a", "b"]], "op": "quotient"}},
     "report.0.compare.op", "'ratio' or 'difference'"),
    ({"plot": "pie", "title": "x", "x": "a", "y": "b"}, "report.0.plot", "'bar', 'line', 'heatmap' or 'scatter'"),
    ({"plot": "heatmap", "title": "x", "x": "a", "y": "b"}, "report.0.value", "colour"),
    ({"plot": "bar", "title": "x", "x": "a", "y": "b", "value": "c"}, "report.0.value", "only a heatmap"),
    ({"plot": "bar", "title": "x", "x": "a", "y": "b", "colour": "c"}, "report.0.colour", "unknown field"),
    ({"plot": "bar", "title": "x", "x": "a", "y": "a"}, "report.0", "different columns"),
    ({"plot": "bar", "title": "x", "x": "a", "y": "b", "logx": True}, "report.0.logx", "log scale"),
    ({"plot": "line", "title": "x", "x": "a", "y": "b", "stat": "spearman:c"}, "report.0.stat", "needs two"),
])
def test_malformed_report_items_are_one_line_errors(item, field, words):
    with pytest.raises(UserError) as e:
        loader.validate({"name": "t", "workload": "synthetic", "report": [item]}, "t.yaml")
    assert "\n" not in str(e.value) and words in str(e.value)
    assert (e.value.field or "").startswith(field), str(e.value)


def test_a_study_json_with_plots_and_new_tables_reads_back():
    doc = {"name": "t", "workload": "synthetic", "report": [
        {"plot": "bar", "title": "b", "x": "a", "y": "b"},
        {"title": "c", "values": ["v"], "compare": {"column": "m", "pairs": [["a", "b"]]}}]}
    study = loader.validate(doc, "t.yaml")
    again = spec.Study.model_validate(study.model_dump(mode="json"))
    assert again == study and type(again.report[0]).__name__ == "ReportPlot"


def test_report_of_results_in_an_object_store(object_store, cli, tmp_path):
    """Tables pooled over an artifact and a plot, read from and written to s3:// like a local path."""
    rows, points = geometry_like()
    items = [{"title": "Pooled", "artifact": "q1_points", "by": ["depth_bucket"], "values": ["R_lin_q4"],
              "stats": ["mean", "n"], "order": {"depth_bucket": ["early", "mid", "late"]}},
             {"plot": "bar", "title": "Depth profile", "artifact": "q1_points", "x": "depth_bucket", "y": "R_lin_q4",
              "hue": "d_model"},
             {"title": "Verdicts", "count": ["q1_verdict"]}]
    uri = object_store.uri("report") + "/geo/fast"
    store = write_study(uri, "s3pooled", rows, {"q1_points": points}, report=items)
    code, out, err = cli("report", uri, "--html", tmp_path / "r.html")
    assert code == 0, err
    table = out.split("## Pooled")[1].split("##")[0]
    assert "| early |" in table and table.index("| early |") < table.index("| mid |") < table.index("| late |")
    assert sum(int(line.rsplit("|", 2)[1]) for line in table.splitlines() if line.startswith("| ") and "bucket" not in line) == 48
    assert f"({uri}/report/02-depth-profile.png)" in out
    assert store.list("report") == ["02-depth-profile.csv", "02-depth-profile.png"]
    assert store.read_bytes("report.md").decode().count("](report/02-depth-profile.png)") == 1
    assert (tmp_path / "r.html").read_text().count("data:image/png;base64,") == 1


def test_the_report_section_comes_from_the_current_study_file(tmp_path, cli, monkeypatch):
    """Finished results get the tables and plots of the study file as it is now (same study name and
    workload in configs/studies/), or of the file --study names; otherwise those frozen in study.json."""
    import yaml

    rows = ladder_rows()
    write_study(str(tmp_path / "res" / "ladderfile" / "fast"), "ladderfile", rows,
                report=[{"title": "Frozen", "by": ["method"], "values": ["gamma"]}])
    studies = tmp_path / "studies"
    studies.mkdir()
    doc = {"name": "ladderfile", "workload": "synthetic", "report": [
        {"title": "Edited", "by": ["alpha"], "pivot": "method", "values": ["rho"], "stats": ["mean"]}]}
    (studies / "ladderfile.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(report, "STUDY_DIR", studies)
    code, out, _ = cli("report", tmp_path / "res")
    assert code == 0 and "## Edited" in out and "## Frozen" not in out
    (studies / "ladderfile.yaml").write_text(yaml.safe_dump({**doc, "workload": "geometry"}))   # another study
    code, out, _ = cli("report", tmp_path / "res")
    assert code == 0 and "## Frozen" in out and "## Edited" not in out
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**doc, "name": "x", "report": [{"title": "Named", "count": ["method"]}]}))
    code, out, _ = cli("report", tmp_path / "res", "--study", other)
    assert code == 0 and "## Named" in out and "| 8 | 8 | 8 | 8 | 32 |" in out
