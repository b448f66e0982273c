"""One definition of a study per report. A results folder keeps the rows of every run, but a run
with a changed fixed value, a removed grid value or a new workload version defines another study:
its trial ids differ, and the rows of the earlier definition must not be averaged with the new
ones. study.json lists the trials of the current definition (``trials``; ``earlier``: the others
seen there, with their workload version), and `overnight status`, the report and
``overnight.load`` tabulate only those trials' rows by default. The other rows are *kept aside*
and named by how they differ from the current study, computed from the rows themselves: the
config columns whose values the current study never uses (``12 rows with steps = 3``), or the
workload version. ``--all-rows`` includes them, labelled in a ``definition`` column
(``current``, or how the row differs)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from orchestrator.results.rows import count_statuses

CURRENT = "current"      # the definition label of the current study's rows
COLUMN = "definition"    # the column that labels rows with --all-rows
SHOWN = 6                # kinds of kept-aside rows named in one line


@dataclass
class Group:
    """Rows not in the current study that differ from it in the same way."""
    label: str           # "steps = 3", "workload version 1, lr = 0.4"
    rows: pd.DataFrame


@dataclass
class View:
    rows: pd.DataFrame                  # what to tabulate: the current trials' rows, or every row (all_rows), labelled
    ids: set[str]                       # the current study's trial ids
    current: pd.DataFrame               # the current trials' rows
    groups: list[Group] = field(default_factory=list)   # rows not in the current study, by how they differ
    all_rows: bool = False
    column: str = COLUMN

    @property
    def aside(self) -> int:
        return sum(len(g.rows) for g in self.groups)

    @property
    def trials(self) -> int:
        """Trials counted: the current study's, and with all_rows the earlier rows too."""
        return len(self.ids) + (self.aside if self.all_rows else 0)

    @property
    def row_ids(self) -> set[str]:
        return self.ids | (set(self.rows["trial_id"]) if len(self.rows) else set())

    def lines(self) -> list[str]:
        """What the header says about rows not in the current study; nothing when there are none."""
        if not self.groups:
            return []
        if self.all_rows:
            return [f"Included (--all-rows): {describe(self.groups)}; column `{self.column}` names each row's "
                    f"definition (`{CURRENT}` or how it differs)."]
        return [f"Kept aside: {describe(self.groups)} (--all-rows includes them)."]


def _rows(n: int) -> str:
    return f"{n} row" + ("" if n == 1 else "s")


def describe(groups: list[Group]) -> str:
    """``12 rows with steps = 3, not in the current study``, or with several kinds of rows
    ``15 rows not in the current study (12 with steps = 3; 3 with lr = 0.4)``."""
    n = sum(len(g.rows) for g in groups)
    if len(groups) == 1:
        return f"{_rows(n)} with {groups[0].label}, not in the current study"
    listed = [f"{len(g.rows)} with {g.label}" for g in groups[:SHOWN]]
    rest = groups[SHOWN:]
    if rest:
        listed.append(f"{len(rest)} more kinds, {_rows(sum(len(g.rows) for g in rest))}")
    return f"{_rows(n)} not in the current study ({'; '.join(listed)})"


def norm(value: Any) -> Any:
    """A config value or a row cell as one comparable scalar (missing: None; lists: JSON text, as
    rows store them)."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy scalars
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def labels(aside: pd.DataFrame, configs: list[dict[str, Any]], versions: dict[str, Any] | None = None,
           version: Any = None) -> list[str]:
    """How each row of ``aside`` differs from the current study (the trials' ``configs``): its
    workload version when study.json recorded another one, then each config column whose value no
    current trial has; a row whose values all occur in the study has another combination of them
    (or, with a current trial's very values, another workload version)."""
    versions = versions or {}
    keys = [k for k in dict.fromkeys(k for c in configs for k in c) if k in aside.columns]
    used = {k: {norm(c.get(k)) for c in configs} for k in keys}
    combos = {tuple(norm(c.get(k)) for k in keys) for c in configs}
    out = []
    for rec in aside[["trial_id", *keys]].itertuples(index=False):
        values = [norm(v) for v in rec[1:]]
        parts = []
        v = versions.get(rec[0])
        if v is not None and version is not None and str(v) != str(version):
            parts.append(f"workload version {v}")
        parts += [f"{k} = {show(x)}" for k, x in zip(keys, values) if x not in used[k]]
        if not parts:
            parts.append("another workload version" if tuple(values) in combos
                         else "another combination of the current values")
        out.append(", ".join(parts))
    return out


def split(rows: pd.DataFrame, ids: set[str], configs: list[dict[str, Any]], all_rows: bool = False,
          versions: dict[str, Any] | None = None, version: Any = None) -> View:
    """The rows of the current trials (``ids``, whose ``configs`` they are) and the others, grouped
    by how they differ; with ``all_rows`` every row, labelled."""
    column = COLUMN if COLUMN not in rows.columns else f"row_{COLUMN}"
    if rows.empty:
        return View(rows, set(ids), rows, [], all_rows, column)
    inside = rows["trial_id"].isin(ids)
    current = rows[inside].reset_index(drop=True)
    aside = rows[~inside].reset_index(drop=True)
    groups: list[Group] = []
    if len(aside):
        aside[column] = labels(aside, configs, versions, version)
        groups = [Group(label, g.reset_index(drop=True)) for label, g in aside.groupby(column, sort=False)]
        groups.sort(key=lambda g: (-len(g.rows), g.label))
    used = current
    if all_rows and len(aside):
        used = pd.concat([current.assign(**{column: CURRENT}), aside], ignore_index=True) if len(current) else aside
    return View(used, set(ids), current, groups, all_rows, column)


def view(store, manifest: dict | None = None, trial_ids: set[str] | None = None, all_rows: bool = False,
         columns: list[str] | None = None) -> View:
    """The rows of a study directory split by definition. ``trial_ids``: the current trials
    (default: study.json's); ``columns``: read only these (and the config columns, to describe
    the rows kept aside)."""
    m = manifest if manifest is not None else (store.manifest() or {})
    trials = m.get("trials", [])
    ids = set(trial_ids) if trial_ids is not None else {t["trial_id"] for t in trials}
    configs = [t.get("config") or {} for t in trials if t["trial_id"] in ids]
    read = None
    if columns is not None:
        read = list(dict.fromkeys(["trial_id", *columns, *(k for c in configs for k in c)]))
    versions = {e["trial_id"]: e.get("workload_version") for e in m.get("earlier", [])}
    return split(store.rows(columns=read), ids, configs, all_rows, versions, m.get("workload_version"))


def status_lines(v: View) -> list[str]:
    """`overnight status --all-rows`: the counts of each definition, labelled."""
    if not v.groups:
        return []
    statuses = v.current["status"] if len(v.current) else []
    c = count_statuses(statuses)
    lines = [f"{CURRENT} study: {len(v.ids)} trials | {c['completed']} completed | {c['failed']} failed | "
             f"{c['diverged']} diverged | {len(v.ids) - len(v.current)} pending"]
    for g in v.groups:
        c = count_statuses(g.rows["status"])
        lines.append(f"earlier definition ({g.label}): {_rows(len(g.rows))} | {c['completed']} completed | "
                     f"{c['failed']} failed | {c['diverged']} diverged")
    return lines
