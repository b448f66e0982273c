"""Seed-004 tables that compare methods with each other (ratios), from the rows of a ladder study.

The study YAML's report format groups and aggregates; it cannot put two methods' means side by side
and divide them. These tables do, reading the trial Parquet files directly:

    .venv/bin/python -m workloads.creditbridge.tables results/credit_ladder/fast
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

NON_BP = ("dfa", "sb", "cb")


def load_rows(results_dir: str | Path) -> pd.DataFrame:
    files = sorted(Path(results_dir).glob("trials/*.parquet"))
    if not files:
        raise FileNotFoundError(f"no trials/*.parquet under {results_dir}")
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return df[df["status"] == "completed"] if "status" in df else df


def means(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean Gamma, rho and accuracy per (keys..., method), methods as columns: ('gamma', 'cb') etc."""
    m = rows.groupby(keys + ["method"])[["gamma", "rho", "test_acc"]].mean()
    return m.unstack("method")


def ratio(num: pd.Series, den: pd.Series, floor: float = 0.01) -> pd.Series:
    """num / den where den is clearly positive, else NaN (a ratio to ~0 says nothing)."""
    return (num / den).where(den > floor)


def fmt(v: float, d: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{d}f}"


def ratio_range(s: pd.Series) -> str:
    s = s.dropna()
    if s.empty:
        return "–"
    lo, hi = s.min(), s.max()
    return f"{lo:.2f}x" if abs(hi - lo) < 0.005 else f"{lo:.2f} to {hi:.2f}x"


def ratios_by_alpha(rows: pd.DataFrame) -> str:
    """The seed's key table: per alpha, the range over depths of CB/SB (Gamma, rho) and CB/DFA (rho)."""
    m = means(rows, ["alpha", "depth"])
    lines = ["| alpha | CB/SB on Gamma | CB/SB on rho | CB/DFA on rho | CB/DFA on Gamma |",
             "|---|---|---|---|---|"]
    for alpha, g in m.groupby(level="alpha"):
        lines.append("| " + " | ".join([
            f"{alpha:g}",
            ratio_range(ratio(g[("gamma", "cb")], g[("gamma", "sb")])),
            ratio_range(ratio(g[("rho", "cb")], g[("rho", "sb")])),
            ratio_range(ratio(g[("rho", "cb")], g[("rho", "dfa")])),
            ratio_range(ratio(g[("gamma", "cb")], g[("gamma", "dfa")])),
        ]) + " |")
    return "\n".join(lines)


def by_depth(rows: pd.DataFrame, alpha: float = 1.0) -> str:
    """Gamma and rho of DFA, SB, CB by depth at one alpha (the seed's alpha = 1 table)."""
    sel = rows[np.isclose(rows["alpha"].astype(float), alpha)]
    m = means(sel, ["depth"])
    head = "| L | " + " | ".join(f"{k.upper()} Gamma" for k in NON_BP) + " | " + \
           " | ".join(f"{k.upper()} rho" for k in NON_BP) + " |"
    lines = [head, "|---" * 7 + "|"]
    for depth, r in m.iterrows():
        cells = [fmt(r.get(("gamma", k), np.nan)) for k in NON_BP] + [fmt(r.get(("rho", k), np.nan)) for k in NON_BP]
        lines.append(f"| {depth} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def directions(rows: pd.DataFrame) -> str:
    """The seed's qualitative claims, checked one cell at a time (means over seeds)."""
    m = means(rows, ["alpha", "depth"])
    out = []
    if 1.0 in m.index.get_level_values("alpha"):
        a1 = m.xs(1.0, level="alpha")
        wins = (a1[("rho", "cb")] > a1[("rho", "dfa")])
        out.append(f"- CB > DFA on rho at alpha = 1: {int(wins.sum())} of {len(wins)} depths")
        wins = (a1[("gamma", "cb")] > a1[("gamma", "sb")])
        out.append(f"- CB > SB on Gamma at alpha = 1: {int(wins.sum())} of {len(wins)} depths")
    if 0.0 in m.index.get_level_values("alpha"):
        a0 = m.xs(0.0, level="alpha")
        wins = (a0[("gamma", "sb")] >= a0[("gamma", "cb")])
        out.append(f"- SB >= CB on Gamma at alpha = 0: {int(wins.sum())} of {len(wins)} depths")
    depths = sorted(rows["depth"].unique())
    if len(depths) > 1:
        for k in NON_BP:
            g = rows[rows["method"] == k].groupby("depth")["gamma"].mean()
            if len(g) > 1:
                out.append(f"- {k.upper()} Gamma from L = {depths[0]} to L = {depths[-1]} (mean over alphas): "
                           f"{g.iloc[0]:.3f} -> {g.iloc[-1]:.3f} ({'lower' if g.iloc[-1] < g.iloc[0] else 'not lower'})")
    return "\n".join(out)


def render(rows: pd.DataFrame) -> str:
    parts = ["## Ratios between methods by alpha (range over depths of the ratio of seed means)", "",
             ratios_by_alpha(rows), "",
             "## alpha = 1 by depth (means over seeds)", "", by_depth(rows, 1.0), "",
             "## The seed's directions, cell by cell", "", directions(rows), ""]
    return "\n".join(parts)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m workloads.creditbridge.tables RESULTS/credit_ladder/<scale>")
    print(render(load_rows(sys.argv[1])))
