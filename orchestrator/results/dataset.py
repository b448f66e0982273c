"""The dataset of one study at one scale, RESULTS/<study>/<scale>/ (:class:`StudyStore`): trial
rows, history, artifacts, checkpoints and attempt counters, the manifest, the driver lock.

Every path inside it comes from orchestrator/results/layout.py; its files go through the
location's filesystem (orchestrator/results/filesystem.py: a local directory or an object store
URI), so a reader never sees half a file. The directory is the source of truth for "done" (Ray's
own state is never consulted).
"""
from __future__ import annotations

import builtins
import io
import pickle
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator.errors import UserError
from orchestrator.results import layout as L
from orchestrator.results.filesystem import Filesystem, filesystem
from orchestrator.results.lock import DriverLock, driver_lock
from orchestrator.results.rows import artifact_table, history_table, row_table


def parquet_part(data: bytes) -> pq.ParquetFile:
    """A Parquet file held in memory, over Arrow's own copy of the bytes (read it with
    :func:`read_part`). A reader over a Python ``bytes`` can be freed later by one of Arrow's pool
    threads, which must then take the GIL, and a process exiting at that moment (a Ctrl-C) aborts
    instead of exiting 130 (apache/arrow#49942)."""
    out = pa.BufferOutputStream()
    out.write(data)
    return pq.ParquetFile(pa.BufferReader(out.getvalue()))


def read_part(data: bytes, columns: list[str] | None = None) -> pa.Table:
    """One part file's table: only ``columns``, those it has, when given. Read on the calling
    thread (no pool task outlives the call; parts are one row each, so threads bought nothing).
    ParquetFile.read costs a fraction of read_table per file (no dataset layer), which is most of
    the time of a study with thousands of one-row parts."""
    part = parquet_part(data)
    cols = None if columns is None else [c for c in columns if c in part.schema_arrow.names]
    return part.read(columns=cols, use_threads=False)


class StudyStore:
    """RESULTS/<study>/<scale>: trial rows, history, artifacts, checkpoints, manifest, lock.

    It has a filesystem (``files``, picked by the location) rather than being one; the file
    operations that code working at layout paths needs (exists, read_bytes, write_json, list, ...)
    are passed through to it."""

    def __init__(self, location: str):
        self.files: Filesystem = filesystem(location)

    def __repr__(self) -> str:
        return f"StudyStore({self.location!r})"

    # ---- the location's files, at paths from layout.py -------------------------------------
    @property
    def location(self) -> str:
        return self.files.location

    @property
    def fs(self) -> pafs.FileSystem:
        return self.files.fs

    def path(self, rel: str) -> str:
        return self.files.path(rel)

    def exists(self, rel: str) -> bool:
        return self.files.exists(rel)

    def read_bytes(self, rel: str) -> bytes | None:
        return self.files.read_bytes(rel)

    def write_bytes(self, rel: str, data: bytes, durable: bool = False) -> None:
        self.files.write_bytes(rel, data, durable=durable)

    def read_json(self, rel: str) -> Any | None:
        return self.files.read_json(rel)

    def write_json(self, rel: str, obj: Any) -> None:
        self.files.write_json(rel, obj)

    # `list` names this method inside the class body, so annotations below spell the type builtins.list
    def list(self, rel: str, suffix: str = "") -> builtins.list[str]:
        return self.files.list(rel, suffix)

    def list_dirs(self, rel: str) -> builtins.list[str]:
        return self.files.list_dirs(rel)

    def delete_dir(self, rel: str) -> None:
        self.files.delete_dir(rel)

    # ---- part files (Parquet) ---------------------------------------------------------------
    def write_table(self, rel: str, table: pa.Table, durable: bool = False) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.files.write_bytes(rel, buf.getvalue(), durable=durable)

    def part_tables(self, rel: str, columns: builtins.list[str] | None = None) -> builtins.list[pa.Table]:
        """Every part file under ``rel`` as a table (only ``columns``, those a part has, when given)."""
        tables = []
        for name in self.files.list(rel, L.PART):
            data = self.files.read_bytes(L.join(rel, name))
            if data:
                tables.append(read_part(data, columns))
        return tables

    def read_tables(self, rel: str, columns: builtins.list[str] | None = None) -> pd.DataFrame:
        """Every part file under ``rel`` as one frame (only ``columns``, those a part has, when
        given). Tolerant of parts written with differing schemas (datasets from before
        one-schema-per-study): columns are unioned, types promoted."""
        tables = [t for t in self.part_tables(rel, columns) if t.num_rows]
        if not tables:
            return pd.DataFrame()
        try:
            return pa.concat_tables(tables, promote_options="permissive").to_pandas()
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return pd.concat([t.to_pandas() for t in tables], ignore_index=True, sort=False)

    # ---- trial rows -------------------------------------------------------------------------
    def finished_ids(self) -> set[str]:
        return {L.part_name(n) for n in self.files.list(L.TRIALS, L.PART)}

    def statuses(self) -> dict[str, str]:
        df = self.read_tables(L.TRIALS, columns=["trial_id", "status"])
        if df.empty:
            return {}
        return dict(zip(df["trial_id"], df["status"]))

    def write_row(self, row: dict[str, Any], schema: pa.Schema | None = None) -> None:
        self.write_table(L.trial_row(row['trial_id']), row_table(row, schema), durable=True)

    def rows(self, columns: builtins.list[str] | None = None) -> pd.DataFrame:
        return self.read_tables(L.TRIALS, columns)

    def row_value(self, trial_id: str, column: str) -> Any:
        """One cell of a trial's row (None when the row or the column is not there)."""
        data = self.files.read_bytes(L.trial_row(trial_id))
        if not data:
            return None
        table = read_part(data, [column])
        return table.column(0)[0].as_py() if table.num_columns else None

    def write_history(self, trial_id: str, history: builtins.list[dict[str, Any]]) -> None:
        if history:
            self.write_table(L.trial_history(trial_id), history_table(trial_id, history))

    def history(self) -> pd.DataFrame:
        return self.read_tables(L.HISTORY)

    def write_artifact(self, name: str, trial_id: str, rows: Any, model: Any = None) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"artifact name must be a plain name (got {name!r})")
        self.write_table(L.artifact(name, trial_id), artifact_table(trial_id, rows, model))

    def artifact(self, name: str) -> pd.DataFrame:
        return self.read_tables(L.artifact_dir(name))

    # ---- checkpoints and attempt counters ---------------------------------------------------
    def save_checkpoint(self, trial_id: str, payload: Any) -> None:
        self.files.write_bytes(L.checkpoint_state(trial_id), pickle.dumps(payload, protocol=5))

    def load_checkpoint(self, trial_id: str) -> Any | None:
        data = self.files.read_bytes(L.checkpoint_state(trial_id))
        return None if data is None else pickle.loads(data)

    def bump(self, trial_id: str, counter: str) -> int:
        """Add one to a trial's counter (layout.ATTEMPTS, layout.ERRORS); the new count."""
        n = self.counter(trial_id, counter) + 1
        self.files.write_bytes(L.counter(trial_id, counter), str(n).encode())
        return n

    def counter(self, trial_id: str, counter: str) -> int:
        return int((self.files.read_bytes(L.counter(trial_id, counter)) or b"0").decode() or 0)

    def in_flight(self) -> builtins.list[str]:
        """Trials that started (have a checkpoint folder) but have no row yet."""
        done = self.finished_ids()
        return [t for t in self.files.list_dirs(L.CHECKPOINTS) if t not in done]

    def clear_checkpoint(self, trial_id: str) -> None:
        self.files.delete_dir(L.checkpoint_dir(trial_id))

    # ---- manifest ---------------------------------------------------------------------------
    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.files.write_json(L.MANIFEST, manifest)

    def manifest(self) -> dict[str, Any] | None:
        return self.files.read_json(L.MANIFEST)

    # ---- lock -------------------------------------------------------------------------------
    def lock(self) -> DriverLock:
        return driver_lock(self.files)

    def check_writable(self) -> None:
        """Fail early, clearly and without side effects if the location cannot be written."""
        try:
            self.files.makedirs("")
            self.files.write_bytes(L.WRITE_PROBE, b"ok")
            self.files.delete_file(L.WRITE_PROBE)
        except (OSError, pa.ArrowException) as e:
            reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
            raise UserError(f"results location is not writable: {reason}", source="--results", field=self.location) from None


def study_store(results: str, study: str, scale: str) -> StudyStore:
    return StudyStore(L.study_location(results, study, scale))


def find_studies(location: str) -> list[StudyStore]:
    """Every RESULTS/<study>/<scale> under ``location`` (which may itself be one)."""
    root = StudyStore(location)
    if root.exists(L.MANIFEST):
        return [root]
    found = []
    for study in root.list_dirs(""):
        if study.startswith("_"):
            continue
        sub = StudyStore(L.join(root.location, study))
        if sub.exists(L.MANIFEST):
            found.append(sub)
            continue
        found += [s for scale in sub.list_dirs("")
                  if (s := StudyStore(L.join(root.location, study, scale))).exists(L.MANIFEST)]
    if not found:
        raise UserError(f"no overnight results here (no {L.MANIFEST} found)", source=location)
    return found
