"""Claims in a study file and their verdicts (orchestrator/study/claims.py, orchestrator/report/verdicts.py):
typed and checked like parameters (exit 2), judged by a stated rule, never decided by a filter."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orchestrator.report import verdicts as V
from orchestrator.study.claims import Claim
from orchestrator.report.page import build, markdown
from orchestrator.study.spec import Study

SOURCE = "seeds/000_87690202cf051d4b.txt:52"


def claim(**kw) -> Claim:
    return Claim(**{"id": "c", "seed": "a seed finding", "source": SOURCE, **kw})


def paired_rows(diff: float, noise: float, n: int = 20, seed: int = 0) -> pd.DataFrame:
    """n (width, depth) cells, each with a bits=2 and a bits=4 row; 4 is ``diff`` ahead plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for cell in range(n):
        base = rng.normal(20, 5)
        rows.append({"width": cell, "depth": cell % 3, "bits": 2, "recovery_pct": base, "status": "completed"})
        rows.append({"width": cell, "depth": cell % 3, "bits": 4, "recovery_pct": base + diff + rng.normal(0, noise),
                     "status": "completed"})
    return pd.DataFrame(rows)


ORDER = dict(kind="order", metric="recovery_pct", column="bits", order=[4, 2], paired=["width", "depth"])


def test_a_paired_order_holds_reverses_or_is_not_separated_by_its_bootstrap_interval():
    held = V.judge(claim(**ORDER), paired_rows(3.0, 1.0), ["width", "depth", "bits"])
    assert held.verdict == V.HOLDS and held.tests[0].n == 20 and 2.5 < held.tests[0].estimate < 3.5
    assert 0 < held.tests[0].low < held.tests[0].estimate < held.tests[0].high
    assert "bootstrap 95 % interval (10,000 resamples, seed 0)" in held.rule and "paired on width, depth" in held.rule
    assert V.judge(claim(**ORDER), paired_rows(-3.0, 1.0), []).verdict == V.REVERSED
    assert V.judge(claim(**ORDER), paired_rows(0.0, 5.0), []).verdict == V.NOT_SEPARATED
    # seeded: the same rows give the same interval
    again = V.judge(claim(**ORDER), paired_rows(3.0, 1.0), [])
    assert (again.tests[0].low, again.tests[0].high) == (held.tests[0].low, held.tests[0].high)


def test_few_pairs_get_an_exact_sign_test_and_five_cannot_separate():
    eight = V.judge(claim(**ORDER), paired_rows(3.0, 0.1, n=8), [])
    assert eight.verdict == V.HOLDS and eight.tests[0].p == pytest.approx(2 / 2 ** 8) and "sign test" in eight.rule
    five = V.judge(claim(**ORDER), paired_rows(3.0, 0.1, n=5), [])
    assert five.verdict == V.NOT_SEPARATED and five.tests[0].p == pytest.approx(0.0625)
    assert V.sign_test(10, 0) == pytest.approx(2 / 1024) and V.sign_test(3, 3) == 1.0


def test_paired_auto_pairs_on_every_other_varying_config_column():
    rows = paired_rows(3.0, 1.0)
    v = V.judge(claim(**{**ORDER, "paired": "auto"}), rows, ["width", "depth", "bits", "status"])
    assert "paired on width, depth" in v.rule and v.verdict == V.HOLDS


def test_a_chain_holds_only_when_every_adjacent_pair_holds():
    rows = pd.concat([paired_rows(3.0, 1.0).assign(), paired_rows(3.0, 1.0, seed=1)
                      .query("bits == 4").assign(bits=8, recovery_pct=lambda d: d.recovery_pct - 10)])
    chain = claim(**{**ORDER, "order": [4, 2, 8], "paired": ["width"]})
    v = V.judge(chain, rows, [])
    assert [t.label for t in v.tests] == ["bits 4 > 2", "bits 2 > 8"]
    assert v.tests[0].verdict == V.HOLDS


def test_a_filter_never_decides_silently_the_unfiltered_verdict_rides_along():
    rows = paired_rows(3.0, 1.0)
    # baselines: bits 4 far behind bits 2 when they are included
    base = paired_rows(-30.0, 1.0, n=20, seed=5).assign(correct_every=999, width=lambda d: d.width + 100)
    rows = pd.concat([rows.assign(correct_every=1), base])
    v = V.judge(claim(**ORDER, where="correct_every != 999"), rows, [])
    assert v.verdict == V.HOLDS and v.unfiltered is not None and v.unfiltered.verdict == V.REVERSED
    text = "\n".join(_report_lines([v]))
    assert "without the filter: reversed" in text and "(rows: filter `correct_every != 999`)" in text
    same = V.judge(claim(**ORDER, where="width >= 0"), paired_rows(3.0, 1.0), [])
    assert same.unfiltered is None  # no second verdict when the filter changes nothing


def _report_lines(verdicts):
    from orchestrator.report.page import claim_lines

    return claim_lines(verdicts)


def test_a_failed_precondition_makes_a_claim_untestable_with_the_measured_reason():
    rows = paired_rows(3.0, 1.0).assign(loss_drop_pct=0.4)
    c = claim(**ORDER, requires=[{"metric": "loss_drop_pct", "op": ">=", "value": 1.0,
                                  "why": "the correctors must move the loss by 1 %"}])
    v = V.judge(c, rows, [])
    assert v.verdict == V.UNTESTABLE and v.reason == "the correctors must move the loss by 1 %: mean loss_drop_pct = 0.4, needs >= 1"
    assert V.judge(c, rows.assign(loss_drop_pct=5.0), []).verdict == V.HOLDS


def test_threshold_correlation_and_counts():
    rng = np.random.default_rng(1)
    rows = pd.DataFrame({"recovery_pct": rng.normal(104, 2, 30), "x": np.arange(30.0),
                         "verdict": ["supported"] * 17 + ["unclear"] * 1 + ["refuted"] * 12})
    rows["y"] = -rows["x"] + rng.normal(0, 1, 30)
    t = V.judge(claim(kind="threshold", metric="recovery_pct", op=">", value=100), rows, [])
    assert t.verdict == V.HOLDS and 100 < t.tests[0].low < t.tests[0].estimate < t.tests[0].high
    assert V.judge(claim(kind="threshold", metric="recovery_pct", op="<", value=100), rows, []).verdict == V.REVERSED
    neg = V.judge(claim(kind="correlation", x="x", y="y", sign="negative"), rows, [])
    assert neg.verdict == V.HOLDS and neg.tests[0].estimate < -0.9
    assert V.judge(claim(kind="correlation", x="x", y="y", sign="positive"), rows, []).verdict == V.REVERSED
    few = V.judge(claim(kind="correlation", x="x", y="y", sign="negative"), rows.head(5), [])
    assert few.verdict == V.UNTESTABLE and "fewer than 8 points" in few.reason
    counts = V.judge(claim(kind="counts", column="verdict", expect={"supported": 17, "unclear": 1, "refuted": 0}), rows, [])
    # the seed's most frequent value (supported, 17 here) against its runner-up (unclear, 1 here)
    assert counts.verdict == V.HOLDS and counts.reason == "ours: supported 17 / unclear 1 / refuted 12"


def test_missing_columns_and_empty_selections_are_not_testable():
    assert V.judge(claim(**ORDER), pd.DataFrame({"bits": [2, 4]}), []).verdict == V.UNTESTABLE
    v = V.judge(claim(**ORDER, where="bits > 10"), paired_rows(3.0, 1.0), [])
    assert v.verdict == V.UNTESTABLE and v.reason == "no rows match"


def test_the_report_opens_with_the_claims_table():
    study = Study.model_validate({"name": "s", "workload": "w", "notes": "Commentary kept in the study file.",
                                  "claims": [{"id": "bits_order", "seed": "4-bit > 2-bit: 38.3% vs 25.1%",
                                              "source": SOURCE, **ORDER}]})
    rows = paired_rows(3.0, 1.0).assign(trial_id=lambda d: [f"t{i}" for i in range(len(d))])
    text = markdown(build(study, "fast", rows, draw=False))
    head = text.split("## Claims of the seed")
    assert len(head) == 2 and "Commentary kept in the study file." in head[0]
    line = next(l for l in text.splitlines() if l.startswith("| `bits_order`"))
    assert f"4-bit > 2-bit: 38.3% vs 25.1% ({SOURCE})" in line and line.endswith("| **holds** |")
    assert "1 holds (of 1)" in text


@pytest.mark.parametrize("bad,field,message", [
    ({"column": "nope"}, "claims.0.column", "no column 'nope' in the study's rows"),
    ({"metric": "nope"}, "claims.0.metric", "no column 'nope' in the study's rows"),
    ({"order": [0.1, 0.7]}, "claims.0.order", "lr never takes the value 0.7 in this study"),
    ({"paired": ["nope"]}, "claims.0.paired", "'nope' is not a config column of the study"),
    ({"kind": "threshold"}, "claims.0", "op: required for a threshold claim"),
    ({"source": "the seed"}, "claims.0.source", "String should match pattern"),
    ({"verdict": "holds"}, "claims.0.verdict", "unknown field"),
])
def test_a_bad_claim_is_exit_2_naming_the_file_and_field_before_anything_runs(bad, field, message, write_study, cli,
                                                                             tmp_path):
    good = {"id": "lr_order", "seed": "larger lr, lower loss", "source": SOURCE, "kind": "order", "metric": "loss",
            "column": "lr", "order": [0.1, 0.2], "paired": ["seed"]}
    doc = {"name": "syn", "workload": "synthetic", "fixed": {"steps": 2, "work_units": 1},
           "grid": {"lr": [0.1, 0.2], "seed": [0, 1]}, "claims": [{**good, **bad}]}
    code, out, err = cli("run", write_study(doc), "--scale", "smoke", "--dry-run", "--results", tmp_path / "r")
    assert code == 2 and err.count("\n") == 1, err
    assert field in err and message in err, err
    assert not (tmp_path / "r").exists()
    doc["claims"] = [good]
    assert cli("run", write_study(doc), "--scale", "smoke", "--dry-run", "--results", tmp_path / "r")[0] == 0


def test_scope_is_the_population_and_only_the_filter_is_judged_both_ways():
    rows = pd.concat([paired_rows(3.0, 1.0).assign(task="a"), paired_rows(-3.0, 1.0, seed=3).assign(task="b")])
    v = V.judge(claim(**ORDER, scope="task == 'a'"), rows, [])
    assert v.verdict == V.HOLDS and v.unfiltered is None and v.tests[0].n == 20
    both = V.judge(claim(**ORDER, scope="task == 'a'", where="width < 10"), rows, [])
    assert both.unfiltered is None  # within the scope the filter changes nothing: one verdict


def test_a_rows_metrics_ordered_against_each_other_and_claims_over_an_artifact():
    rng = np.random.default_rng(2)
    rows = pd.DataFrame({"trial_id": [f"t{i}" for i in range(20)], "r_float": rng.normal(0.3, 0.05, 20)})
    rows["r_q4"] = rows["r_float"] - 0.2 + rng.normal(0, 0.02, 20)
    v = V.judge(claim(kind="order", metrics=["r_float", "r_q4"]), rows, [])
    assert v.verdict == V.HOLDS and [t.label for t in v.tests] == ["r_float > r_q4"] and "paired by row" in v.rule
    assert V.judge(claim(kind="order", metrics=["r_q4", "r_float"]), rows, []).verdict == V.REVERSED
    points = pd.DataFrame({"trial_id": [f"t{i % 20}" for i in range(60)], "sub": ["attn", "ffn"] * 30,
                           "r": rng.normal(0.2, 0.05, 60)})
    art = V.judge(claim(kind="threshold", metric="r", op=">", value=0.1, artifact="points"), rows, [],
                  artifacts=lambda name: points)
    assert art.verdict == V.HOLDS and art.tests[0].n == 60
    with pytest.raises(ValueError, match="a order claim over metrics takes no column"):
        claim(kind="order", metrics=["a", "b"], column="bits")


def test_a_claim_value_the_file_has_but_set_narrowed_away_does_not_refuse_the_run(write_study, cli, tmp_path):
    doc = {"name": "syn", "workload": "synthetic", "fixed": {"steps": 2, "work_units": 1},
           "grid": {"lr": [0.1, 0.2], "seed": [0, 1]},
           "claims": [{"id": "lr_order", "seed": "s", "source": SOURCE, "kind": "order", "metric": "loss",
                       "column": "lr", "order": [0.1, 0.2], "paired": ["seed"]}]}
    path = write_study(doc)
    code, out, err = cli("run", path, "--scale", "smoke", "--dry-run", "--results", tmp_path / "r", "--set", "lr=[0.2]")
    assert code == 0, err


def test_no_effect_holds_within_its_margin_and_is_reversed_by_a_real_effect():
    same = dict(kind="equal", metric="recovery_pct", column="bits", values=[2, 4], paired=["width", "depth"], margin=1.0)
    v = V.judge(claim(**same), paired_rows(0.0, 0.5, n=30), [])
    assert v.verdict == V.HOLDS and v.tests[0].label == "bits 2 = 4" and "within +-1" in v.rule
    assert V.judge(claim(**same), paired_rows(3.0, 0.5, n=30), []).verdict == V.REVERSED
    assert V.judge(claim(**same), paired_rows(0.0, 4.0, n=30), []).verdict == V.NOT_SEPARATED
    few = V.judge(claim(**same), paired_rows(0.0, 0.1, n=6), [])
    assert few.verdict == V.NOT_SEPARATED and "cannot show 'the same'" in few.rule
    with pytest.raises(ValueError, match="margin: required"):
        claim(**{**same, "margin": None})


def test_the_html_report_has_the_claims_table_with_both_verdicts():
    from orchestrator.report.html import claims_html

    rows = pd.concat([paired_rows(3.0, 1.0).assign(correct_every=1),
                      paired_rows(-30.0, 1.0, seed=5).assign(correct_every=999, width=lambda d: d.width + 100)])
    v = V.judge(claim(**ORDER, scope="width >= 0", where="correct_every != 999"), rows, [])
    page = claims_html([v])
    assert "rows: scope width &gt;= 0; filter correct_every != 999" in page
    assert "<b>holds (without the filter: reversed)</b>" in page and page.count("<tr>") == 2
