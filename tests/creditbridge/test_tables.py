"""Ratio tables between methods, on rows with known means."""
from __future__ import annotations

import pandas as pd

from workloads.creditbridge import tables


def rows() -> pd.DataFrame:
    recs = []
    gam = {"dfa": 0.1, "sb": 0.4, "cb": 0.5, "bp": 1.0}
    for alpha in (0.0, 1.0):
        for depth in (2, 4):
            for m, g in gam.items():
                for seed, jitter in ((0, -0.01), (1, 0.01)):
                    gg = g / depth * 2 if m != "bp" else 1.0
                    if alpha == 0.0 and m == "sb":
                        gg *= 2
                    recs.append(dict(alpha=alpha, depth=depth, method=m, seed=seed, gamma=gg + jitter,
                                     rho=gg, test_acc=0.5, status="completed"))
    return pd.DataFrame(recs)


def test_ratio_table_divides_method_means():
    text = tables.ratios_by_alpha(rows())
    lines = text.splitlines()
    assert lines[2].startswith("| 0 |") and "0.62x" in lines[2]        # CB/SB = 0.5 / 0.8
    assert lines[3].startswith("| 1 |") and "1.25x" in lines[3]        # CB/SB = 0.5 / 0.4
    assert "5.00x" in lines[3]                                         # CB/DFA on rho


def test_ratio_to_about_zero_is_left_out():
    s = tables.ratio(pd.Series([0.5, 0.5]), pd.Series([0.2, 0.001]))
    assert s.iloc[0] == 2.5 and pd.isna(s.iloc[1])


def test_directions_are_checked_cell_by_cell():
    text = tables.directions(rows())
    assert "CB > DFA on rho at alpha = 1: 2 of 2 depths" in text
    assert "SB >= CB on Gamma at alpha = 0: 2 of 2 depths" in text
    assert "DFA Gamma from L = 2 to L = 4" in text and "(lower)" in text


def test_render_reads_trial_files(tmp_path):
    (tmp_path / "trials").mkdir()
    df = rows()
    for i, (_, r) in enumerate(df.iterrows()):
        pd.DataFrame([r]).to_parquet(tmp_path / "trials" / f"{i:04d}.parquet")
    out = tables.render(tables.load_rows(tmp_path))
    assert "alpha = 1 by depth" in out and "| 4 |" in out
