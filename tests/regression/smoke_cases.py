"""Smoke-scale metrics of every study, recorded with the environment they were computed in.

- `python -m tests.regression.smoke_cases --write` records, for the first trials of every study in
  configs/studies/ at smoke scale, the metrics each returns (timings left out) and the environment
  (orchestrator/results/environment.py) into smoke_baseline.json. Record it in the locked environment
  (requirements/lock.txt, `make install`).
- `--measure NAME` runs the same cases in the current environment and writes
  environments/NAME.json: a second (third...) environment to measure tolerances from.
- `--tolerances` recomputes the per-metric tolerances in smoke_baseline.json from the baseline and
  every file in environments/: the largest relative difference seen for each (workload, metric),
  times SAFETY, never below FLOOR_REL and never above CAP_REL. Nothing is picked by hand.

tests/regression/test_smoke_regression.py runs the cases again and compares: exactly (rel 1e-6)
where the environment's numeric key matches the baseline's, else with those tolerances, saying so.
Trials run in-process through the workload's own class with a LocalContext and an explicit seed,
so the comparison does not depend on trial ids.
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
ENVIRONMENTS = Path(__file__).with_name("environments")
PER_STUDY = 2
# timings and other machine-dependent figures are not results
VOLATILE = re.compile(r"(^|_)(s|ms|cpu_s|seconds|time|wall|throughput|per_s|rss|mib|host|pid)$|_s_|time")
EXACT_REL = 1e-6      # "the same number": what the comparison allows in the recorded environment
FLOOR_REL = 1e-6      # a metric no measured environment moved keeps the exact comparison
SAFETY = 4.0          # margin over the largest difference measured between environments
CAP_REL = 5e-2        # no tolerance exceeds 5 %: a larger change fails in every environment


def study_files() -> list[Path]:
    return sorted((ROOT / "configs" / "studies").glob("*.yaml"))


def cases(path: Path) -> list[tuple[str, dict, int]]:
    """(workload name, full config, seed) of the study's first trials at smoke scale."""
    from orchestrator.run.prepare import prepare
    from orchestrator.run.trial import derive_seed

    prep = prepare(path, "smoke")
    out = []
    for t in prep.trials[:PER_STUDY]:
        seed = t.config["seed"] if isinstance(t.config.get("seed"), int) else derive_seed(t.trial_id)
        out.append((prep.study.workload, dict(t.config), seed))
    return out


def run_case(workload: str, config: dict, seed: int) -> dict:
    import torch

    from orchestrator.run import registry
    from orchestrator.study.contract import LocalContext, params_of
    from orchestrator.run.trial import seed_everything

    torch.set_num_threads(1)
    seed_everything(seed)
    ctx = LocalContext(seed=seed, scale="smoke", cache_dir=Path(tempfile.mkdtemp(prefix="smoke-regression-")))
    cls = registry.load(workload)
    metrics = cls().run(params_of(cls, config), ctx)   # the Params instance, as in a trial
    return {k: v for k, v in metrics.items() if not VOLATILE.search(k)}


def rel_diff(a, b) -> float:
    """|a - b| relative to the larger magnitude; 0 for equal values (NaN equals NaN), inf for
    values of different kinds (a string against a number, a changed string)."""
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return 0.0 if a == b else math.inf
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    if a == b:
        return 0.0
    if math.isinf(a) or math.isinf(b):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b))


def same(a, b, rel: float = EXACT_REL, abs_: float = 1e-9) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
    return a == b


def _jsonable(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return {"float": str(v)}
    return v


def _from_json(v):
    return float(v["float"]) if isinstance(v, dict) and "float" in v else v


def _read(path: Path) -> dict:
    data = json.loads(path.read_text())
    for study in data["cases"].values():
        for case in study:
            case["metrics"] = {k: _from_json(v) for k, v in case["metrics"].items()}
    return data


def load_baseline() -> dict:
    """{"environment": ..., "cases": {study: [{workload, seed, config, metrics}]},
    "tolerances": {workload: {metric: rel}}, "tolerance_rule": str}"""
    return _read(BASELINE)


def measured_environments() -> dict[str, dict]:
    return {p.stem: _read(p) for p in sorted(ENVIRONMENTS.glob("*.json"))}


def tolerance(baseline: dict, workload: str, metric: str) -> float:
    return baseline.get("tolerances", {}).get(workload, {}).get(metric, FLOOR_REL)


def compare(case: dict, got: dict, exact: bool, tolerances_: dict) -> list[str]:
    """What differs between a recorded case and a new run of it, one line each: a changed set of
    metric names always; a value beyond EXACT_REL when `exact`, else beyond its measured tolerance."""
    want = case["metrics"]
    if set(got) != set(want):
        return [f"metric names changed: +{sorted(set(got) - set(want))} -{sorted(set(want) - set(got))}"]
    out = []
    for k in sorted(want):
        allowed = EXACT_REL if exact else tolerances_.get(case["workload"], {}).get(k, FLOOR_REL)
        if not same(want[k], got[k], rel=allowed):
            out.append(f"{k}: {want[k]!r} -> {got[k]!r} (relative difference {rel_diff(want[k], got[k]):.3g}, "
                       f"{'exact comparison' if exact else 'tolerance'} {allowed:g})")
    return out


def first_per_workload() -> list[tuple[str, dict, int]]:
    """One smoke case of every workload the studies use."""
    seen: dict[str, tuple[str, dict, int]] = {}
    for path in study_files():
        workload, config, seed = cases(path)[0]
        seen.setdefault(workload, (workload, config, seed))
    return [seen[w] for w in sorted(seen)]


def measure() -> dict:
    """Every study's cases run here, with the environment they ran in."""
    from orchestrator.results.environment import describe

    os.environ.setdefault("OVERNIGHT_DATA", str(ROOT.parent / "shared" / "data"))
    out: dict = {}
    for path in study_files():
        out[path.stem] = []
        for workload, config, seed in cases(path):
            metrics = run_case(workload, config, seed)
            out[path.stem].append({"workload": workload, "seed": seed, "config": config,
                                   "metrics": {k: _jsonable(v) for k, v in metrics.items()}})
            print(f"{path.stem}: {len(metrics)} metrics", file=sys.stderr)
    env = describe()  # after the runs: the thread settings they ran with (run_case sets 1)
    return {"environment": env, "cases": out}


def largest_differences(baseline: dict, others: dict[str, dict]) -> dict[str, dict[str, tuple[float, str]]]:
    """{workload: {metric: (largest relative difference from the baseline, where)}} over every
    measured environment, study and case."""
    out: dict[str, dict[str, tuple[float, str]]] = {}
    for name, other in others.items():
        for study, cases_ in baseline["cases"].items():
            for i, case in enumerate(cases_):
                theirs = other["cases"].get(study, [])
                if i >= len(theirs):
                    continue
                for metric, want in case["metrics"].items():
                    if metric not in theirs[i]["metrics"]:
                        continue
                    d = rel_diff(want, theirs[i]["metrics"][metric])
                    seen = out.setdefault(case["workload"], {}).get(metric)
                    if seen is None or d > seen[0]:
                        out[case["workload"]][metric] = (d, f"{name}: {study} case {i}")
    return out


def tolerances(baseline: dict, others: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Per (workload, metric): SAFETY x the largest measured difference, within [FLOOR_REL, CAP_REL]."""
    return {w: {m: float(f"{min(CAP_REL, max(FLOOR_REL, SAFETY * d)):.3g}") for m, (d, _) in sorted(ms.items())}
            for w, ms in sorted(largest_differences(baseline, others).items())}


RULE = (f"per (workload, metric): {SAFETY:g} x the largest relative difference measured between the baseline "
        f"and tests/regression/environments/*.json, at least {FLOOR_REL:g}, at most {CAP_REL:g}")


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def main(argv: list[str]) -> None:
    if "--write" in argv:
        data = measure()
        data["tolerances"], data["tolerance_rule"] = tolerances(data, measured_environments()), RULE
        _write_json(BASELINE, data)
    elif "--measure" in argv:
        name = argv[argv.index("--measure") + 1]
        ENVIRONMENTS.mkdir(exist_ok=True)
        _write_json(ENVIRONMENTS / f"{name}.json", measure())
    elif "--first-per-workload" in argv:  # for the determinism test: JSON on stdout
        os.environ.setdefault("OVERNIGHT_DATA", str(ROOT.parent / "shared" / "data"))
        print(json.dumps({w: {k: _jsonable(v) for k, v in run_case(w, c, s).items()}
                          for w, c, s in first_per_workload()}, sort_keys=True))
    elif "--tolerances" in argv:
        data = json.loads(BASELINE.read_text())
        base = load_baseline()
        others = measured_environments()
        data["tolerances"], data["tolerance_rule"] = tolerances(base, others), RULE
        _write_json(BASELINE, data)
        for w, ms in largest_differences(base, others).items():
            worst = max(ms.items(), key=lambda kv: kv[1][0])
            print(f"{w}: largest relative difference {worst[1][0]:.3g} ({worst[0]}, {worst[1][1]})")
    else:
        print(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
