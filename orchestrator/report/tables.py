"""The numbers of a report: the rows a table or plot reads (trial rows, or a per-trial artifact
joined with its trial's row, then the ``where`` filter), the statistics, and the table kinds a
study declares — grouped statistics, best rows, pivot, compare (ratios or differences between
groups) and count-by-value. Rendering (Markdown, HTML, plots) is elsewhere."""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from orchestrator.study.report_schema import ReportPlot, ReportTable, stat_columns

_SHARE = re.compile(r"^(share|count)([<>]=?)(-?\d+(?:\.\d+)?)$")
_CORR = re.compile(r"^(spearman|pearson):(.+)$")
_OPS = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal}

Artifacts = Callable[[str], pd.DataFrame]  # artifact name -> its rows (every trial's part files)


# ---------------------------------------------------------------------------- statistics
def numeric(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce")


def stat(frame: pd.DataFrame, column: str, name: str) -> float:
    """One statistic of ``column`` over ``frame``'s rows; NaN values are left out (``n`` counts
    the others). share>X is a percentage, count>X a number of rows; spearman:COL / pearson:COL
    correlate the column with COL over the rows where both are numbers."""
    corr = _CORR.match(name)
    if corr:
        return _correlation(frame[column], frame[corr.group(2)], corr.group(1))
    s = numeric(frame[column]).dropna()
    if name == "n":
        return int(s.size)
    m = _SHARE.match(name)
    if m:
        hit = _OPS[m.group(2)](s.to_numpy(), float(m.group(3)))
        if m.group(1) == "count":
            return int(hit.sum())
        return float(100.0 * hit.mean()) if s.size else float("nan")
    if s.empty:
        return float("nan")
    if name == "std":
        return float(s.std(ddof=1)) if s.size > 1 else float("nan")
    if name == "sem":
        return float(s.std(ddof=1) / math.sqrt(s.size)) if s.size > 1 else float("nan")
    return float(getattr(s, name)())


def _correlation(a: pd.Series, b: pd.Series, method: str) -> float:
    both = pd.DataFrame({"a": numeric(a), "b": numeric(b)}).dropna()
    return correlation(both["a"].to_numpy(float), both["b"].to_numpy(float), method)


def correlation(x: np.ndarray, y: np.ndarray, method: str) -> float:
    """Spearman (Pearson on average ranks: pandas' own spearman needs scipy) or Pearson of two
    arrays of numbers; NaN with fewer than 2 points or a constant side."""
    if len(x) < 2 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return float("nan")
    if method == "spearman":
        x, y = pd.Series(x).rank(method="average").to_numpy(), pd.Series(y).rank(method="average").to_numpy()
    return float(np.corrcoef(x, y)[0, 1])


def stat_label(name: str) -> str:
    m = _SHARE.match(name)
    if m:
        return f"{'%' if m.group(1) == 'share' else 'n'} {m.group(2)} {m.group(3)}"
    return name


def _is_count(name: str) -> bool:
    return name == "n" or name.startswith("count")


# ---------------------------------------------------------------------------- rows
def needed(spec: ReportTable | ReportPlot) -> list[str]:
    """The columns a table or plot reads."""
    if isinstance(spec, ReportPlot):
        return [c for c in dict.fromkeys([spec.x, spec.y, spec.value, spec.hue, spec.facet]) if c]
    cols = list(spec.by) + list(spec.values) + list(spec.columns or []) + list(spec.count)
    cols += stat_columns(spec.stats) + ([spec.pivot] if spec.pivot else [])
    if spec.best:
        cols += [spec.best.metric] + list(spec.best.by)
    if spec.compare:
        cols += [spec.compare.column] + list(spec.compare.over) + stat_columns([spec.compare.of])
    return list(dict.fromkeys(cols))


def select(rows: pd.DataFrame, spec: ReportTable | ReportPlot,
           artifacts: Artifacts | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The rows a table or plot reads (completed trial rows in, artifact rows joined with them if
    it names an artifact, then ``where``), or an empty frame and why."""
    df = rows
    if spec.artifact:
        points = artifacts(spec.artifact) if artifacts else None
        if points is None or points.empty or "trial_id" not in points.columns:
            return pd.DataFrame(), [f"no artifact {spec.artifact!r} in the results"]
        own = [c for c in rows.columns if c == "trial_id" or c not in points.columns]
        df = points.merge(rows[own], on="trial_id", how="inner")
    if spec.where:
        try:
            df = df.query(spec.where, engine="python")
        except Exception as e:  # noqa: BLE001 - a bad filter is reported, not fatal
            return pd.DataFrame(), [f"filter `{spec.where}` failed: {type(e).__name__}: {e}"]
    missing = [c for c in needed(spec) if c not in df.columns]
    if missing:
        return pd.DataFrame(), [f"no column {', '.join(missing)} in the results yet"]
    if df.empty:
        return pd.DataFrame(), ["no rows match"]
    return df, []


def order_rows(df: pd.DataFrame, keys: Sequence[str], order: dict[str, list[Any]]) -> pd.DataFrame:
    """Sort by ``keys``; a key listed in ``order`` sorts in that order (other values after)."""
    keys = [k for k in keys if k in df.columns]
    if df.empty or not keys:
        return df.reset_index(drop=True)

    def key(col: pd.Series) -> pd.Series:
        if col.name not in order:
            return col
        rank = {v: i for i, v in enumerate(order[col.name])}
        return col.map(lambda v: rank.get(v, len(rank)))

    return df.sort_values(keys, kind="stable", key=key).reset_index(drop=True)


def ordered_values(values: pd.Series, order: list[Any] | None) -> list[Any]:
    """The distinct values of a column, in ``order`` first, the rest sorted."""
    seen = list(pd.unique(values.dropna()))
    try:
        seen.sort()
    except TypeError:
        seen.sort(key=str)
    first = [v for v in (order or []) if any(v == s for s in seen)]
    return first + [s for s in seen if not any(s == v for v in first)]


def groups(df: pd.DataFrame, by: Sequence[str]):
    """(key tuple, frame) per group of ``by`` (one group of everything when ``by`` is empty)."""
    if not by:
        yield (), df
        return
    for key, g in df.groupby(list(by), sort=True, dropna=False):
        yield (key if isinstance(key, tuple) else (key,)), g


# ---------------------------------------------------------------------------- table kinds
def grouped(df: pd.DataFrame, spec: ReportTable) -> pd.DataFrame:
    """One row per group (``layout: wide``, a column per value x stat) or per group and value
    (``layout: long``, a ``value`` column and a column per stat)."""
    records = []
    for key, g in groups(df, spec.by):
        rec: dict[str, Any] = dict(zip(spec.by, key))
        if spec.layout == "long":
            records += [{**rec, "value": v, **{stat_label(s): stat(g, v, s) for s in spec.stats}} for v in spec.values]
            continue
        for v in spec.values:
            for s in spec.stats:
                label = stat_label(s) if len(spec.values) == 1 else f"{v} {stat_label(s)}"
                rec[label] = stat(g, v, s)
        records.append(rec)
    return _integral(pd.DataFrame.from_records(records), spec.stats, spec.values)


def _integral(out: pd.DataFrame, stats: Sequence[str], values: Sequence[str]) -> pd.DataFrame:
    """Counts stay whole numbers."""
    labels = {stat_label(s) for s in stats if _is_count(s)}
    for c in out.columns:
        if c in labels or any(c == f"{v} {lab}" for v in values for lab in labels):
            out[c] = out[c].astype("Int64")
    return out


def best(df: pd.DataFrame, spec: ReportTable) -> pd.DataFrame:
    b = spec.best
    assert b is not None  # called for a table with best:
    ranked = df.assign(_m=numeric(df[b.metric])).dropna(subset=["_m"])
    ranked = ranked.sort_values("_m", ascending=(b.mode == "min"), kind="stable")
    top = ranked.groupby(b.by, sort=True, dropna=False).head(b.top) if b.by else ranked.head(b.top)
    if b.by:
        top = top.sort_values(b.by + ["_m"], ascending=[True] * len(b.by) + [b.mode == "min"], kind="stable")
        top = order_rows(top, b.by, spec.order) if spec.order else top  # stable: ranks stay within a group
    cols = [c for c in b.by if c not in (spec.columns or [])] + (spec.columns or [b.metric])
    return top[cols].reset_index(drop=True)


def pivot(df: pd.DataFrame, spec: ReportTable) -> pd.DataFrame:
    """Rows ``by``; one column per value of ``pivot`` (for each value x stat)."""
    assert spec.pivot is not None  # called for a table with pivot:
    across = ordered_values(df[spec.pivot], spec.order.get(spec.pivot))
    records = []
    for key, g in groups(df, spec.by):
        rec: dict[str, Any] = dict(zip(spec.by, key))
        for v in spec.values:
            for s in spec.stats:
                for p in across:
                    parts = ([v] if len(spec.values) > 1 else []) + ([stat_label(s)] if len(spec.stats) > 1 else [])
                    rec[" ".join(parts + [text(p)])] = stat(g[g[spec.pivot] == p], v, s)
        records.append(rec)
    out = pd.DataFrame.from_records(records)
    if len(spec.stats) == 1 and _is_count(spec.stats[0]):
        out[[c for c in out.columns if c not in spec.by]] = out[[c for c in out.columns if c not in spec.by]].astype("Int64")
    return order_rows(out, spec.by, spec.order)


def compare(df: pd.DataFrame, spec: ReportTable) -> pd.DataFrame:
    """Per cell (``by`` + ``over``): the ``of`` statistic of each value for one side of each pair,
    divided by (or minus) the other's; with ``over``, ``stats`` of those per-cell numbers."""
    c = spec.compare
    assert c is not None  # called for a table with compare:
    cells = list(spec.by) + list(c.over)
    records = []
    for key, g in groups(df, cells):
        rec: dict[str, Any] = dict(zip(cells, key))
        for a, b in c.pairs:
            ga, gb = g[g[c.column] == a], g[g[c.column] == b]
            for v in spec.values:
                rec[_pair_label(v, a, b, c.op)] = _versus(stat(ga, v, c.of), stat(gb, v, c.of), c.op, c.floor)
        records.append(rec)
    per_cell = pd.DataFrame.from_records(records)
    if not c.over:
        return order_rows(per_cell, spec.by, spec.order)
    cols = [col for col in per_cell.columns if col not in cells]
    out = []
    for key, g in groups(per_cell, spec.by):
        rec = dict(zip(spec.by, key))
        rec.update({f"{col} {stat_label(s)}": stat(g, col, s) for col in cols for s in spec.stats})
        out.append(rec)
    return order_rows(_integral(pd.DataFrame.from_records(out), spec.stats, cols), spec.by, spec.order)


def _pair_label(value: str, a: Any, b: Any, op: str) -> str:
    return f"{value} {text(a)}{'/' if op == 'ratio' else '-'}{text(b)}"


def _versus(a: float, b: float, op: str, floor: float) -> float:
    if any(isinstance(x, float) and math.isnan(x) for x in (a, b)):
        return float("nan")
    if op == "difference":
        return float(a - b)
    return float(a / b) if b > floor else float("nan")  # a ratio to about zero says nothing


def count(df: pd.DataFrame, spec: ReportTable) -> pd.DataFrame:
    """Rows ``by``; per counted column, the number of rows with each of its values, then n."""
    records = []
    seen = {col: ordered_values(df[col], spec.order.get(col)) for col in spec.count}
    for key, g in groups(df, spec.by):
        rec: dict[str, Any] = dict(zip(spec.by, key))
        for col in spec.count:
            for v in seen[col]:
                rec[text(v) if len(spec.count) == 1 else f"{col}={text(v)}"] = int((g[col] == v).sum())
        rec["n"] = len(g)
        records.append(rec)
    out = pd.DataFrame.from_records(records)
    for col in out.columns[len(spec.by):]:
        out[col] = out[col].astype("Int64")
    return order_rows(out, spec.by, spec.order)


def text(v: Any) -> str:
    """A value as a label (column names, plot legends): a whole float without its ".0"."""
    if isinstance(v, float) and v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return str(v)


KINDS = {"grouped": grouped, "best": best, "pivot": pivot, "compare": compare, "count": count}


def table(rows: pd.DataFrame, spec: ReportTable, artifacts: Artifacts | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The table and any notes (missing columns, empty selection)."""
    df, notes = select(rows, spec, artifacts)
    if notes:
        return df, notes
    out = KINDS[spec.kind](df, spec)
    if spec.kind == "grouped" and spec.order:
        out = order_rows(out, spec.by, spec.order)
    return out, []


def key_columns(spec: ReportTable, df: pd.DataFrame, labels: set[str]) -> list[str]:
    """Columns printed as they are (group labels, config values), not rounded as measurements."""
    keys = list(spec.by) + (list(spec.best.by) if spec.best else []) + (["value"] if spec.layout == "long" else [])
    if spec.best:  # config columns of best-row tables are labels, not measurements
        keys += [c for c in df.columns if c in labels]
    return list(dict.fromkeys(keys))
