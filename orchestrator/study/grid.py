"""Study -> trials. A trial's id is a hash of (workload name, workload version, canonical config),
so the same configuration has the same id on any machine and in any run. The canonical config is
the validated one with defaults and execution knobs left out (see params.id_config)."""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from orchestrator.formats import canonical_json
from orchestrator.study.spec import Study, Variant


@dataclass(frozen=True)
class Trial:
    trial_id: str
    config: dict[str, Any]


def trial_id(workload: str, version: str, config: dict[str, Any]) -> str:
    blob = canonical_json({"workload": workload, "version": str(version), "config": config})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _product(grid: dict[str, list], zips: dict[str, list[dict]]) -> Iterator[dict[str, Any]]:
    """Cartesian product over grid axes and zip groups, in the order they are written."""
    axes: list[list[dict[str, Any]]] = [[{k: v} for v in values] for k, values in grid.items()]
    axes += [list(rows) for rows in zips.values()]
    for combo in itertools.product(*axes):
        out: dict[str, Any] = {}
        for part in combo:
            out.update(part)
        yield out


def configs(study: Study) -> Iterator[dict[str, Any]]:
    variants = study.variants or [Variant()]
    for base in _product(study.grid, study.zip):
        for variant in variants:
            for own in _product(variant.grid, variant.zip):
                yield {**study.fixed, **variant.fixed, **base, **own}


Normalize = Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]


def expand(study: Study, version: str, normalize: Normalize | None = None, name: str | None = None) -> list[Trial]:
    """All trials of the (already scale-resolved) study, duplicates removed, order kept.
    ``normalize(config) -> (full config, what the id hashes)``; by default the config as written.
    ``name`` is the workload's own name (default: the study's ``workload`` field), so a workload
    reached by entry point or by ``module:Class`` gives the same ids."""
    seen: dict[str, Trial] = {}
    for cfg in configs(study):
        full, hashed = normalize(cfg) if normalize else (cfg, cfg)
        tid = trial_id(name or study.workload, version, hashed)
        seen.setdefault(tid, Trial(tid, full))
    return list(seen.values())
