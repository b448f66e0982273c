"""Every path inside a results location, in one place.

    RESULTS/
      _cache/stages/<key>.pkl                  the shared stage cache (e.g. trained backbones)
      <study>/<scale>/                          one study at one scale (a StudyStore)
        study.json                              the resolved study, its row schema, its trials
        trials/<trial_id>.parquet               one row per finished trial
        history/<trial_id>.parquet              per-step history (long: step, phase, metric, value)
        artifacts/<name>/<trial_id>.parquet     per-trial tables
        checkpoints/<trial_id>/state.pkl        the last checkpoint; attempts, errors: counters
        runs/<started>.json                     one record per driver run
        report.md, report/                      the last report and its plots
        _tune/                                  Ray Tune's own experiment state (never read back)
        .lock, .lock.json                       the driver lock (local flock / object-store heartbeat)
Names starting with "." or "_" are not data: dataset readers (pyarrow, DuckDB globs) skip them.
"""
from __future__ import annotations

from pathlib import Path

MANIFEST = "study.json"
TRIALS = "trials"
HISTORY = "history"
ARTIFACTS = "artifacts"
CHECKPOINTS = "checkpoints"
RUNS = "runs"
REPORT = "report.md"
REPORT_DIR = "report"
WRITE_PROBE = ".write-probe"
STAGE_CACHE = ("_cache", "stages")


def is_uri(location: str) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


def join(*parts: str) -> str:
    """Path parts joined with "/". A URI's query (s3://b/p?endpoint_override=...) stays at the end."""
    kept = [p for p in parts if p]
    query = ""
    if kept and is_uri(kept[0]) and "?" in kept[0]:
        kept[0], _, query = kept[0].partition("?")
    text = "/".join(p.rstrip("/") for p in kept)
    return f"{text}?{query}" if query else text


def trial_row(trial_id: str) -> str:
    return f"{TRIALS}/{trial_id}.parquet"


def trial_history(trial_id: str) -> str:
    return f"{HISTORY}/{trial_id}.parquet"


def artifact_dir(name: str) -> str:
    return f"{ARTIFACTS}/{name}"


def artifact(name: str, trial_id: str) -> str:
    return f"{ARTIFACTS}/{name}/{trial_id}.parquet"


def checkpoint_dir(trial_id: str) -> str:
    return f"{CHECKPOINTS}/{trial_id}"


def checkpoint_state(trial_id: str) -> str:
    return f"{CHECKPOINTS}/{trial_id}/state.pkl"


def counter(trial_id: str, name: str) -> str:
    return f"{CHECKPOINTS}/{trial_id}/{name}"


def run_record(started_at: str) -> str:
    return f"{RUNS}/{started_at.replace(':', '')}.json"


def node_probe(token: str, i: int) -> str:
    return f".node-probe-{token}-{i}"


def study_location(results: str, study: str, scale: str) -> str:
    """RESULTS/<study>/<scale> as a URI or an absolute local path."""
    if is_uri(results):
        return join(str(results), study, scale)
    return str(Path(results).expanduser().resolve() / study / scale)


def stage_cache_location(results: str) -> str:
    if is_uri(results):
        return join(str(results), *STAGE_CACHE)
    return str(Path(results).expanduser().resolve().joinpath(*STAGE_CACHE))


SCRATCH = Path.home() / ".cache" / "overnight" / "scratch"  # local scratch when the cache is remote
