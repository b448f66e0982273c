"""`overnight export`: one study's rows as a single Parquet or CSV file, for sharing.

Rows are read through the study store (local path or URI) and written with the study's frozen
schema (study.json), so the file has the same columns and types as the dataset itself."""
from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from orchestrator import layout as L
from orchestrator.errors import UserError
from orchestrator.rows import schema_from_json
from orchestrator.store import StudyStore, open_fs


def rows_table(store: StudyStore) -> pa.Table:
    """Every row of the study as one table: with the frozen schema when there is one (the
    dataset's own), else the union of the part files' columns (datasets from before v2)."""
    tables = store.part_tables(L.TRIALS)
    frozen = (store.manifest() or {}).get("schema")
    if frozen:
        schema = schema_from_json(frozen)
        tables = [_conform(t, schema) for t in tables]
        return pa.concat_tables(tables) if tables else schema.empty_table()
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = []
    for f in schema:
        if f.name in table.column_names:
            cols.append(table.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def export(store: StudyStore, out: str) -> int:
    table = rows_table(store).sort_by("trial_id") if store.list(L.TRIALS, ".parquet") else rows_table(store)
    buf = io.BytesIO()
    lower = out.lower()
    if lower.endswith((".parquet", ".pq")):
        pq.write_table(table, buf)
    elif lower.endswith(".csv"):
        pacsv.write_csv(table, buf)
    else:
        raise UserError("give a file name ending in .parquet or .csv", source="--out", field=out)
    fs, path = open_fs(out)
    try:
        parent = path.rpartition("/")[0]
        if parent:
            fs.create_dir(parent, recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(buf.getvalue())
    except OSError as e:
        raise UserError(f"cannot write: {getattr(e, 'strerror', None) or e}", source="--out", field=out) from None
    return table.num_rows
