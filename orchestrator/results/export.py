"""`overnight export`: one study's rows as a single Parquet or CSV file, for sharing.

Rows are read through the study store (local path or URI) and written with the study's frozen
schema (study.json), so the file has the same columns and types as the dataset itself. A Parquet
export is also the study's committed evidence: study.json (the definition, the trials, the run
records with code, environment and data hashes) rides in the file's metadata under
``overnight.study``, and each per-trial artifact goes beside it as ``<file>.<artifact>.parquet``.
``overnight report FILE.parquet`` reports from such a file as from the results directory
(:func:`open_export`), which is how docs/results/ pages are regenerated."""
from __future__ import annotations

import atexit
import io
import json
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from orchestrator.results import layout as L
from orchestrator.errors import UserError
from orchestrator.results.rows import schema_from_json
from orchestrator.results.dataset import StudyStore
from orchestrator.results.filesystem import open_fs


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


META_KEY = b"overnight.study"


def export(store: StudyStore, out: str) -> int:
    table = rows_table(store).sort_by("trial_id") if store.list(L.TRIALS, L.PART) else rows_table(store)
    lower = out.lower()
    if lower.endswith((".parquet", ".pq")):
        manifest = store.manifest()
        if manifest is not None:
            meta = dict(table.schema.metadata or {})
            meta[META_KEY] = json.dumps(manifest, sort_keys=True).encode()
            table = table.replace_schema_metadata(meta)
        _write(out, _parquet(table))
        for name in store.list_dirs(L.ARTIFACTS):
            art = pa.Table.from_pandas(store.artifact(name), preserve_index=False)
            if art.num_rows:
                _write(artifact_file(out, name), _parquet(art.sort_by([(c, "ascending") for c in art.column_names
                                                                        if c == "trial_id"])))
    elif lower.endswith(".csv"):
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        _write(out, buf.getvalue())
    else:
        raise UserError("give a file name ending in .parquet or .csv", source="--out", field=out)
    return table.num_rows


def artifact_file(out: str, name: str) -> str:
    """Where an export's artifact goes: ``rows.parquet`` -> ``rows.<name>.parquet``."""
    stem, dot, suffix = out.rpartition(".")
    return f"{stem}.{name}.{suffix}"


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _write(out: str, data: bytes) -> None:
    fs, path = open_fs(out)
    try:
        parent = path.rpartition("/")[0]
        if parent:
            fs.create_dir(parent, recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(data)
    except OSError as e:
        raise UserError(f"cannot write: {getattr(e, 'strerror', None) or e}", source="--out", field=out) from None


def is_export(location: str) -> bool:
    return location.lower().endswith((".parquet", ".pq")) and Path(location).is_file()


def open_export(path: str, into: str | None = None) -> StudyStore:
    """A study store over a Parquet export (its rows, study.json and artifacts), laid out in
    ``into`` (a new temporary folder by default) as a results directory, so everything that reads
    a study reads the export alike. An export without the study's metadata is refused."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise UserError(f"cannot read as Parquet: {e}", source=path) from None
    meta = (table.schema.metadata or {}).get(META_KEY)
    if meta is None:
        raise UserError("not an overnight export with its study (no overnight.study metadata; re-export it with "
                        "`overnight export RESULTS/<study>/<scale> --out FILE.parquet`)", source=path)
    manifest = json.loads(meta)
    folder = into
    if folder is None:
        folder = tempfile.mkdtemp(prefix="overnight-export-")
        atexit.register(shutil.rmtree, folder, True)
    store = StudyStore(L.join(folder, manifest["study"]["name"], manifest["scale"]))
    store.write_manifest(manifest)
    store.write_table(L.trial_row("export"), table.replace_schema_metadata(None))
    stem = Path(path).name.rpartition(".")[0]
    for sibling in sorted(Path(path).parent.glob(f"{stem}.*.parquet")):
        name = sibling.name[len(stem) + 1: -len(".parquet")]
        if name and "." not in name:
            store.write_table(L.artifact(name, "export"), pq.read_table(sibling))
    return store
