"""Everything `overnight run` does before Ray starts: read and resolve the study, load its
workload, validate every trial config against the workload's declared parameters, fix the schema
of the study's rows, then (under the driver lock) freeze the manifest and list the trials still to
run. The CLI and the Python API call these and only parse and print around them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from orchestrator.study import params as P
from orchestrator.results import rows as R
from orchestrator.results import layout as L
from orchestrator.run import registry
from orchestrator.study import loader
from orchestrator.errors import UserError
from orchestrator.study.grid import Trial, expand
from orchestrator.run.protocol import Plan
from orchestrator.study.spec import Study
from orchestrator.study.contract import Workload, preflight_of


@dataclass
class Prepared:
    path: Path
    study: Study
    scale: str
    workload: type[Workload[Any]]
    version: str
    trials: list[Trial]    # full, validated configs
    schema: pa.Schema      # of every row of this study
    workload_spec: dict | None = None   # workload: command only


def prepare(path: str | Path, scale: str, sets: list[str] | None = None, raw: dict | None = None,
            data_root: str | Path | None = None) -> Prepared:
    """``raw``: the study document itself (Python API); ``path`` then only names it in errors.
    ``data_root``: where datasets are looked for (the workloads' preflight checks)."""
    path = Path(path)
    raw = loader.load_raw(path) if raw is None else raw
    study = loader.resolve(raw, str(path), scale, sets)
    _check_readers(study, path)
    workload_spec = _command_spec(study, path)
    try:
        workload = registry.load(study.workload, workload_spec)
        params_model, metrics_model, _ = P.declared(workload)
    except UserError as e:
        raise UserError(e.bare, source=str(path), field="workload") from None
    where = loader.origins(raw, scale, sets)
    normalize = _normalizer(params_model, where, path, study.workload) if params_model else None
    trials = expand(study, str(workload.version), normalize, name=str(workload.name))
    _legacy_check(workload, trials, path)
    _preflight(workload, trials, scale, data_root, path)
    for name in R.RESERVED & set(trials[0].config if trials else {}):
        raise UserError(f"{name}: is a reserved result column; rename the parameter", source=str(path))
    schema = R.row_schema(params_model, metrics_model, [t.config for t in trials])
    _check_claims(study, trials, schema, workload, path, where)
    return Prepared(path, study, scale, workload, str(workload.version), trials, schema, workload_spec)


def _check_claims(study: Study, trials: list[Trial], schema: pa.Schema, workload: type[Workload[Any]], path: Path,
                  origins: dict[str, list[tuple[str, list]]]) -> None:
    """A claim that names a column the rows will not have, or a value its column never takes in
    the study file (nor in this run), is a bad study file: exit 2 before anything runs. A value
    the file has but ``--set`` left out of this run is fine: the claim is then not testable here."""
    if not study.claims:
        return
    from orchestrator.study.claims import check

    def hashable(v: Any) -> Any:
        return v if not isinstance(v, (list, dict)) else repr(v)
    values: dict[str, set] = {}
    for t in trials:
        for k, v in t.config.items():
            values.setdefault(k, set()).add(hashable(v))
    for k, places in origins.items():
        for _, vs in places:
            values.setdefault(k, set()).update(hashable(v) for v in vs)
    arts = P.declared(workload)[2]
    art_cols = {f for model in arts.values() for f in getattr(model, "model_fields", {})}
    problems = check(study.claims, {f.name: f.type for f in schema}, values, set(schema.names), art_cols)
    if problems:
        field, message = problems[0]
        raise UserError(message, source=str(path), field=field)


def _check_readers(study: Study, path: Path) -> None:
    """A command's metrics_from sources that need a package this environment lacks: exit 2 now,
    not a failed trial after the program ran."""
    import importlib.util

    from orchestrator.study.command_spec import TENSORBOARD_MISSING

    source = study.command.metrics_from if study.command is not None else None
    if source is not None and source.tensorboard is not None and importlib.util.find_spec("tensorboard") is None:
        raise UserError(TENSORBOARD_MISSING, source=str(path), field="command.metrics_from.tensorboard")


def _command_spec(study: Study, path: Path) -> dict[str, Any] | None:
    """What a worker needs to rebuild a command workload (it travels in every Member, orchestrator/run/protocol.py)."""
    if study.command is None:
        return None
    return {"command": study.command.model_dump(), "params": {k: v.model_dump() for k, v in study.params.items()},
            "metrics": dict(study.metrics),
            "base_dir": str(path.resolve().parent) if path.exists() else os.getcwd()}


def _normalizer(params_model, where, path: Path, workload: str):
    """config -> (full validated config, what the trial id hashes); errors located in the file."""
    def normalize(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            full = P.validate(params_model, cfg)
        except P.ParamError as e:
            raise _located(e, cfg, where, path, workload) from None
        return full, P.id_config(params_model, full)
    return normalize


def _located(e: P.ParamError, cfg: dict[str, Any], where: dict[str, list[tuple[str, list]]],
             path: Path, workload: str) -> UserError:
    """The error with the place the bad key or value was written: a file field or --set."""
    top = e.key.split(".", 1)[0]
    places = where.get(top, [])
    place = places[-1][0] if places else None
    if not e.unknown and len(places) > 1:  # the place whose values include the bad one
        hits = [p for p, values in places if any(_equal(v, cfg.get(top)) for v in values)]
        place = hits[-1] if hits else place
    source = "--set" if place and place.startswith("--set") else str(path)
    field = place.removeprefix("--set ") if place else (e.key or None)
    message = e.message if e.key else str(e).lstrip(": ")
    if e.unknown:
        message = f"{message} of workload {workload} (see `overnight describe {workload}`)"
    return UserError(message, source=source, field=field)


def _equal(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _preflight(workload: type[Workload[Any]], trials: list[Trial], scale: str, data_root: str | Path | None,
               path: Path) -> None:
    """Let the workload check, before Ray starts, that each trial's data is there."""
    from orchestrator.study.contract import DataMissing

    check = preflight_of(workload)
    if check is None or data_root is None:
        return
    seen = set()
    for t in trials:
        key = repr(sorted((k, repr(v)) for k, v in t.config.items()))
        if key in seen:
            continue
        seen.add(key)
        try:
            check(dict(t.config), Path(data_root), scale)
        except DataMissing as e:
            raise UserError(f"{e} (or --set data=standin to run on the stand-in on purpose)", source=str(path),
                            field="data") from None


def _legacy_check(workload: type[Workload[Any]], trials: list[Trial], path: Path) -> None:
    """A workload without a Params model may still reject configs with ``check_config``."""
    check = getattr(workload(), "check_config", None) if hasattr(workload, "check_config") else None
    if check is None:
        return
    for t in trials:
        try:
            check(dict(t.config))
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(str(e).strip("'\"") or type(e).__name__, source=str(path)) from None


def pending(store, trials: list[Trial], retry_failed: bool = False,
            statuses: dict[str, str] | None = None) -> tuple[list[Trial], set[str]]:
    """(trials without a row, or with a failed row when ``retry_failed``; the ids of the latter).
    ``statuses``: the store's, when already read."""
    if statuses is None:
        statuses = store.statuses() if store.exists(L.TRIALS) else {}
    retry = {tid for tid, st in statuses.items() if st == R.FAILED} if retry_failed else set()
    return [t for t in trials if t.trial_id not in statuses or t.trial_id in retry], retry


def plan_run(prep: Prepared, store, results: str, data_root: str, retry_failed: bool = False):
    """Freeze the manifest and build the execution plan. Call with the driver lock held."""
    statuses = store.statuses() if store.exists(L.TRIALS) else {}
    todo, retry = pending(store, prep.trials, retry_failed, statuses)
    schema = R.schema_to_json(prep.schema)
    from orchestrator.results.provenance import run_record

    freeze(store, prep, schema, run_record(prep.workload, [t.config for t in prep.trials], data_root))
    return Plan(study=prep.study, scale=prep.scale, version=prep.version, trials=prep.trials, pending=todo,
                store=store, stage_cache=L.stage_cache_location(results), data_root=data_root,
                rerun=frozenset(retry), schema=schema, workload_spec=prep.workload_spec,
                deaths=deaths_so_far(store, {t.trial_id for t in todo}), known=statuses)


def deaths_so_far(store, trial_ids: set[str]) -> dict[str, int]:
    """Trials left in flight by an earlier run: how many of their tries ended without a row and
    without an error (the process died, or its driver was killed). A bundle counts only the deaths
    of this run against its members (orchestrator/run/bundle.py)."""
    if not store.exists(L.CHECKPOINTS):
        return {}
    out = {}
    for tid in set(store.list_dirs(L.CHECKPOINTS)) & trial_ids:
        n = store.counter(tid, L.ATTEMPTS) - store.counter(tid, L.ERRORS)
        if n > 0:
            out[tid] = n
    return out


def freeze(store, prep: Prepared, schema: list, run: dict | None = None) -> None:
    """study.json: the resolved study, its row schema and its trials (this definition's); the
    trials of earlier definitions seen there are kept under ``earlier`` with their workload
    version, so reports can tell their rows apart (orchestrator/report/definitions.py); and one record
    per driver run (``run``: code, environment, data files; orchestrator/results/provenance.py)."""
    old = store.manifest() or {}
    current = {t.trial_id for t in prep.trials}
    earlier = {e["trial_id"]: e for e in old.get("earlier", [])}
    # a study.json written before ``earlier`` existed lists every trial of every run: their version is unknown
    version = old.get("workload_version") if "earlier" in old else None
    for t in old.get("trials", []):
        if t["trial_id"] not in current:
            earlier.setdefault(t["trial_id"], {"trial_id": t["trial_id"], "config": t["config"],
                                               "workload_version": version})
    store.write_manifest({"study": prep.study.model_dump(mode="json"), "scale": prep.scale,
                          "workload_version": prep.version, "schema": schema,
                          "trials": [{"trial_id": t.trial_id, "config": t.config} for t in prep.trials],
                          "earlier": [e for k, e in earlier.items() if k not in current],
                          "runs": old.get("runs", []) + ([run] if run else [])})
