"""Every path inside a results location, in one place: nothing else spells a name of this layout.

    RESULTS/
      _cache/stages/<key>.pkl                  the shared stage cache (e.g. trained backbones)
                    <key>.key.json             the key each object was built for
                    .<key>.lock                a local cache's per-key build lock (flock)
      <study>/<scale>/                          one study at one scale (a StudyStore)
        study.json                              the resolved study, its row schema, its trials
        trials/<trial_id>.parquet               one row per finished trial
        history/<trial_id>.parquet              per-step history (long: step, phase, metric, value)
        artifacts/<name>/<trial_id>.parquet     per-trial tables
        checkpoints/<trial_id>/state.pkl        the last checkpoint
        checkpoints/<trial_id>/attempts, errors counters of a trial's tries and failed tries
        checkpoints/<trial_id>/died             how the trial's last worker died (for the driver's message)
        runs/<started>.json                     one record per driver run
        report.md, report/                      the last report and its plots
        _tune/                                  Ray Tune's own experiment state (never read back)
        .lock, .lock.json                       the driver lock (local flock / object-store heartbeat)
        .write-probe, .node-probe-*             short-lived probes that the location is writable
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
TUNE = "_tune"
LOCK = ".lock"               # local: the driver's flock
LOCK_CLAIM = ".lock.json"    # object store: the driver's claim and heartbeat
WRITE_PROBE = ".write-probe"
STAGE_CACHE = ("_cache", "stages")
PART = ".parquet"            # the suffix of every part file (trials/, history/, artifacts/<name>/)
# the counters of a trial, each a file under its checkpoint folder
ATTEMPTS = "attempts"
ERRORS = "errors"


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


def _part(folder: str, name: str) -> str:
    return f"{folder}/{name}{PART}"


def part_name(file_name: str) -> str:
    """``a.parquet`` -> ``a``: the trial id a part file is named after."""
    return file_name[: -len(PART)] if file_name.endswith(PART) else file_name


def trial_row(trial_id: str) -> str:
    return _part(TRIALS, trial_id)


def trial_history(trial_id: str) -> str:
    return _part(HISTORY, trial_id)


def artifact_dir(name: str) -> str:
    return f"{ARTIFACTS}/{name}"


def artifact(name: str, trial_id: str) -> str:
    return _part(artifact_dir(name), trial_id)


def checkpoint_dir(trial_id: str) -> str:
    return f"{CHECKPOINTS}/{trial_id}"


def checkpoint_state(trial_id: str) -> str:
    return f"{checkpoint_dir(trial_id)}/state.pkl"


def counter(trial_id: str, name: str) -> str:
    """One of a trial's counters (ATTEMPTS, ERRORS)."""
    return f"{checkpoint_dir(trial_id)}/{name}"


def death_note(trial_id: str) -> str:
    """How the last worker of a trial died, as the driver saw it (Tune's error text)."""
    return f"{checkpoint_dir(trial_id)}/died"


def run_record(started_at: str) -> str:
    return f"{RUNS}/{started_at.replace(':', '')}.json"


def node_probe(token: str, i: int) -> str:
    return f".node-probe-{token}-{i}"


def study_location(results: str, study: str, scale: str) -> str:
    """RESULTS/<study>/<scale> as a URI or an absolute local path."""
    if is_uri(results):
        return join(str(results), study, scale)
    return str(Path(results).expanduser().resolve() / study / scale)


def tune_location(location: str) -> str:
    """Where Ray Tune keeps its experiment state for the study at ``location``."""
    return join(location, TUNE)


def stage_cache_location(results: str) -> str:
    if is_uri(results):
        return join(str(results), *STAGE_CACHE)
    return str(Path(results).expanduser().resolve().joinpath(*STAGE_CACHE))


# inside the stage cache location, per key digest
def stage_object(digest: str) -> str:
    return f"{digest}.pkl"


def stage_key_file(digest: str) -> str:
    return f"{digest}.key.json"


def stage_build_lock(digest: str) -> str:
    return f".{digest}.lock"


SCRATCH = Path.home() / ".cache" / "overnight" / "scratch"  # local scratch when the cache is remote
