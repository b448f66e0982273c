"""Everything `overnight run` does before Ray starts: read and resolve the study, load its
workload, validate every trial config against the workload's declared parameters, and fix the
schema of the study's rows. The CLI (and the Python API) only call :func:`prepare`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from orchestrator import params as P
from orchestrator import registry, spec
from orchestrator.errors import UserError
from orchestrator.grid import Trial, configs, expand
from orchestrator.spec import Study


@dataclass
class Prepared:
    path: Path
    study: Study
    scale: str
    workload: Any          # the workload class
    version: str
    trials: list[Trial]    # full, validated configs
    schema: pa.Schema      # of every row of this study


def prepare(path: str | Path, scale: str, sets: list[str] | None = None) -> Prepared:
    path = Path(path)
    raw = spec.load_raw(path)
    study = spec.resolve(raw, str(path), scale, sets)
    try:
        workload = registry.load(study.workload)
        params_model, metrics_model, _ = P.declared(workload)
    except UserError as e:
        raise UserError(e.bare, source=str(path), field="workload") from None
    where = spec.origins(raw, scale, sets)
    normalize = None
    if params_model is not None:
        def normalize(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
            try:
                full = P.validate(params_model, cfg)
            except P.ParamError as e:
                raise _located(e, cfg, where, path, study.workload) from None
            return full, P.id_config(params_model, full)
    trials = expand(study, str(workload.version), normalize, name=str(workload.name))
    _legacy_check(workload, trials, path)
    for name in P.RESERVED & set(trials[0].config if trials else {}):
        raise UserError(f"{name}: is a reserved result column; rename the parameter", source=str(path))
    schema = P.row_schema(params_model, metrics_model, [t.config for t in trials])
    return Prepared(path, study, scale, workload, str(workload.version), trials, schema)


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


def _legacy_check(workload: Any, trials: list[Trial], path: Path) -> None:
    """A workload without a Params model may still reject configs with ``check_config``."""
    check = getattr(workload(), "check_config", None) if hasattr(workload, "check_config") else None
    if check is None:
        return
    for t in trials:
        try:
            check(dict(t.config))
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(str(e).strip("'\"") or type(e).__name__, source=str(path)) from None


def study_configs(path: str | Path, scale: str, sets: list[str] | None = None) -> list[dict[str, Any]]:
    """The trial configs of a study file as written (before validation)."""
    raw = spec.load_raw(path)
    return list(configs(spec.resolve(raw, str(path), scale, sets)))
