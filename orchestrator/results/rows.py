"""What a study's dataset holds: the row columns and statuses, the one schema of every part file
(trials/, history/, artifacts/), and the conversion of Python values into those columns.

Every part file of a study is written with the same columns and types, so pandas, pyarrow,
DuckDB and polars read a whole study directory (README "Results")."""
from __future__ import annotations

import json
import math
import types
import typing
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Literal, Union

import pandas as pd
import pyarrow as pa


class Status(StrEnum):
    """A row's ``status``. Defined here, with the column it fills, because this room may not import
    orchestrator/run (where orchestrator/run/protocol.py re-exports it). A ``StrEnum``: each member is
    the very string the datasets hold, so it is written to Parquet, compared with what a dataset
    gives back and formatted as that string."""

    COMPLETED = "completed"
    FAILED = "failed"
    DIVERGED = "diverged"


COMPLETED, FAILED, DIVERGED = Status.COMPLETED, Status.FAILED, Status.DIVERGED
STATUSES = tuple(s.value for s in Status)   # plain strings: the keys of count_statuses

# columns every result row has, in order, with their types
ROW_FIELDS: list[tuple[str, pa.DataType]] = [
    ("trial_id", pa.string()), ("study", pa.string()), ("scale", pa.string()), ("status", pa.string()),
]
ROW_TAIL: list[tuple[str, pa.DataType]] = [
    ("started_at", pa.timestamp("us", tz="UTC")), ("finished_at", pa.timestamp("us", tz="UTC")),
    ("wall_s", pa.float64()), ("host", pa.string()), ("device", pa.string()), ("attempts", pa.int64()),
    ("error", pa.string()),
    # metrics a workload returned without declaring them, as one JSON object (see docs in README)
    ("extra_metrics", pa.string()),
]
RESERVED = {name for name, _ in ROW_FIELDS + ROW_TAIL}
ROW_COLUMNS = [name for name, _ in ROW_FIELDS + ROW_TAIL]
# history is long ("tidy"): one row per (step, metric), so every trial's part file has these
# columns whatever it reports; pivot with pandas `pivot_table` or DuckDB `PIVOT`
HISTORY_SCHEMA = pa.schema([("trial_id", pa.string()), ("step", pa.int64()), ("time", pa.float64()),
                            ("phase", pa.string()), ("metric", pa.string()), ("value", pa.float64())])


def utcnow() -> datetime:
    """Now, timezone-aware in UTC: the times of a row (started_at, finished_at) and of a run."""
    return datetime.now(timezone.utc)


_SCALARS: dict[Any, pa.DataType] = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string(),
                                    datetime: pa.timestamp("us", tz="UTC")}


def arrow_type(annotation: Any) -> pa.DataType:
    """The Parquet column type for a declared Python type. Lists and mappings are stored as JSON
    text (one cell), Literals by the type of their values, Optional[X] as a nullable X."""
    origin = typing.get_origin(annotation)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if origin is Literal:
        kinds = {type(v) for v in typing.get_args(annotation)}
        if kinds == {bool}:
            return pa.bool_()
        if kinds <= {int, bool} and bool not in kinds:
            return pa.int64()
        if kinds <= {int, float} and bool not in kinds:
            return pa.float64()
        return pa.string()
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        kinds = {arrow_type(a) for a in args}
        if len(kinds) == 1:
            return kinds.pop()
        if kinds <= {pa.int64(), pa.float64()}:
            return pa.float64()
        return pa.string()
    if typing.get_origin(annotation) is typing.Annotated:
        return arrow_type(typing.get_args(annotation)[0])
    return pa.string()  # list, dict, nested models: JSON text


def inferred_type(values: list[Any]) -> pa.DataType:
    """Column type for an undeclared parameter, from every value it takes in the study."""
    kinds = {type(v) for v in values if v is not None}
    if kinds == {bool}:
        return pa.bool_()
    if kinds == {int}:
        return pa.int64()
    if kinds and kinds <= {int, float}:
        return pa.float64()
    if kinds == {str}:
        return pa.string()
    return pa.string()


def row_schema(params: Any, metrics: Any,
               configs: list[dict[str, Any]]) -> pa.Schema:
    """One schema for every row of a study: fixed columns, config columns, metric columns."""
    fields = list(ROW_FIELDS)
    if params is not None:
        fields += [(n, arrow_type(f.annotation)) for n, f in params.model_fields.items()]
    else:
        keys: dict[str, list] = {}
        for c in configs:
            for k, v in c.items():
                keys.setdefault(k, []).append(v)
        fields += [(k, inferred_type(v)) for k, v in keys.items()]
    if metrics is not None:
        fields += [(n, arrow_type(f.annotation)) for n, f in metrics.model_fields.items()]
    fields += ROW_TAIL
    return pa.schema(fields)


def schema_to_json(schema: pa.Schema) -> list[list[str]]:
    return [[f.name, str(f.type)] for f in schema]


def schema_from_json(items: list[list[str]]) -> pa.Schema:
    return pa.schema([(name, _type_from_text(t)) for name, t in items])


def _type_from_text(text: str) -> pa.DataType:
    simple = {"string": pa.string(), "int64": pa.int64(), "double": pa.float64(), "bool": pa.bool_()}
    if text in simple:
        return simple[text]
    if text.startswith("timestamp"):
        return pa.timestamp("us", tz="UTC")
    raise ValueError(f"unsupported column type {text!r}")


def cell(value: Any, typ: pa.DataType) -> Any:
    """``value`` converted for a column of type ``typ``; raises TypeError when it cannot be."""
    if value is None:
        return None
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy / torch scalars
    if typ == pa.string():
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if typ == pa.bool_():
        if isinstance(value, bool):
            return value
    elif typ == pa.int64():
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif typ == pa.float64():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    else:
        return value
    raise TypeError(f"expected {typ}, got {value!r}")


def finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _cell(value: Any) -> Any:
    """Parquet-friendly scalar: lists and mappings become JSON text, numpy scalars plain Python."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def row_table(row: dict[str, Any], schema: pa.Schema | None = None) -> pa.Table:
    """One row as a table. With the study's ``schema`` every column is present (missing ones
    null) and typed as declared; a value that does not fit raises TypeError naming the column."""
    if schema is None:
        return pa.Table.from_pylist([{k: _cell(v) for k, v in row.items()}])
    extra = sorted(set(row) - set(schema.names))
    if extra:
        raise TypeError(f"columns not in the study's schema: {extra}")
    return row_tables([row], schema)


def history_table(trial_id: str, history: list[dict[str, Any]]) -> pa.Table:
    cols: dict[str, list] = {n: [] for n in HISTORY_SCHEMA.names}
    for h in history:
        phase = h.get("phase")
        for k, v in h.items():
            if k in ("step", "time", "phase"):
                continue
            cols["trial_id"].append(trial_id)
            cols["step"].append(int(h.get("step", 0)))
            cols["time"].append(float(h["time"]) if h.get("time") is not None else None)
            cols["phase"].append(None if phase is None else str(phase))
            cols["metric"].append(k)
            cols["value"].append(None if v is None else float(_cell(v)))
    return pa.Table.from_pydict(cols, schema=HISTORY_SCHEMA)


def artifact_table(trial_id: str, rows: Any, model: Any = None) -> pa.Table:
    """A trial's table. With a declared ``model`` (its fields are the columns) every part file of
    the artifact has the same columns and types; undeclared columns are an error. Without one,
    numbers are stored as int64/float64 and anything else as text."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    records = df.to_dict("records")
    if model is not None:
        fields = [("trial_id", pa.string())] + [(n, arrow_type(f.annotation)) for n, f in model.model_fields.items()]
        schema = pa.schema(fields)
        extra = sorted(set(df.columns) - set(schema.names))
        if extra:
            raise TypeError(f"artifact columns not declared: {extra}")
        return row_tables([{**r, "trial_id": trial_id} for r in records], schema)
    df = df.copy()
    df.insert(0, "trial_id", trial_id)
    for col in df.columns:
        if df[col].dtype == object:
            df[col] = df[col].map(_cell)
        elif pd.api.types.is_bool_dtype(df[col]):
            continue
        elif pd.api.types.is_integer_dtype(df[col]):
            df[col] = df[col].astype("int64")
        elif pd.api.types.is_float_dtype(df[col]):
            df[col] = df[col].astype("float64")
    return pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)


def row_tables(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    cols: dict[str, list] = {f.name: [] for f in schema}
    for r in rows:
        for f in schema:
            v = r.get(f.name)
            if isinstance(v, float) and v != v and pa.types.is_integer(f.type):
                v = None  # pandas turns a missing int into NaN
            try:
                cols[f.name].append(cell(v, f.type))
            except TypeError as e:
                raise TypeError(f"column {f.name!r}: {e}") from None
    return pa.Table.from_pydict(cols, schema=schema)


def count_statuses(statuses: typing.Iterable[str]) -> dict[str, int]:
    """{status: how many} for every status, zeros included."""
    out = dict.fromkeys(STATUSES, 0)
    for s in statuses:
        out[s] = out.get(s, 0) + 1
    return out
