"""The numbers in a report, checked against an independent computation (plain Python, the
`statistics` module) on a small hand-made dataset: mean, std, sem, median, n, min, max,
share>X (and >=, <, <=), best/top with and without groups, and `where` filters. Also a report of
an empty dataset and of a partly finished one."""
from __future__ import annotations

import math
import re
import statistics as st
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from orchestrator.report import page as report
from orchestrator.study.spec import Study
from orchestrator.study.report_schema import ReportTable

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
NAN = float("nan")

# bits, method, seed, acc, loss, status
RAW = [
    (2, "a", 0, 0.50, 1.30, "completed"),
    (2, "a", 1, 0.60, 1.10, "completed"),
    (2, "b", 0, 0.70, 0.90, "completed"),
    (4, "a", 0, 0.80, 0.70, "completed"),
    (4, "b", 0, 0.90, 0.40, "completed"),
    (4, "b", 1, 0.85, 0.50, "completed"),
    (4, "a", 1, NAN, 0.60, "completed"),        # a metric the trial did not produce
    (8, "b", 0, 0.95, 0.20, "completed"),
    (2, "b", 1, NAN, NAN, "failed"),
    (8, "a", 0, 0.10, NAN, "diverged"),
]


def dataset() -> pd.DataFrame:
    rows = []
    for i, (bits, method, seed, acc, loss, status) in enumerate(RAW):
        rows.append({"trial_id": f"t{i:02d}", "study": "hand", "scale": "fast", "status": status, "bits": bits,
                     "method": method, "seed": seed, "acc": acc, "loss": loss,
                     "started_at": T0 + timedelta(minutes=i), "finished_at": T0 + timedelta(minutes=i, seconds=30),
                     "wall_s": 30.0, "host": "h", "device": "cpu", "attempts": 1,
                     "error": "" if status == "completed" else "boom"})
    return pd.DataFrame(rows)


def completed() -> list[dict]:
    return [r for r in dataset().to_dict("records") if r["status"] == "completed"]


def values(records, col) -> list[float]:
    return [r[col] for r in records if not (isinstance(r[col], float) and math.isnan(r[col]))]


def expected(vals: list[float], stat: str) -> float:
    """The statistic from first principles."""
    if stat == "n":
        return len(vals)
    if not vals:
        return NAN
    m = re.fullmatch(r"share([<>]=?)(-?[\d.]+)", stat)
    if m:
        op, x = m.group(1), float(m.group(2))
        hit = [v for v in vals if {">": v > x, ">=": v >= x, "<": v < x, "<=": v <= x}[op]]
        return 100.0 * len(hit) / len(vals)
    if stat in ("std", "sem") and len(vals) < 2:
        return NAN
    return {"mean": st.mean, "median": st.median, "min": min, "max": max, "std": st.stdev,
            "sem": lambda v: st.stdev(v) / math.sqrt(len(v))}[stat](vals)


def same(a, b) -> bool:
    if isinstance(b, float) and math.isnan(b):
        return a is None or a is pd.NA or (isinstance(a, float) and math.isnan(a))
    return a == pytest.approx(b, rel=1e-12, abs=1e-12)


STATS = ["mean", "std", "sem", "median", "n", "min", "max", "share>0.75", "share>=0.8", "share<0.6", "share<=0.6"]


def test_grouped_statistics_match_an_independent_computation():
    spec = ReportTable(title="acc by bits", by=["bits"], values=["acc"], stats=STATS)
    df = pd.DataFrame(completed())
    out, notes = report.table(df, spec)
    assert not notes
    assert list(out["bits"]) == [2, 4, 8]                           # groups, in order
    for _, row in out.iterrows():
        vals = values([r for r in completed() if r["bits"] == row["bits"]], "acc")
        for stat in STATS:
            label = report._stat_label(stat)
            assert same(row[label], expected(vals, stat)), (row["bits"], stat, row[label], expected(vals, stat))
    # spot checks against numbers worked out by hand
    by = out.set_index("bits")
    assert by.loc[2, "mean"] == pytest.approx(0.6) and by.loc[2, "std"] == pytest.approx(0.1)
    assert by.loc[2, "sem"] == pytest.approx(0.1 / math.sqrt(3)) and by.loc[2, "median"] == pytest.approx(0.6)
    assert by.loc[4, "n"] == 3                                      # the missing acc is not counted
    assert by.loc[4, "% > 0.75"] == pytest.approx(100.0) and by.loc[2, "% <= 0.6"] == pytest.approx(200 / 3)
    assert math.isnan(by.loc[8, "std"]) and math.isnan(by.loc[8, "sem"]) and by.loc[8, "n"] == 1


def test_several_values_and_several_keys():
    spec = ReportTable(title="t", by=["bits", "method"], values=["acc", "loss"], stats=["mean", "n"])
    out, _ = report.table(pd.DataFrame(completed()), spec)
    keys = sorted({(r["bits"], r["method"]) for r in completed()})
    assert list(zip(out["bits"], out["method"])) == keys
    for _, row in out.iterrows():
        group = [r for r in completed() if (r["bits"], r["method"]) == (row["bits"], row["method"])]
        for v in ("acc", "loss"):
            assert same(row[f"{v} mean"], expected(values(group, v), "mean"))
            assert row[f"{v} n"] == len(values(group, v))


def test_no_grouping_is_one_row_over_everything():
    spec = ReportTable(title="t", values=["loss"], stats=["mean", "median", "share<0.55"])
    out, _ = report.table(pd.DataFrame(completed()), spec)
    vals = values(completed(), "loss")
    assert len(out) == 1
    for stat in ("mean", "median", "share<0.55"):
        assert same(out.iloc[0][report._stat_label(stat)], expected(vals, stat))


@pytest.mark.parametrize("where, keep", [
    ("method == 'a'", lambda r: r["method"] == "a"),
    ("bits >= 4 and acc > 0.8", lambda r: r["bits"] >= 4 and r["acc"] > 0.8),
    ("seed == 1 or bits == 8", lambda r: r["seed"] == 1 or r["bits"] == 8),
])
def test_where_filters_the_rows_first(where, keep):
    spec = ReportTable(title="t", where=where, by=["bits"], values=["loss"], stats=["mean", "n"])
    out, notes = report.table(pd.DataFrame(completed()), spec)
    assert not notes
    chosen = [r for r in completed() if keep(r)]
    assert list(out["bits"]) == sorted({r["bits"] for r in chosen})
    for _, row in out.iterrows():
        vals = values([r for r in chosen if r["bits"] == row["bits"]], "loss")
        assert same(row["mean"], expected(vals, "mean")) and row["n"] == len(vals)


def test_best_top_per_group_and_overall():
    recs = [r for r in completed() if not math.isnan(r["acc"])]
    spec = ReportTable(title="t", best={"metric": "acc", "mode": "max", "by": ["bits"], "top": 2},
                       columns=["method", "seed", "acc"])
    out, _ = report.table(pd.DataFrame(completed()), spec)
    want = []
    for bits in sorted({r["bits"] for r in recs}):
        group = sorted((r for r in recs if r["bits"] == bits), key=lambda r: -r["acc"])[:2]
        want += [(bits, r["method"], r["seed"], r["acc"]) for r in group]
    assert list(out.itertuples(index=False, name=None)) == want
    assert list(out.columns) == ["bits", "method", "seed", "acc"]

    spec = ReportTable(title="t", best={"metric": "loss", "mode": "min", "top": 3}, columns=["bits", "loss"])
    out, _ = report.table(pd.DataFrame(completed()), spec)
    want = sorted(((r["bits"], r["loss"]) for r in completed()), key=lambda x: x[1])[:3]
    assert list(out.itertuples(index=False, name=None)) == want


def study(**extra) -> Study:
    return Study.model_validate({
        "name": "hand", "workload": "synthetic", "grid": {"bits": [2, 4, 8]},
        "report": [{"title": "Accuracy by bits", "by": ["bits"], "values": ["acc"],
                    "stats": ["mean", "std", "n", "share>0.75"]},
                   {"title": "Best", "best": {"metric": "acc", "mode": "max"}, "columns": ["bits", "method", "acc"]}],
        **extra})


def test_rendered_report_uses_completed_rows_and_rounds_as_declared():
    text = report.render(study(), "fast", dataset(), total=10)
    assert "Trials: 8 completed, 1 failed, 1 diverged." in text
    # the failed and diverged rows are left out of the tables; 2 decimals by default
    assert "| bits | mean | std | n | % > 0.75 |" in text
    assert "| 2 | 0.60 | 0.10 | 3 | 0.00 |" in text
    assert "| 4 | 0.85 | 0.05 | 3 | 100.00 |" in text
    assert "| 8 | 0.95 | – | 1 | 100.00 |" in text              # one value: no spread
    assert "| 8 | b | 0.95 |" in text                             # best
    assert "## Failed trials" in text and "`t08`: boom" in text
    assert "first start to last finish 9m30s" in text


def test_report_of_an_empty_dataset():
    text = report.render(study(), "fast", pd.DataFrame(), total=3)
    assert "Trials: 0 completed, 0 failed, 0 diverged, 3 not finished (partial report)." in text
    assert text.count("## ") == 2                                 # every table is there, empty
    assert "_(no column bits, acc in the results yet)_" in text
    assert "Traceback" not in text and "nan" not in text.lower()


def test_report_of_a_partly_finished_study():
    part = dataset().iloc[:4]                                    # 4 of 10 trials so far
    text = report.render(study(), "fast", part, total=10)
    assert "Trials: 4 completed, 0 failed, 0 diverged, 6 not finished (partial report)." in text
    assert "| 2 | 0.60 | 0.10 | 3 | 0.00 |" in text and "| 4 | 0.80 | – | 1 | 100.00 |" in text
    assert "| 8 |" not in text
