"""`workload: command`: any training program as a workload, one process per trial.

The study says how to start the program (``command:``) and declares its parameters (``params:``)
and metrics (``metrics:``); they are checked like a built-in workload's. Per trial the program
gets, in its environment:

    OVERNIGHT_TRIAL_ID        the trial id                 OVERNIGHT_SEED     the trial's seed
    OVERNIGHT_CHECKPOINT_DIR  a folder that outlives the process: whatever the program leaves
                              there is saved to the results location (local or s3://) as it
                              changes, and handed back (on any node) when the trial resumes
    OVERNIGHT_METRICS_FILE    append JSON lines here: every line is a step of the history, the
                              last line's values are the row's metrics
    OVERNIGHT_DEVICE, CUDA_VISIBLE_DEVICES, OVERNIGHT_GPU_IDS   what Ray assigned
    OVERNIGHT_DATA_ROOT, OVERNIGHT_SCALE, OVERNIGHT_ATTEMPT

The exit code decides the status (non-zero: failed after retries, with the last line of stderr as
the error; a non-finite metric: diverged). The tails of stdout and stderr are kept as the trial's
``output`` artifact. See README "Writing a workload".
"""
from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from orchestrator.interface import Diverged
from orchestrator.params import Metrics, Params, knob, metric, param

TAIL_LINES = 200
SYNC_EVERY_S = 1.0
_TYPES = {"float": float, "int": int, "str": str, "bool": bool}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CommandSpec(_Strict):
    """How to start the program for one trial."""

    argv: list[str] = Field(min_length=1, description="program and arguments; {key} is replaced by the "
                            "config value (also {trial_id}, {seed}, {checkpoint_dir}, {metrics_file}, and {python}: "
                            "the interpreter overnight runs on)")
    append: Literal["none", "flags", "hydra"] = Field(
        "none", description="also pass every parameter: flags = `--key value`, hydra = `key=value`")
    cwd: str = Field(".", description="working directory, relative to the study file")
    timeout_s: float | None = Field(None, gt=0, description="kill the program after this many seconds")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")
    version: str = Field("1", description="bump when the program changes its results (part of every trial id)")


class ParamSpec(_Strict):
    """One declared parameter of a command workload."""

    type: Literal["float", "int", "str", "bool"]
    default: Any = None
    choices: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    doc: str = ""
    knob: bool = False   # execution only: not part of the trial id

    @model_validator(mode="after")
    def _default_fits(self) -> "ParamSpec":
        if self.choices is not None and self.default is not None and self.default not in self.choices:
            raise ValueError(f"default: {self.default!r} is not one of the choices {self.choices}")
        return self


def params_model(specs: dict[str, ParamSpec]) -> type[Params]:
    """A pydantic Params model from the study's ``params:`` declaration."""
    fields: dict[str, Any] = {}
    for name, s in specs.items():
        typ: Any = Literal[tuple(s.choices)] if s.choices else _TYPES[s.type]
        limits = {k: v for k, v in (("ge", s.min), ("le", s.max)) if v is not None}
        make = knob if s.knob else param
        if s.default is None:
            fields[name] = (typ | None, make(None, s.doc or name, **limits))
        else:
            fields[name] = (typ, make(s.default, s.doc or name, **limits))
    return create_model("CommandParams", __base__=Params, **fields)


def metrics_model(specs: dict[str, str]) -> type[Metrics]:
    return create_model("CommandMetrics", __base__=Metrics,
                        **{k: (_TYPES[t] | None, metric(k)) for k, t in specs.items()})


class OutputLine(Metrics):
    stream: str | None = metric("stdout or stderr")
    line: int | None = metric("line number within the kept tail")
    text: str | None = metric("the line")


def make_workload(spec: dict[str, Any]) -> type:
    """The workload class for one study's ``command:``, ``params:`` and ``metrics:``.
    ``spec`` = {"command", "params", "metrics", "base_dir"}; it travels in
    every trial's payload so each worker builds the same class."""
    command = CommandSpec.model_validate(spec["command"])
    declared = {k: ParamSpec.model_validate(v) for k, v in (spec.get("params") or {}).items()}
    base_dir = Path(spec.get("base_dir") or ".")

    program = hashlib.sha256(json.dumps([command.argv, command.append]).encode()).hexdigest()[:8]

    class Command:
        __doc__ = f"runs `{shlex.join(command.argv)}` once per trial (workload: command)"
        name = "command"
        version = f"{command.version}:{program}"  # another program or argument template: other trials
        Params = params_model(declared)
        Metrics = metrics_model(spec.get("metrics") or {}) if spec.get("metrics") else None
        artifacts = {"output": OutputLine}

        def run(self, config: dict[str, Any], ctx) -> dict[str, Any]:
            return run_command(command, base_dir, config, ctx)

    return Command


# --------------------------------------------------------------------------------------------
def run_command(command: CommandSpec, base_dir: Path, config: dict[str, Any], ctx) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"overnight-{ctx.trial_id}-"))
    state = TrialFiles(work)
    state.restore(ctx.load_checkpoint())
    argv = render_argv(command, config, ctx, state)
    env = trial_env(command, ctx, state)
    cwd = (base_dir / command.cwd).resolve()
    proc, tails, drains = start(argv, cwd, env)
    stop = threading.Event()
    syncer = threading.Thread(target=state.sync_loop, args=(ctx, stop), daemon=True)
    syncer.start()
    code = wait(proc, command.timeout_s)
    stop.set()
    syncer.join()
    for t in drains:
        t.join(timeout=5)
    state.sync(ctx)
    ctx.write_artifact("output", [{"stream": s, "line": i, "text": t}
                                  for s in ("stdout", "stderr") for i, t in enumerate(tails[s])])
    return finish(code, state.records(), tails, command, ctx)


def render_argv(command: CommandSpec, config: dict[str, Any], ctx, state: "TrialFiles") -> list[str]:
    values = {**{k: _text(v) for k, v in config.items()}, "trial_id": ctx.trial_id, "seed": str(ctx.seed),
              "python": sys.executable,
              "checkpoint_dir": str(state.checkpoint_dir), "metrics_file": str(state.metrics_file)}
    try:
        argv = [a.format_map(values) for a in command.argv]
    except KeyError as e:
        raise ValueError(f"command.argv: no parameter {e.args[0]!r} for the placeholder") from None
    if command.append == "flags":
        argv += [x for k, v in config.items() if v is not None for x in (f"--{k}", _text(v))]
    elif command.append == "hydra":
        argv += [f"{k}={_text(v)}" for k, v in config.items() if v is not None]
    return argv


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def trial_env(command: CommandSpec, ctx, state: "TrialFiles") -> dict[str, str]:
    env = {**os.environ, **command.env,
           "OVERNIGHT_TRIAL_ID": ctx.trial_id, "OVERNIGHT_SEED": str(ctx.seed),
           "OVERNIGHT_CHECKPOINT_DIR": str(state.checkpoint_dir), "OVERNIGHT_METRICS_FILE": str(state.metrics_file),
           "OVERNIGHT_DEVICE": ctx.device, "OVERNIGHT_DATA_ROOT": str(ctx.data_root),
           "OVERNIGHT_SCALE": ctx.scale, "OVERNIGHT_ATTEMPT": str(ctx.attempt),
           "OVERNIGHT_GPU_IDS": _gpu_ids(), "PYTHONUNBUFFERED": "1"}
    return env


def _gpu_ids() -> str:
    try:
        import ray

        return ",".join(str(g) for g in ray.get_gpu_ids()) if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 - outside Ray there are none to report
        return ""


def _die_with_parent() -> None:
    """In the child: SIGKILL when the trial process dies (a killed worker leaves no orphan)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgrp()


def start(argv: list[str], cwd: Path, env: dict[str, str]):
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    except OSError as e:
        raise RuntimeError(f"cannot start {argv[0]!r} in {cwd}: {e.strerror or e}") from None
    tails = {"stdout": collections.deque(maxlen=TAIL_LINES), "stderr": collections.deque(maxlen=TAIL_LINES)}
    drains = [threading.Thread(target=_drain, args=(pipe, tails[name]), daemon=True)
              for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for t in drains:
        t.start()
    return proc, tails, drains


def _drain(pipe, tail: collections.deque) -> None:
    for line in pipe:
        tail.append(line.rstrip("\n"))


def wait(proc: subprocess.Popen, timeout_s: float | None) -> int | str:
    """The exit code, or "timeout" after killing the program's process group."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        return "timeout"


def finish(code: int | str, records: list[dict], tails, command: CommandSpec, ctx) -> dict[str, Any]:
    for i, rec in enumerate(records):
        step = rec.get("step", i)
        phase = rec.get("phase")
        numbers = {k: v for k, v in rec.items() if k not in ("step", "phase") and _is_number(v)}
        ctx.report(int(step) if _is_number(step) else i, phase=phase if isinstance(phase, str) else None, **numbers)
    if code == "timeout":
        raise TimeoutError(f"command timed out after {command.timeout_s:g} s")
    if code != 0:
        last = next((line for line in reversed(tails["stderr"]) if line.strip()), "")
        raise RuntimeError(f"command exited with code {code}" + (f": {last.strip()[:500]}" if last else ""))
    metrics = {k: v for k, v in (records[-1] if records else {}).items() if k != "step"}
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise Diverged(f"non-finite {', '.join(bad)} in the last metrics record", metrics=metrics)
    return metrics


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class TrialFiles:
    """The program's checkpoint folder and metrics file, saved through ctx as they change."""

    def __init__(self, work: Path):
        self.checkpoint_dir = work / "checkpoint"
        self.metrics_file = work / "metrics.jsonl"
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self._seen: tuple = ()

    def restore(self, saved: Any) -> None:
        if not isinstance(saved, dict):
            return
        for rel, data in saved.get("files", {}).items():
            path = self.checkpoint_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.metrics_file.write_bytes(saved.get("metrics", b""))
        self._seen = self._signature()

    def _signature(self) -> tuple:
        files = [p for p in [self.metrics_file, *self.checkpoint_dir.rglob("*")] if p.is_file()]
        return tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))

    def sync(self, ctx) -> None:
        """Save the folder and the metrics file if anything changed since the last save."""
        sig = self._signature()
        if sig == self._seen:
            return
        files = {str(p.relative_to(self.checkpoint_dir)): p.read_bytes()
                 for p in self.checkpoint_dir.rglob("*") if p.is_file() and not p.name.startswith(".")}
        metrics = self.metrics_file.read_bytes() if self.metrics_file.exists() else b""
        ctx.save_checkpoint({"files": files, "metrics": metrics})
        self._seen = sig

    def sync_loop(self, ctx, stop: threading.Event) -> None:
        while not stop.wait(SYNC_EVERY_S):
            try:
                self.sync(ctx)
            except OSError:  # a file replaced while read: the next round saves it
                pass

    def records(self) -> list[dict]:
        """The complete JSON lines of the metrics file (a torn last line is ignored)."""
        if not self.metrics_file.exists():
            return []
        out = []
        for line in self.metrics_file.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out
