"""Plots declared in a study's `report:`: the numbers each one draws are checked against an
independent computation, and the drawn matplotlib artists (bar heights and error bars, line
points, heatmap cells, scatter offsets) against those numbers; the stored report has the PNG (a
real image), the CSV of its numbers and a link in report.md."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from orchestrator.results import layout as L
from orchestrator.report import plots, page as report
from orchestrator.study import loader
from orchestrator.study.report_schema import ReportPlot
from tests.orchestrator.report_data import geometry_like, ladder_rows, write_study

LADDER = pd.DataFrame(ladder_rows())


def sem(values) -> float:
    v = np.asarray(values, float)
    return float(v.std(ddof=1) / math.sqrt(v.size))


def test_bar_heights_and_error_bars_are_the_group_means_and_sems():
    p = ReportPlot(plot="bar", title="gamma", x="depth", y="gamma", hue="method", facet="alpha",
                   order={"method": ["bp", "dfa", "sb", "cb"]})
    data = plots.plot_data(LADDER, p)
    fig = plots.figure(data, p)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["alpha = 0", "alpha = 1"]
    for ax, alpha in zip(panels, (0.0, 1.0)):
        bars = [c for c in ax.containers if type(c).__name__ == "BarContainer"]
        assert [c.get_label() for c in bars] == ["bp", "dfa", "sb", "cb"]
        for c in bars:
            for patch, depth, err_line in zip(c.patches, (2, 4), c.errorbar.lines[2][0].get_segments()):
                sel = LADDER[(LADDER.alpha == alpha) & (LADDER.method == c.get_label()) & (LADDER.depth == depth)]
                assert patch.get_height() == pytest.approx(sel.gamma.mean())
                lo, hi = err_line[0][1], err_line[1][1]
                assert (hi - lo) / 2 == pytest.approx(sem(sel.gamma))
    assert sorted(ax.get_xticklabels()[0].get_text() for ax in panels) == ["2", "2"]


def test_line_points_follow_a_numeric_x_and_each_hue_keeps_its_colour():
    rows, _ = geometry_like()
    df = pd.DataFrame(rows)
    p = ReportPlot(plot="line", title="loss", x="n_layers", y="loss_gain", hue="d_model", error="none")
    data = plots.plot_data(df, p)
    fig = plots.figure(data, p)
    ax = fig.axes[0]
    colours = {}
    for c in ax.containers:
        xy = c.lines[0].get_xydata()
        d = int(c.get_label())
        colours[d] = c.lines[0].get_color()
        expect = df[df.d_model == d].groupby("n_layers").loss_gain.mean()
        assert list(xy[:, 0]) == list(expect.index) and list(xy[:, 1]) == pytest.approx(list(expect.values))
    assert len(set(colours.values())) == len(colours) == 2
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["32", "64"]


def test_heatmap_cells_are_the_means_and_a_missing_cell_stays_empty():
    rows, _ = geometry_like()
    df = pd.DataFrame(rows)
    p = ReportPlot(plot="heatmap", title="h", x="d_model", y="n_layers", value="spearman_score_q4", decimals=3)
    data = plots.plot_data(df, p)
    fig = plots.figure(data, p)
    grid = fig.axes[0].images[0].get_array()
    for i, n_layers in enumerate((2, 4)):
        for j, d in enumerate((32, 64)):
            sel = df[(df.d_model == d) & (df.n_layers == n_layers)]
            if sel.empty:
                assert grid.mask[i, j]          # (64, 4) was not run
            else:
                assert grid[i, j] == pytest.approx(sel.spearman_score_q4.mean())
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert f"{df[(df.d_model == 32) & (df.n_layers == 2)].spearman_score_q4.mean():.3f}" in texts


def test_scatter_of_pooled_artifact_points(tmp_path):
    rows, points = geometry_like()
    store = write_study(str(tmp_path / "s"), "scatterstudy", rows, {"q1_points": points})
    read = report.study_artifacts(store, {r["trial_id"] for r in rows})
    p = ReportPlot(plot="scatter", title="s", artifact="q1_points", x="relative_depth", y="R_lin_q4", hue="d_model")
    fig = plots.render(store.rows(), p, read)
    assert fig.png.startswith(b"\x89PNG") and not fig.notes
    drawn = plots.figure(fig.data, p)
    pooled = pd.DataFrame([{**q, "d_model": r["d_model"]} for r in rows for q in points[r["trial_id"]]])
    for coll, d in zip(drawn.axes[0].collections, (32, 64)):
        got = np.asarray(coll.get_offsets())
        want = pooled[pooled.d_model == d][["relative_depth", "R_lin_q4"]].to_numpy()
        assert sorted(map(tuple, got.round(12))) == sorted(map(tuple, want.round(12)))


def test_stored_report_has_the_png_its_numbers_and_a_link(tmp_path):
    import matplotlib.image as mpimg

    items = [{"title": "Gamma by method", "by": ["method"], "values": ["gamma"]},
             {"plot": "bar", "title": "Gamma by depth and method", "x": "depth", "y": "gamma", "hue": "method"},
             {"plot": "bar", "title": "Not yet", "x": "depth", "y": "nosuch"}]
    store = write_study(str(tmp_path / "ladder" / "fast"), "ladderstudy", ladder_rows(), report=items)
    store.write_bytes(L.join(L.REPORT_DIR, "99-stale.png"), b"old")
    rep = report.for_store(store)
    text = report.write(store, rep)
    name = "02-gamma-by-depth-and-method"
    assert f"![Gamma by depth and method](report/{name}.png)" in text
    assert "_(no column nosuch in the results yet)_" in text
    assert store.list(L.REPORT_DIR) == [f"{name}.csv", f"{name}.png"]          # the stale file is gone
    image = mpimg.imread(io.BytesIO(store.read_bytes(L.join(L.REPORT_DIR, f"{name}.png"))), format="png")
    assert image.shape[0] > 200 and image.shape[1] > 300 and image[..., :3].std() > 0.05   # not blank
    csv = pd.read_csv(io.BytesIO(store.read_bytes(L.join(L.REPORT_DIR, f"{name}.csv"))))
    expect = LADDER.groupby(["method", "depth"]).gamma.mean()
    for r in csv.itertuples():
        assert r.gamma == pytest.approx(expect[(r.method, r.depth)])
    assert store.read_bytes(L.REPORT).decode() == text


def test_a_plot_that_fails_leaves_the_rest_of_the_report(monkeypatch):
    study = loader.validate({"name": "t", "workload": "synthetic", "report": [
        {"plot": "bar", "title": "b", "x": "depth", "y": "gamma"},
        {"title": "t", "by": ["method"], "values": ["gamma"]}]}, "t.yaml")

    def boom(*a, **k):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "figure", boom)
    rep = report.build(study, "fast", LADDER)
    assert rep.sections[0].notes == ["plot failed: RuntimeError: no fonts"]
    assert not rep.sections[1].frame.empty
