"""Find workloads: by name through the ``overnight.workloads`` entry-point group, by a
``package.module:Class`` or ``package.module:function`` reference (the user's own code, importable
from the current directory), or ``command`` (any program; orchestrator/run/command.py).

The orchestrator never imports a workload module by itself: it loads whatever the study names.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from orchestrator.errors import UserError
from orchestrator.study.contract import TrialContext, Workload, missing_members

GROUP = "overnight.workloads"


def registered() -> dict[str, str]:
    """name -> 'module:attr' of every registered workload."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def load(name: str, spec: dict[str, Any] | None = None) -> type[Workload[Any]]:
    """The workload class for ``name``: an entry-point name, ``module:Class``, ``module:function``,
    or ``command`` (then ``spec`` holds the study's command, params and metrics)."""
    if name == "command":
        if not spec:
            raise UserError("workload 'command' needs the study's command: section", field="workload")
        return _command(json.dumps(spec, sort_keys=True))
    return _load(name)


@lru_cache(maxsize=None)
def _command(spec_json: str) -> type[Workload[Any]]:
    from orchestrator.run.command import make_workload

    return make_workload(json.loads(spec_json))


@lru_cache(maxsize=None)
def _load(name: str) -> type[Workload[Any]]:
    target = registered().get(name, name if ":" in name else None)
    if target is None:
        from orchestrator.study.params import suggest

        known = ", ".join(sorted(registered())) or "none"
        raise UserError(f"unknown workload {name!r}{suggest(name, registered())} (registered: {known}; or "
                        f"module:Class, module:function, command)", field="workload")
    module_name, _, attr = target.partition(":")
    if os.getcwd() not in sys.path:  # the user's own package, run from their repository
        sys.path.insert(0, os.getcwd())
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"workload {name!r} cannot be loaded from {target}: {e}", field="workload") from None
    if not isinstance(obj, type) and callable(obj):
        obj = _function_workload(obj, target)
    missing = missing_members(obj)
    if missing:
        raise UserError(f"workload {name!r} ({target}) has no {missing[0]!r}", field="workload")
    return obj


def _function_workload(fn: Any, target: str) -> type[Workload[Any]]:
    """A plain ``run(config, ctx)`` function as a workload class; ``@overnight.workload(...)``
    (orchestrator/study/contract.py) may have attached its name, version, Params and Metrics.
    The function receives what a class's ``run`` does: the trial's Params instance."""
    meta = getattr(fn, "__overnight__", {})

    class FunctionWorkload:
        __doc__ = fn.__doc__
        name = meta.get("name") or target
        version = str(meta.get("version", "1"))
        Params = meta.get("params")
        Metrics = meta.get("metrics")
        artifacts = meta.get("artifacts") or {}

        def run(self, config: Any, ctx: TrialContext) -> Any:
            return fn(config, ctx)

    return FunctionWorkload


def determinism_note(workload_name: str, spec: dict[str, Any] | None = None) -> str | None:
    """For the report: one line saying which metrics of ``workload_name`` are not bit-identical
    across the execution knobs (--bundle, --group, --max-concurrent, a resume), on which device
    and why, from the workload's ``determinism`` declaration (orchestrator/study/determinism.py,
    ``NotBitIdentical``). None when it declares every metric bit-identical, or declares nothing."""
    from orchestrator.study.determinism import determinism_text

    return determinism_text(load(workload_name, spec))
