"""Find workloads by name through the ``overnight.workloads`` entry-point group.

The orchestrator never imports a workload module by itself: it loads whatever the entry point (or
an explicit ``package.module:Class`` reference in a study file) names.
"""
from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from orchestrator.errors import UserError

GROUP = "overnight.workloads"


def registered() -> dict[str, str]:
    """name -> 'module:attr' of every registered workload."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


@lru_cache(maxsize=None)
def load(name: str) -> Any:
    """The workload class for ``name`` (an entry-point name or ``module:Class``)."""
    target = registered().get(name, name if ":" in name else None)
    if target is None:
        known = ", ".join(sorted(registered())) or "none"
        raise UserError(f"unknown workload {name!r} (registered: {known})", field="workload")
    module_name, _, attr = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"workload {name!r} cannot be loaded from {target}: {e}", field="workload") from None
    for needed in ("name", "version", "run"):
        if not hasattr(obj, needed):
            raise UserError(f"workload {name!r} ({target}) has no {needed!r}", field="workload")
    return obj
