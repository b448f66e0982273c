"""Small hand-made results for the report tests: trial rows (and per-trial artifacts) written
through a StudyStore exactly as a run writes them, with a study.json, so `overnight report` reads
them like any results location (a local path or an s3:// URI)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from orchestrator.results import layout as L
from orchestrator.results.dataset import StudyStore

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
ARCHS = [(32, 2), (32, 4), (64, 2)]
SEEDS = [1, 2, 3]
VERDICTS = ["supported", "unclear", "refuted"]


def bucket(k: int, n_points: int) -> str:
    r = k / (n_points - 1) if n_points > 1 else 0.0
    return "early" if r < 1 / 3 else ("mid" if r < 2 / 3 else "late")


def geometry_like(seed: int = 0) -> tuple[list[dict], dict[str, list[dict]]]:
    """Rows of 9 settings (3 architectures x 3 seeds) with verdict columns, and their q1_points
    artifacts (P = 2 n_layers points each: 2*(2+4+2)*3 = 48 points)."""
    rng = np.random.default_rng(seed)
    rows, points = [], {}
    for i, ((d, n_layers), s) in enumerate((a, s) for a in ARCHS for s in SEEDS):
        tid = f"g{i:02d}"
        rows.append({"trial_id": tid, "status": "completed", "d_model": d, "n_layers": n_layers, "seed": s,
                     "q1_verdict": VERDICTS[int(rng.integers(1, 3))], "q2_verdict_correct": VERDICTS[int(rng.integers(0, 2))],
                     "q1_verdict_residual_map": VERDICTS[int(rng.integers(0, 3))],
                     "q2_verdict_legacy": VERDICTS[int(rng.integers(0, 3))],
                     "spearman_score_q4": float(rng.uniform(-1, 0)), "loss_gain": float(rng.normal(0.1, 0.05))})
        P = 2 * n_layers
        points[tid] = [{"point_index": k, "relative_depth": k / (P - 1), "depth_bucket": bucket(k, P),
                        "sub_layer": "attn" if k % 2 == 0 else "ffn", "R_lin_float": float(rng.uniform(0.1, 0.9)),
                        "R_lin_q4": float(rng.normal(0.05 * k - 0.2, 0.3)),
                        "R_lin_q4_residual": float(rng.normal(0.05 * k, 0.3)),
                        "correctability_score": float(rng.uniform(0, 1))} for k in range(P)]
    return rows, points


def write_study(location: str, name: str, rows: list[dict], artifacts: dict[str, dict[str, list[dict]]] | None = None,
                report: list[dict] | None = None, scale: str = "fast", workload: str = "synthetic",
                extra_ids: int = 0, grid: dict[str, list] | None = None) -> StudyStore:
    """A results location with these rows (and artifacts: name -> trial_id -> rows) and a study.json
    whose study has this ``report`` section (and ``grid``: its config columns); ``extra_ids`` trials
    without a row (unfinished)."""
    store = StudyStore(location)
    for i, row in enumerate(rows):
        full = {"study": name, "scale": scale, "started_at": T0 + timedelta(minutes=i),
                "finished_at": T0 + timedelta(minutes=i, seconds=30), "wall_s": 30.0, "error": "", **row}
        store.write_table(L.trial_row(row["trial_id"]), pa.Table.from_pylist([full]))
    for art, per_trial in (artifacts or {}).items():
        for tid, recs in per_trial.items():
            store.write_artifact(art, tid, recs)
    ids = [r["trial_id"] for r in rows] + [f"unfinished{i}" for i in range(extra_ids)]
    study = {"name": name, "workload": workload, "grid": grid or {}, "report": report or []}
    store.write_manifest({"study": study, "scale": scale,
                          "trials": [{"trial_id": t, "config": {}} for t in ids]})
    return store


LADDER_GRID = {"alpha": [0.0, 1.0], "depth": [2, 4], "method": ["dfa", "sb", "cb", "bp"], "seed": [0, 1]}


def ladder_rows(seed: int = 0) -> list[dict[str, Any]]:
    """credit_ladder-like rows: alpha x depth x method x seed, with known method means."""
    base = {"dfa": 0.1, "sb": 0.4, "cb": 0.5, "bp": 1.0}
    out = []
    for alpha in (0.0, 1.0):
        for depth in (2, 4):
            for m, g in base.items():
                for s, jitter in ((0, -0.01), (1, 0.01)):
                    gg = g * 2 / depth if m != "bp" else 1.0
                    if alpha == 0.0 and m == "sb":
                        gg *= 2
                    out.append({"trial_id": f"c{len(out):03d}", "status": "completed", "alpha": alpha, "depth": depth,
                                "method": m, "seed": s, "gamma": gg + jitter, "rho": gg, "test_acc": 0.5})
    return out
