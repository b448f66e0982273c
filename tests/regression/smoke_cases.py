"""Smoke-scale metrics of every study, for checking that a refactoring changes no number.

`python -m tests.regression.smoke_cases --write` records, for the first trials of every study in
configs/studies/ at smoke scale, the metrics each returns (timings left out) into
smoke_baseline.json; tests/regression/test_smoke_regression.py runs the same configs again and
compares. Trials run in-process through the workload's own class with a LocalContext and an
explicit seed, so the comparison does not depend on trial ids.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASELINE = Path(__file__).with_name("smoke_baseline.json")
PER_STUDY = 2
# timings and other machine-dependent figures are not results
VOLATILE = re.compile(r"(^|_)(s|ms|cpu_s|seconds|time|wall|throughput|per_s|rss|mib|host|pid)$|_s_|time")


def study_files() -> list[Path]:
    return sorted((ROOT / "configs" / "studies").glob("*.yaml"))


def cases(path: Path) -> list[tuple[str, dict, int]]:
    """(workload name, full config, seed) of the study's first trials at smoke scale."""
    from orchestrator.prepare import prepare
    from orchestrator.trial import derive_seed

    prep = prepare(path, "smoke")
    out = []
    for t in prep.trials[:PER_STUDY]:
        seed = t.config["seed"] if isinstance(t.config.get("seed"), int) else derive_seed(t.trial_id)
        out.append((prep.study.workload, dict(t.config), seed))
    return out


def run_case(workload: str, config: dict, seed: int) -> dict:
    import torch

    from orchestrator import registry
    from orchestrator.trial import seed_everything
    from orchestrator.interface import LocalContext

    torch.set_num_threads(1)
    seed_everything(seed)
    ctx = LocalContext(seed=seed, scale="smoke", cache_dir=Path(tempfile.mkdtemp(prefix="smoke-regression-")))
    metrics = registry.load(workload)().run(dict(config), ctx)
    return {k: v for k, v in metrics.items() if not VOLATILE.search(k)}


def same(a, b, rel: float = 1e-6, abs_: float = 1e-9) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return same(float(a), float(b), rel, abs_)
    return a == b


def _jsonable(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return {"float": str(v)}
    return v


def _from_json(v):
    return float(v["float"]) if isinstance(v, dict) and "float" in v else v


def load_baseline() -> dict:
    data = json.loads(BASELINE.read_text())
    for study in data.values():
        for case in study:
            case["metrics"] = {k: _from_json(v) for k, v in case["metrics"].items()}
    return data


def write() -> None:
    os.environ.setdefault("OVERNIGHT_DATA", str(ROOT.parent / "shared" / "data"))
    data = {}
    for path in study_files():
        data[path.stem] = []
        for workload, config, seed in cases(path):
            metrics = run_case(workload, config, seed)
            data[path.stem].append({"workload": workload, "seed": seed, "config": config,
                                    "metrics": {k: _jsonable(v) for k, v in metrics.items()}})
            print(f"{path.stem}: {len(metrics)} metrics", file=sys.stderr)
    BASELINE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
