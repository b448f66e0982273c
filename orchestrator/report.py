"""Tables a study declares (``report:`` in its YAML), computed from the Parquet rows, as Markdown."""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import pandas as pd

from orchestrator.progress import fmt_duration
from orchestrator.rows import COMPLETED, FAILED, count_statuses
from orchestrator.spec import ReportTable, Study

_SHARE = re.compile(r"^share([<>]=?)(-?\d+(?:\.\d+)?)$")


def markdown_table(df: pd.DataFrame, decimals: int = 2, keys: Sequence[str] = ()) -> str:
    """Pipe table; ``keys`` columns (group labels, config values) are printed as they are,
    the others rounded to ``decimals``."""
    if df.empty:
        return "_(no rows)_"
    cols = [str(c) for c in df.columns]

    def cell(v: Any, as_key: bool) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            return "–"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float) and not as_key:
            return f"{v:.{decimals}f}"
        if isinstance(v, float) and v == int(v):
            return str(int(v)) if abs(v) < 1e15 else str(v)
        return str(v).replace("|", "\\|")

    is_key = [c in set(keys) for c in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for rec in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v, k) for v, k in zip(rec, is_key)) + " |")
    return "\n".join(lines)


def _stat(series: pd.Series, stat: str) -> float:
    s = pd.to_numeric(series, errors="coerce").dropna()
    if stat == "n":
        return int(s.size)
    if s.empty:
        return float("nan")
    m = _SHARE.match(stat)
    if m:
        op, x = m.group(1), float(m.group(2))
        hit = {">": s > x, ">=": s >= x, "<": s < x, "<=": s <= x}[op]
        return float(100.0 * hit.mean())
    if stat == "std":
        return float(s.std(ddof=1)) if s.size > 1 else float("nan")
    if stat == "sem":
        return float(s.std(ddof=1) / math.sqrt(s.size)) if s.size > 1 else float("nan")
    return float(getattr(s, stat)())


def _stat_label(stat: str) -> str:
    m = _SHARE.match(stat)
    return f"% {m.group(1)} {m.group(2)}" if m else stat


def table(rows: pd.DataFrame, spec: ReportTable) -> tuple[pd.DataFrame, list[str]]:
    """The table and any notes (missing columns, empty selection)."""
    notes: list[str] = []
    df = rows
    if spec.where:
        try:
            df = df.query(spec.where, engine="python")
        except Exception as e:  # noqa: BLE001 - a bad filter is reported, not fatal
            return pd.DataFrame(), [f"filter `{spec.where}` failed: {type(e).__name__}: {e}"]
    needed = list(spec.by) + list(spec.values) + (list(spec.columns or []))
    if spec.best:
        needed += [spec.best.metric] + list(spec.best.by)
    missing = [c for c in dict.fromkeys(needed) if c not in df.columns]
    if missing:
        return pd.DataFrame(), [f"no column {', '.join(missing)} in the results yet"]
    if df.empty:
        return pd.DataFrame(), ["no rows match"]
    if spec.best:
        b = spec.best
        ranked = df.assign(_m=pd.to_numeric(df[b.metric], errors="coerce")).dropna(subset=["_m"])
        ranked = ranked.sort_values("_m", ascending=(b.mode == "min"), kind="stable")
        top = ranked.groupby(b.by, sort=True, dropna=False).head(b.top) if b.by else ranked.head(b.top)
        top = top.sort_values(b.by + ["_m"], ascending=[True] * len(b.by) + [b.mode == "min"]) if b.by else top
        cols = [c for c in b.by if c not in (spec.columns or [])] + (spec.columns or [b.metric])
        return top[cols].reset_index(drop=True), notes
    records = []
    groups = df.groupby(spec.by, sort=True, dropna=False) if spec.by else [((), df)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        rec: dict[str, Any] = dict(zip(spec.by, key))
        for v in spec.values:
            for s in spec.stats:
                label = _stat_label(s) if len(spec.values) == 1 else f"{v} {_stat_label(s)}"
                rec[label] = _stat(g[v], s)
        records.append(rec)
    out = pd.DataFrame.from_records(records)
    for c in out.columns:  # keep counts integral
        if c.endswith(" n") or c == "n":
            out[c] = out[c].astype("Int64")
    return out, notes


def config_keys(study: Study) -> set[str]:
    keys = set(study.fixed) | set(study.grid) | {k for rows in study.zip.values() for k in rows[0]}
    for v in study.variants:
        keys |= set(v.fixed) | set(v.grid) | {k for rows in v.zip.values() for k in rows[0]}
    return keys


def render(study: Study, scale: str, rows: pd.DataFrame, total: int | None = None) -> str:
    n = len(rows)
    labels = config_keys(study)
    counts = count_statuses(rows["status"] if n else [])
    completed = rows[rows["status"] == COMPLETED] if n else rows
    lines = [f"# {study.name} — {scale} scale", ""]
    if study.description:
        lines += [study.description, ""]
    summary = "Trials: " + ", ".join(f"{v} {k}" for k, v in counts.items())
    if total is not None and total > n:
        summary += f", {total - n} not finished (partial report)"
    lines.append(summary + f". Workload `{study.workload}`.")
    if n and {"wall_s", "started_at", "finished_at"} <= set(rows.columns):
        span = (pd.to_datetime(rows["finished_at"]).max() - pd.to_datetime(rows["started_at"]).min()).total_seconds()
        lines.append(f"Compute: {fmt_duration(float(rows['wall_s'].sum()))} of trial time; "
                     f"first start to last finish {fmt_duration(span)}.")
    lines.append("")
    for spec in study.report:
        df, notes = table(completed, spec)
        lines += [f"## {spec.title}", ""]
        if spec.note:
            lines += [spec.note, ""]
        if spec.where:
            lines += [f"_Rows: `{spec.where}`_", ""]
        keys = list(spec.by) + (list(spec.best.by) if spec.best else [])
        if spec.best:  # config columns of best-row tables are labels, not measurements
            keys += [c for c in df.columns if c in labels]
        lines += [markdown_table(df, spec.decimals, keys) if not df.empty else f"_({'; '.join(notes) or 'no rows'})_", ""]
    if counts[FAILED]:
        failed = rows[rows["status"] == FAILED].head(10)
        lines += ["## Failed trials", ""]
        lines += [f"- `{r.trial_id}`: {str(r.error).splitlines()[0][:300]}" for r in failed.itertuples()]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
