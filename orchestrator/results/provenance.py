"""Where a study's rows came from, for study.json and the report header: the data source and the
tokenizer each row recorded, counted (every report states the data of its rows); and, per driver
run, the code, the environment and the sha256 of the data files (run_record, provenance_lines).

Workloads record these as metrics: ``data_source`` (every dataset workload) and ``tokenizer_name``
(RAM-LM: ``gpt2``, ``word<V>``, ``word<V> (GPT-2 BPE unavailable)``, ``none``). The ``data`` and
``tokenizer`` *parameters* say what was asked for, not what was used, so they are not read here.

The header's "Not the study's dataset:" line names every row whose data is not the study's own,
matched on the recorded strings (the orchestrator never imports a workload), one kind at a time:
  - an offline stand-in: ``data_source`` starts with ``standin:``;
  - a disclosed substitute: it contains ``substitute`` (``fashion-mnist (substitute for MNIST)``);
  - part of the dataset: it contains ``validation and test splits only`` (WikiText-2 without its
    train split, workloads/data/wikitext.py VALID_TEST_ONLY) or ``test set only`` (MNIST's test set
    split into train and test, workloads/data/mnist.py MNIST_TEST_ONLY_SOURCE);
  - a synthetic stream: it starts with ``synthetic:`` (RAM-LM's ``synthetic:zipf<s>``), except the
    sources that are their study's data by design (SYNTHETIC_BY_DESIGN: the credit-bridge ladder's
    teacher-student task, ``synthetic:teacher``);
  - a word tokenizer: ``tokenizer_name`` starts with ``word`` (the studies' tokenizer is GPT-2's BPE,
    ``gpt2``; ``none``, the synthetic stream's, is not flagged by itself).
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orchestrator.results.environment import code_version, describe

DATA_COLUMNS = ("data_source",)
TOKENIZER_COLUMNS = ("tokenizer_name",)
NOT_RECORDED = "not recorded"
# data_source values that are synthetic by the study's design (its dataset), not a stand-in for one
SYNTHETIC_BY_DESIGN = ("synthetic:teacher",)
# (test on a data_source value, what the note says of the rows), in the order the notes are written
NOT_THE_DATASET = (
    (lambda v: v.startswith("standin:"), "ran on an offline stand-in"),
    (lambda v: "substitute" in v, "ran on a disclosed substitute"),
    (lambda v: "validation and test splits only" in v, "ran on part of the dataset (validation and test splits only)"),
    (lambda v: "test set only" in v, "ran on part of the dataset (test set only)"),
    (lambda v: v.startswith("synthetic:") and v not in SYNTHETIC_BY_DESIGN, "ran on a synthetic stream"),
)
WORD_TOKENIZER = ("is a word tokenizer", "are word tokenizers")   # one value, several values


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
    part only when the rows have a tokenizer column), then, when some rows ran on data that is not
    the study's own (a stand-in, a substitute, part of the dataset, a synthetic stream, a word
    tokenizer: the module docstring), one line naming them by kind. No rows: no lines.
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
    notes = []
    for test, says in NOT_THE_DATASET:
        hits = [(v, n) for v, n in data if v != NOT_RECORDED and test(v)]
        if hits:
            notes.append(f"{_joined(hits)} {says}")
    if tok_col is not None:
        words = [(v, n) for v, n in _counts(rows, tok_col) if v.startswith("word")]
        if words:
            notes.append(f"{_joined(words)} {WORD_TOKENIZER[len(words) > 1]}, not the study's GPT-2 BPE")
    if notes:
        lines.append("Not the study's dataset: " + "; ".join(notes) + ".")
    return lines


# ---------------------------------------------------------------------------- code and environment
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes, as hex, read ``chunk`` bytes at a time (what run_record records
    of each data file; a workload may use it to check a file it downloaded).

    >>> import tempfile
    >>> from pathlib import Path
    >>> import orchestrator as overnight
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "data.txt"
    ...     _ = path.write_bytes(b"hello")
    ...     print(overnight.sha256_file(path))
    2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def data_files(workload: Any, configs: list[dict], data_root: str | Path | None) -> dict[str, str]:
    """{path: sha256} of every file the workload says its trials may read under ``data_root``
    (its optional ``data_files(config, data_root)`` hook; workloads/data/locate.py data_files_for)."""
    hook = getattr(workload, "data_files", None)
    if hook is None or data_root is None:
        return {}
    paths: set[Path] = set()
    seen: set[str] = set()
    for cfg in configs:
        key = repr(sorted((k, repr(v)) for k, v in cfg.items() if k in ("data", "task", "tokenizer", "dataset")))
        if key in seen:  # the files depend on the data-choosing values only
            continue
        seen.add(key)
        paths |= {Path(p) for p in hook(dict(cfg), Path(data_root))}
    return {str(p): sha256_file(p) for p in sorted(paths) if p.is_file()}


def run_record(workload: Any = None, configs: list[dict] | None = None, data_root: str | Path | None = None) -> dict:
    """What study.json records for each driver run: when it started, the code (commit, dirty tree,
    overnight's version), the environment (orchestrator/results/environment.py) and the data files' sha256."""
    return {"started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "code": code_version(),
            "environment": describe(import_torch=False), "data": data_files(workload, configs or [], data_root)}


def _code_text(code: dict) -> str:
    commit = code.get("commit")
    if not commit:
        return f"overnight {code.get('overnight')} (not a git checkout)"
    return f"commit {commit[:12]}{' with uncommitted changes' if code.get('dirty') else ''}, overnight {code.get('overnight')}"


def _env_text(env: dict) -> str:
    pk = env.get("packages", {})
    libs = ", ".join(f"{k} {pk[k]}" for k in ("torch", "numpy", "pyarrow", "ray") if pk.get(k))
    threads = (f"torch threads {env['torch_threads']}" if env.get("torch_threads") else "threads: defaults") + \
        "".join(f", {k}={v}" for k, v in env.get("variables", {}).items())
    return (f"Python {env.get('python')}; {libs}; CPU {env.get('cpu')} ({env.get('torch_cpu_capability')}, "
            f"{env.get('cpu_count')} cores); {threads}; GPU {env.get('gpu') or 'none'}")


def _signature(run: dict) -> str:
    from orchestrator.results.environment import numeric_key

    return repr((run.get("code", {}).get("commit"), run.get("code", {}).get("dirty"), numeric_key(run.get("environment", {}))))


def runs_of_rows(runs: list[dict], rows: Any) -> list[int]:
    """For each row, the index of the run that produced it: the last run that started before it."""
    import pandas as pd

    if not runs or rows is None or len(rows) == 0 or "started_at" not in rows.columns:
        return []
    starts = pd.to_datetime(pd.Series([r["started_at"] for r in runs]), utc=True)
    row_starts = pd.to_datetime(rows["started_at"], utc=True, errors="coerce")
    out = []
    for t in row_starts:
        earlier = [i for i, s in enumerate(starts) if pd.isna(t) or s <= t]
        out.append(earlier[-1] if earlier else 0)
    return out


def provenance_lines(runs: list[dict] | None, rows: Any) -> list[str]:
    """The report-header lines: the code and environment the rows came from, the data files'
    sha256, and a warning when the rows come from more than one commit or package set."""
    if not runs:
        return ["Code and environment: not recorded (results written before overnight recorded them)."]
    index = runs_of_rows(runs, rows)
    used = sorted(set(index)) or [len(runs) - 1]
    last = runs[used[-1]]
    lines = [f"Code: {_code_text(last.get('code', {}))}. Environment: {_env_text(last.get('environment', {}))}."]
    data = {p: h for i in used for p, h in runs[i].get("data", {}).items()}
    if data:
        lines.append("Data files (sha256): " + "; ".join(f"{Path(p).name} {h[:16]}" for p, h in sorted(data.items())) + ".")
    groups: dict[str, list[int]] = {}
    for i in used:
        groups.setdefault(_signature(runs[i]), []).append(i)
    if len(groups) > 1:
        parts = []
        for members in groups.values():
            n = sum(1 for j in index if j in members)
            r = runs[members[-1]]
            parts.append(f"{_rows(n)} from {_code_text(r.get('code', {}))} with {_env_text(r.get('environment', {}))}")
        lines.append(f"**The rows come from {len(groups)} code versions or package sets**: " + "; ".join(parts) + ".")
    return lines
