"""Where a study's rows came from: the data source and the tokenizer each row recorded, counted,
for the report header (issue 15: every report states the data of its rows).

Workloads record these as metrics: ``data_source`` (every dataset workload; the stand-ins start
with ``standin:``, a disclosed substitute names itself, e.g. ``fashion-mnist (substitute for
MNIST)``) and ``tokenizer_name`` (RAM-LM: ``gpt2``, ``word<V>``, ``word<V> (GPT-2 BPE
unavailable)``, ``none``). The ``data`` and ``tokenizer`` *parameters* say what was asked for, not
what was used, so they are not read here.
"""
from __future__ import annotations

from typing import Any

DATA_COLUMNS = ("data_source",)
TOKENIZER_COLUMNS = ("tokenizer_name",)
NOT_RECORDED = "not recorded"


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _counts(rows: Any, column: str) -> list[tuple[str, int]]:
    """(value, count) by descending count, then value; empty and missing values as NOT_RECORDED."""
    values = rows[column].astype(object).where(rows[column].notna(), NOT_RECORDED)
    values = values.map(lambda v: NOT_RECORDED if str(v).strip() == "" else str(v))
    counts = values.value_counts()
    return sorted(((str(k), int(v)) for k, v in counts.items()), key=lambda kv: (-kv[1], kv[0]))


def _joined(counts: list[tuple[str, int]]) -> str:
    return ", ".join(f"{value} ({_rows(n)})" for value, n in counts)


def _first(rows: Any, columns: tuple[str, ...]) -> str | None:
    return next((c for c in columns if c in rows.columns), None)


def data_summary(rows: Any) -> list[str]:
    """The report-header lines for ``rows`` (a pandas DataFrame of a study's rows):

    ``Data: <data_source> (<n> rows)[, ...]; tokenizer: <tokenizer> (<n> rows)[, ...]`` (the tokenizer
    part only when the rows have a tokenizer column), then, when some rows ran on a stand-in or a
    substitute, one line saying which and that they are not the study's dataset. No rows: no lines.
    Rows of a workload that records no data source: ``Data: not recorded by the workload (<n> rows)``.
    """
    if rows is None or len(rows) == 0:
        return []
    data_col = _first(rows, DATA_COLUMNS)
    if data_col is None:
        return [f"Data: {NOT_RECORDED} by the workload ({_rows(len(rows))})"]
    data = _counts(rows, data_col)
    line = f"Data: {_joined(data)}"
    tok_col = _first(rows, TOKENIZER_COLUMNS)
    if tok_col is not None:
        line += f"; tokenizer: {_joined(_counts(rows, tok_col))}"
    lines = [line]
    standins = [(v, n) for v, n in data if v.startswith("standin:")]
    substitutes = [(v, n) for v, n in data if "substitute" in v]
    notes = []
    if standins:
        notes.append(f"{_joined(standins)} ran on an offline stand-in")
    if substitutes:
        notes.append(f"{_joined(substitutes)} ran on a disclosed substitute")
    if notes:
        lines.append("Not the study's dataset: " + "; ".join(notes) + ".")
    return lines
