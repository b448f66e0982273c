"""The seed-002 summary pooled over quantization points, read from a geometry results directory
(trial rows + the ``q1_points`` / ``q2_variants`` artifacts). The study report (YAML tables) works
on trial rows, one per setting, so it can only average per-setting statistics; this pools the 156
points the way the seed's report does.

    python -m workloads.geometry.summary results/geometry/fast [--out summary.md]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from .q1 import spearman
from .q2 import VARIANTS


def _read(dirpath: Path) -> pd.DataFrame:
    files = sorted(p for p in dirpath.glob("*.parquet") if not p.name.startswith("."))
    return pd.concat([pd.read_parquet(p) for p in files], ignore_index=True) if files else pd.DataFrame()


def load(results: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rows = _read(results / "trials")
    if rows.empty:
        raise SystemExit(f"no trial rows under {results}/trials")
    rows = rows[rows["status"] == "completed"]
    cfg = rows[["trial_id", "seed", "d_model", "n_layers"]]
    points = _read(results / "artifacts" / "q1_points").merge(cfg, on="trial_id")
    variants = _read(results / "artifacts" / "q2_variants").merge(cfg, on="trial_id")
    return rows, points, variants


def _fmt(v: float, d: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{d}f}"


def _profile(x: pd.Series) -> str:
    x = x.astype(float)
    return f"mean {_fmt(x.mean())}, median {_fmt(x.median())}, positive {_fmt(100 * (x > 0).mean(), 1)}% (n={len(x)})"


def render(rows: pd.DataFrame, points: pd.DataFrame, variants: pd.DataFrame) -> str:
    out = [f"Settings: {len(rows)}; quantization points pooled: {len(points)}.", ""]
    vc = lambda col: ", ".join(f"{k} {v}" for k, v in rows[col].value_counts().sort_index().items())  # noqa: E731
    out += [f"- Q1 verdicts: {vc('q1_verdict')} (residual-map control: {vc('q1_verdict_residual_map')})",
            f"- Q2 verdicts: correct baseline {vc('q2_verdict_correct')}; legacy baseline {vc('q2_verdict_legacy')}", ""]
    out += ["Pooled per-point R_lin:", ""]
    for col in ("R_lin_float", "R_lin_q4", "R_lin_q4_residual"):
        x = points[col].astype(float)
        out.append(f"- {col}: mean {_fmt(x.mean())}, median {_fmt(x.median())}, positive {_fmt(100 * (x > 0).mean(), 1)}%, "
                   f"> 0.2: {_fmt(100 * (x > 0.2).mean(), 1)}%")
    sc = points["correctability_score"].astype(float)
    out += ["", f"- Spearman(score, R_lin_q4) pooled over points: {_fmt(spearman(sc, points['R_lin_q4']))}; "
            f"Spearman(score, R_lin_float): {_fmt(spearman(sc, points['R_lin_float']))}",
            f"- per setting (mean over settings): {_fmt(rows['spearman_score_q4'].mean())} and "
            f"{_fmt(rows['spearman_score_float'].mean())}", ""]
    out += ["Depth profile of R_lin_q4 (tertiles of k/(P-1)):", ""]
    for b in ("early", "mid", "late"):
        out.append(f"- {b}: {_profile(points.loc[points['depth_bucket'] == b, 'R_lin_q4'])}")
    out += ["", "Sub-layer profile of R_lin_q4:", ""]
    for s in ("attn", "ffn"):
        out.append(f"- {s}: {_profile(points.loc[points['sub_layer'] == s, 'R_lin_q4'])}")
    out += ["", "Q2 (means over settings):", ""]
    g = rows["q2_mse_gain"].astype(float) * 100
    out.append(f"- features_only vs embedding_only held-out MSE gain: mean {_fmt(g.mean(), 1)}%, median "
               f"{_fmt(g.median(), 1)}%, range {_fmt(g.min(), 1)}..{_fmt(g.max(), 1)}%")
    best = rows["q2_best_mse_variant"].value_counts()
    out.append("- best held-out MSE variant: " + ", ".join(f"{k} {v}/{len(rows)}" for k, v in best.items()))
    for base in ("correct", "legacy"):
        out.append(f"- mean loss_gain vs the {base} baseline: " + ", ".join(
            f"{v} {_fmt(variants[f'loss_gain_{base}'][variants['variant'] == v].astype(float).mean(), 4)}"
            for v in VARIANTS))
    neg = rows[rows["loss_gain_correct_features_only"] < 0]
    out.append(f"- settings where features_only has a negative gain (correct baseline): {len(neg)}"
               + (" — " + ", ".join(f"({r.d_model},{r.n_layers}) seed {r.seed}" for r in neg.itertuples()) if len(neg) else ""))
    out += ["", "Per architecture:", "", "| d_model | n_layers | Q1 verdicts | Q2 verdicts (correct) | Q2 verdicts (legacy) |",
            "|---|---|---|---|---|"]
    for (d, L), grp in rows.groupby(["d_model", "n_layers"]):
        c = lambda col: ", ".join(f"{k} {v}/{len(grp)}" for k, v in grp[col].value_counts().sort_index().items())  # noqa: E731
        out.append(f"| {d} | {L} | {c('q1_verdict')} | {c('q2_verdict_correct')} | {c('q2_verdict_legacy')} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="results directory of one scale, e.g. results/geometry/fast")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    text = render(*load(Path(a.results)))
    print(text, end="")
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
