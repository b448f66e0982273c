"""`workload: command` at run time: start the program, read its metrics, save its files.
The study-side schema is orchestrator/study/command_spec.py."""
from __future__ import annotations

import collections
import csv
import hashlib
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from orchestrator.study.command_spec import (TENSORBOARD_MISSING, CommandSpec, MetricsFrom, ParamSpec,
                                              metrics_model, params_model)
from orchestrator.study.contract import Diverged, TrialContext, Workload
from orchestrator.study.params import Metrics, metric

TAIL_LINES = 200
SYNC_EVERY_S = 1.0
QUIET_S = 0.1   # a checkpoint file written more recently than this may be half-written


class OutputLine(Metrics):
    stream: str | None = metric("stdout or stderr")
    line: int | None = metric("line number within the kept tail")
    text: str | None = metric("the line")


def make_workload(spec: dict[str, Any]) -> type[Workload[Any]]:
    """The workload class for one study's ``command:``, ``params:`` and ``metrics:``.
    ``spec`` = {"command", "params", "metrics", "base_dir"}; it travels in
    every trial's payload so each worker builds the same class."""
    command = CommandSpec.model_validate(spec["command"])
    declared = {k: ParamSpec.model_validate(v) for k, v in (spec.get("params") or {}).items()}
    types = dict(spec.get("metrics") or {})
    base_dir = Path(spec.get("base_dir") or ".")

    program = hashlib.sha256(json.dumps([command.argv, command.append]).encode()).hexdigest()[:8]

    class Command:
        __doc__ = f"runs `{shlex.join(command.argv)}` once per trial (workload: command)"
        name = "command"
        version = f"{command.version}:{program}"  # another program or argument template: other trials
        Params = params_model(declared)
        Metrics = metrics_model(types) if types else None
        artifacts = {"output": OutputLine}
        looked_in = ""

        def run(self, config: BaseModel, ctx: TrialContext) -> dict[str, Any]:
            # the program's placeholders and flags are filled from the values, in declared order
            metrics, self.looked_in = run_command(command, base_dir, config.model_dump(), ctx, types)
            return metrics

        def missing_metric(self, name: str) -> str:
            """The error of a trial that exited 0 without the study's metric (orchestrator/run/trial.py)."""
            return f"exited 0 but reported no `{name}` (looked in: {self.looked_in or 'nothing'})"

    return Command


# --------------------------------------------------------------------------------------------
def run_command(command: CommandSpec, base_dir: Path, config: dict[str, Any], ctx,
                types: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """Run the program for one try of a trial: (the row's metrics, where they were looked for)."""
    work = Path(tempfile.mkdtemp(prefix=f"overnight-{ctx.trial_id}-"))
    try:
        state = TrialFiles(work)
        saved = ctx.load_checkpoint()
        resumed = state.restore(saved)
        values = placeholder_values(config, ctx, state, base_dir)
        parsed = Parsed(command.metrics_from, types or {}, lambda text: _resolve(text, values, state, command, base_dir))
        parsed.restore(saved.get("parsed", []) if isinstance(saved, dict) else [])
        state.parsed = parsed
        argv = render_argv(command, config, values, resumed)
        env = trial_env(command, ctx, state, values)
        cwd = state.trial_dir if command.cwd == "trial" else (base_dir / command.cwd).resolve()
        if command.metrics_from is not None and command.metrics_from.tensorboard is not None:
            _event_accumulator()   # the reader is missing: say so before the program runs for hours
        proc, tails, drains = start(argv, cwd, env, parsed.line)
        stop = threading.Event()
        syncer = threading.Thread(target=state.sync_loop, args=(ctx, stop), daemon=True)
        syncer.start()
        code = wait(proc, command.timeout_s)
        stop.set()
        syncer.join()
        for t in drains:
            t.join(timeout=5)
        parsed.poll()
        state.sync(ctx)
        ctx.write_artifact("output", [{"stream": s, "line": i, "text": t}
                                      for s in ("stdout", "stderr") for i, t in enumerate(tails[s])])
        records = state.records()
        looked_in = parsed.looked_in(len(records))
        return finish(code, records, parsed.records, tails, command, ctx), looked_in
    finally:
        shutil.rmtree(work, ignore_errors=True)


def placeholder_values(config: dict[str, Any], ctx, state: "TrialFiles", base_dir: Path) -> dict[str, str]:
    return {**{k: _text(v) for k, v in config.items()}, "trial_id": ctx.trial_id, "seed": str(ctx.seed),
            "attempt": str(ctx.attempt), "python": sys.executable, "checkpoint_dir": str(state.checkpoint_dir),
            "trial_dir": str(state.trial_dir), "metrics_file": str(state.metrics_file),
            "data_root": str(ctx.data_root), "study_dir": str(base_dir.resolve())}


def _format(text: str, values: dict[str, str], where: str) -> str:
    try:
        return text.format_map(values)
    except KeyError as e:
        raise ValueError(f"command.{where}: no parameter {e.args[0]!r} for the placeholder") from None
    except (ValueError, IndexError, AttributeError) as e:
        raise ValueError(f"command.{where}: {e}") from None


def _resolve(text: str, values: dict[str, str], state: "TrialFiles", command: CommandSpec, base_dir: Path) -> Path:
    """A metrics_from path: placeholders filled, relative to the program's working directory."""
    path = Path(_format(text, values, "metrics_from"))
    if path.is_absolute():
        return path
    cwd = state.trial_dir if command.cwd == "trial" else (base_dir / command.cwd).resolve()
    return cwd / path


def render_argv(command: CommandSpec, config: dict[str, Any], values: dict[str, str], resumed: bool = False) -> list[str]:
    argv = [_format(a, values, f"argv.{i}") for i, a in enumerate(command.argv)]
    if command.append == "flags":
        argv += [x for k, v in config.items() if v is not None for x in (f"--{k}", _text(v))]
    elif command.append == "hydra":
        argv += [f"{k}={_text(v)}" for k, v in config.items() if v is not None]
    if resumed:
        argv += [_format(a, values, f"resume_args.{i}") for i, a in enumerate(command.resume_args)]
    return argv


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def trial_env(command: CommandSpec, ctx, state: "TrialFiles", values: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **{k: _format(v, values, f"env.{k}") for k, v in command.env.items()},
           "OVERNIGHT_TRIAL_ID": ctx.trial_id, "OVERNIGHT_SEED": str(ctx.seed),
           "OVERNIGHT_CHECKPOINT_DIR": str(state.checkpoint_dir), "OVERNIGHT_METRICS_FILE": str(state.metrics_file),
           "OVERNIGHT_TRIAL_DIR": str(state.trial_dir),
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


def start(argv: list[str], cwd: Path, env: dict[str, str], on_line=None):
    """Start the program; its output is kept (the tails) and handed line by line to ``on_line(stream, text)``."""
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    except OSError as e:
        raise RuntimeError(f"cannot start {argv[0]!r} in {cwd}: {e.strerror or e}") from None
    tails: dict[str, collections.deque[str]] = {"stdout": collections.deque(maxlen=TAIL_LINES), "stderr": collections.deque(maxlen=TAIL_LINES)}
    drains = [threading.Thread(target=_drain, args=(pipe, name, tails[name], on_line), daemon=True)
              for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for t in drains:
        t.start()
    return proc, tails, drains


def _drain(pipe, name: str, tail: collections.deque, on_line=None) -> None:
    for line in pipe:
        text = line.rstrip("\n")
        tail.append(text)
        if on_line is not None:
            try:
                on_line(name, text)
            except Exception:  # noqa: BLE001 - the pipe must be drained whatever a line holds
                pass


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


def finish(code: int | str, records: list[dict], parsed: list[dict], tails, command: CommandSpec, ctx) -> dict[str, Any]:
    """Report the history, then the row's metrics (or raise for a failed or diverged program).
    ``records``: the lines of OVERNIGHT_METRICS_FILE (each a step; the last is the row);
    ``parsed``: what metrics_from read (one value per step and metric, the later one winning;
    the row takes each metric's value at its last step)."""
    for i, rec in enumerate(records):
        step = rec.get("step", i)
        phase = rec.get("phase")
        numbers = {k: v for k, v in rec.items() if k not in ("step", "phase") and _is_number(v)}
        ctx.report(int(step) if _is_number(step) else i, phase=phase if isinstance(phase, str) else None, **numbers)
    steps = merge_steps(parsed)
    row: dict[str, Any] = {}
    for step, values in steps.items():
        numbers = {k: v for k, v in values.items() if _is_number(v)}
        if numbers:
            ctx.report(step, **numbers)
        row.update(values)
    if code == "timeout":
        raise TimeoutError(f"command timed out after {command.timeout_s:g} s")
    if code != 0:
        last = next((line for line in reversed(tails["stderr"]) if line.strip()), "")
        raise RuntimeError(f"command exited with code {code}" + (f": {last.strip()[:500]}" if last else ""))
    metrics = {**row, **{k: v for k, v in (records[-1] if records else {}).items() if k != "step"}}
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise Diverged(f"non-finite {', '.join(bad)} in the last metrics", metrics=metrics)
    return metrics


def merge_steps(parsed: list[dict]) -> dict[int, dict[str, Any]]:
    """step -> {metric: value}, in step order: a later value for a step replaces an earlier one
    (a resumed program repeats the steps after its checkpoint)."""
    steps: dict[int, dict[str, Any]] = {}
    for rec in parsed:
        steps.setdefault(int(rec["step"]), {}).update({k: v for k, v in rec.items() if k not in ("step", "source")})
    return dict(sorted(steps.items()))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --------------------------------------------------------------------------------------------
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def convert(value: Any, typ: str) -> Any:
    """``value`` (text from a line or a file, or a JSON value) as a declared metric type; ValueError if it is not one."""
    if typ == "str":
        return value if isinstance(value, str) else json.dumps(value)
    if typ == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"{value!r} is not a bool")
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a {typ}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a {'number' if typ == 'float' else 'whole number'}") from None
    if typ == "float":
        return number
    if not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)


class Parsed:
    """The records the study's ``metrics_from`` sources give: output lines as they arrive, files
    when polled (every SYNC_EVERY_S and at the end). They are saved with the trial's checkpoint
    (TrialFiles.sync), so a killed try loses none, and handed back to the next try. A record is
    {"source": "stdout.0", "step": 20, "val_loss": 3.75, ...}."""

    def __init__(self, spec: MetricsFrom | None, types: dict[str, str], resolve=None):
        self.records: list[dict[str, Any]] = []
        self.types = types
        self.lock = threading.Lock()
        self.problems: list[str] = []
        self.last_step: int | None = None
        self.counts: collections.Counter = collections.Counter()   # records per source
        self.patterns = {stream: [re.compile(p.pattern) for p in getattr(spec, stream)] if spec else []
                         for stream in ("stdout", "stderr")}
        self.readers: list[FileReader] = []
        for kind, src in (spec.files().items() if spec else []):
            self.readers.append({"csv": CsvReader, "jsonl": JsonlReader, "tensorboard": TensorBoardReader}[kind](
                kind, src, types, resolve(src.path) if resolve else Path(src.path)))
        self._seen: dict[tuple, Any] = {}   # (source, step, metric) -> value, of file sources

    def restore(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            self._add(rec)

    def _stepped(self, source: str) -> bool:
        """Whether a source's records carry their own step (a pattern without a `step` group counts)."""
        stream, _, i = source.partition(".")
        if stream not in self.patterns:
            return True
        patterns = self.patterns[stream]
        return int(i) < len(patterns) and "step" in patterns[int(i)].groupindex

    def _add(self, rec: dict[str, Any]) -> None:
        self.records.append(rec)
        self.counts[rec["source"]] += 1
        if self._stepped(rec["source"]):
            self.last_step = rec["step"]
        if not rec["source"].startswith(("stdout.", "stderr.")):
            for k, v in rec.items():
                if k not in ("source", "step"):
                    self._seen[(rec["source"], rec["step"], k)] = v

    def _problem(self, text: str) -> None:
        if len(self.problems) < 3 and text not in self.problems:
            self.problems.append(text)

    def line(self, stream: str, text: str) -> None:
        """One line of the program's output (called by the threads that read stdout and stderr)."""
        for i, rx in enumerate(self.patterns[stream]):
            m = rx.search(text)
            if m is None:
                continue
            source = f"{stream}.{i}"
            values: dict[str, Any] = {}
            step = None
            for name, raw in m.groupdict().items():
                if raw is None:
                    continue
                try:
                    if name == "step":
                        step = convert(raw, "int")
                    else:
                        values[name] = convert(raw, self.types.get(name, "float"))
                except ValueError as e:
                    self._problem(f"{source}: {name} {e}")
            with self.lock:
                if step is None:   # the step of the last line that had one, else 0, 1, 2, ...
                    step = self.last_step if self.last_step is not None else self.counts[source]
                elif not values:
                    self.last_step = step
                if values:
                    self._add({"source": source, "step": step, **values})

    def poll(self) -> None:
        """Read the file sources again; what is new or changed becomes records."""
        for reader in self.readers:
            try:
                rows = reader.read()
            except OSError:
                continue   # a file replaced while read: the next poll reads it
            except Exception as e:  # noqa: BLE001 - e.g. a corrupt event file: said where the metric is looked for
                self._problem(f"{reader.kind} {reader.path}: {type(e).__name__}: {str(e)[:200]}")
                continue
            for problem in reader.problems:
                self._problem(f"{reader.kind} {reader.path}: {problem}")
            with self.lock:
                for step, values in rows:
                    new = {k: v for k, v in values.items() if self._seen.get((reader.kind, step, k), _NONE) != v}
                    if new:
                        self._add({"source": reader.kind, "step": step, **new})

    def looked_in(self, metrics_file_lines: int) -> str:
        """Where metrics were looked for, and what was found there (for a trial without its metric)."""
        parts = []
        for stream, patterns in self.patterns.items():
            if patterns:
                found = sum(self.counts[f"{stream}.{i}"] for i in range(len(patterns)))
                parts.append(f"{stream}: {len(patterns)} pattern{'s' if len(patterns) > 1 else ''}, "
                             f"{found} matching line{'' if found == 1 else 's'}")
        for reader in self.readers:
            parts.append(f"{reader.kind} {reader.path}: {reader.found()}")
        parts.append(f"OVERNIGHT_METRICS_FILE: {metrics_file_lines or 'no'} line{'' if metrics_file_lines == 1 else 's'}")
        text = "; ".join(parts)
        return text + (f"; problems: {'; '.join(self.problems)}" if self.problems else "")


_NONE = object()


class FileReader:
    """A file source: ``read()`` -> [(step, {metric: value})] of the whole file as it is now."""

    def __init__(self, kind: str, spec: Any, types: dict[str, str], path: Path):
        self.kind, self.spec, self.types, self.path = kind, spec, types, path
        self.problems: list[str] = []
        self.rows = 0
        self._sig: tuple | None = None
        self._last: list = []

    def mapping(self) -> dict[str, str]:
        """file name (column, key, tag) -> declared metric."""
        explicit = self.spec.tags if self.kind == "tensorboard" else self.spec.columns
        if explicit is not None:
            return dict(explicit)
        return {m: m for m in self.types}

    def found(self) -> str:
        if not self.path.exists():
            return "not found"
        return f"{self.rows} {'event' if self.kind == 'tensorboard' else 'row'}{'' if self.rows == 1 else 's'}"

    def _values(self, record: dict[str, Any], mapping: dict[str, str], where: str) -> dict[str, Any]:
        out = {}
        for name, metric_name in mapping.items():
            raw = record.get(name)
            if raw is None or raw == "":
                continue
            try:
                out[metric_name] = convert(raw, self.types.get(metric_name, "float"))
            except ValueError as e:
                self._note(f"{where}: {name} {e}")
        return out

    def _note(self, text: str) -> None:
        if len(self.problems) < 3 and text not in self.problems:
            self.problems.append(text)

    def _changed(self) -> bool:
        st = self.path.stat()
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if sig == self._sig:
            return False
        self._sig = sig
        return True

    def _step(self, record: dict[str, Any], index: int, keys) -> int | None:
        name = self.spec.step or "step"
        if name not in keys:
            if self.spec.step is not None:
                self._note(f"no column {name!r} for the step")
                return None
            return index
        try:
            return convert(record.get(name), "int")
        except ValueError as e:
            self._note(f"step {e}")
            return None

    def read(self) -> list[tuple[int, dict[str, Any]]]:
        if not self.path.is_file():
            return []
        if not self._changed():
            return self._last
        text = self.path.read_text(errors="replace")
        text = text[:text.rfind("\n") + 1]   # complete lines only: the program may be writing the last
        self._last = self.parse(text)
        return self._last

    def parse(self, text: str) -> list[tuple[int, dict[str, Any]]]:
        raise NotImplementedError


class CsvReader(FileReader):
    def parse(self, text: str) -> list[tuple[int, dict[str, Any]]]:
        reader = csv.DictReader(io.StringIO(text))
        keys = reader.fieldnames or []
        mapping = self.mapping()
        if self.spec.columns is None:   # the declared metrics the file has
            mapping = {k: v for k, v in mapping.items() if k in keys}
        elif keys:
            for name in mapping:
                if name not in keys:
                    self._note(f"no column {name!r}")
        out = []
        self.rows = 0
        for i, rec in enumerate(reader):
            self.rows += 1
            step = self._step(rec, i, keys)
            values = self._values(rec, mapping, f"line {i + 2}")
            if step is not None and values:
                out.append((step, values))
        return out


class JsonlReader(FileReader):
    def parse(self, text: str) -> list[tuple[int, dict[str, Any]]]:
        out = []
        self.rows = 0
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                self._note(f"line {i + 1} is not JSON")
                continue
            if not isinstance(rec, dict):
                self._note(f"line {i + 1} is not a JSON object")
                continue
            mapping = self.mapping()
            step = self._step(rec, self.rows, rec)
            self.rows += 1
            values = self._values(rec, mapping, f"line {i + 1}")
            if step is not None and values:
                out.append((step, values))
        return out


def _event_accumulator():
    """tensorboard's reader of event files, or RuntimeError(TENSORBOARD_MISSING)."""
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError:
        raise RuntimeError(TENSORBOARD_MISSING) from None
    return event_accumulator


class TensorBoardReader(FileReader):
    """Scalars of the event files under a folder (each folder with event files is one run, read
    incrementally by tensorboard's EventAccumulator)."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._runs: dict[Path, Any] = {}

    def found(self) -> str:
        if not self.path.exists():
            return "not found"
        if not self._runs:
            return "no event files"
        return f"{self.rows} scalar{'' if self.rows == 1 else 's'} of the mapped tags"

    def read(self) -> list[tuple[int, dict[str, Any]]]:
        if not self.path.exists():
            return []
        ea = _event_accumulator()
        files = [self.path] if self.path.is_file() else sorted(self.path.rglob("*tfevents*"))
        for folder in sorted({p if p.is_dir() else p.parent for p in files if p.is_file()}):
            if folder not in self._runs:
                self._runs[folder] = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
        steps: dict[int, dict[str, Any]] = {}
        self.rows = 0
        for acc in self._runs.values():
            acc.Reload()
            tags = acc.Tags()
            mapping = self.mapping()
            for tag in tags.get("scalars", []):
                if tag in mapping:
                    for e in acc.Scalars(tag):
                        self._put(steps, e.step, mapping[tag], e.value)
            for tag in tags.get("tensors", []):
                if tag in mapping:
                    for e in acc.Tensors(tag):
                        self._put(steps, e.step, mapping[tag], _scalar(e.tensor_proto))
        return sorted(steps.items())

    def _put(self, steps: dict, step: int, metric_name: str, value: Any) -> None:
        if value is None:
            return
        try:
            steps.setdefault(int(step), {})[metric_name] = convert(value, self.types.get(metric_name, "float"))
            self.rows += 1
        except ValueError as e:
            self._note(f"step {step}: {metric_name} {e}")


def _scalar(proto) -> Any:
    from tensorboard.util import tensor_util

    arr = tensor_util.make_ndarray(proto)
    return arr.item() if arr.size == 1 else None


# --------------------------------------------------------------------------------------------
class TrialFiles:
    """The program's folders and metrics file, and the parsed records, saved through ctx as they change."""

    def __init__(self, work: Path):
        self.checkpoint_dir = work / "checkpoint"
        self.trial_dir = work / "trial"
        self.metrics_file = work / "metrics.jsonl"
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.trial_dir.mkdir(parents=True, exist_ok=True)
        self.parsed: Parsed | None = None
        self._seen: tuple = ()
        self._polled: tuple = ()              # the checkpoint folder's files at the previous poll
        self._settled: dict[str, bytes] = {}  # its last settled contents, the ones saved
        self._settled_sig: tuple = ()

    def restore(self, saved: Any) -> bool:
        """Put a saved checkpoint back; True when the checkpoint folder has files again."""
        if not isinstance(saved, dict):
            return False
        for rel, data in saved.get("files", {}).items():
            path = self.checkpoint_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.metrics_file.write_bytes(saved.get("metrics", b""))
        self._settled, self._settled_sig = dict(saved.get("files", {})), self._files_signature()
        self._polled, self._seen = self._settled_sig, self._signature()
        return bool(saved.get("files"))

    def _checkpoint_files(self) -> list[Path]:
        return [p for p in self.checkpoint_dir.rglob("*") if p.is_file() and not p.name.startswith(".")]

    def _files_signature(self) -> tuple:
        return tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in self._checkpoint_files()))

    def _signature(self) -> tuple:
        meta = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in [self.metrics_file] if p.is_file())
        parsed = len(self.parsed.records) if self.parsed is not None else 0
        return meta, self._settled_sig, parsed

    def sync(self, ctx, final: bool = True) -> bool:
        """Save the checkpoint folder, the metrics file and the parsed records if anything changed
        since the last save. While the program runs (``final=False``) the folder's files are taken
        only when settled: none written in the last QUIET_S, and none changed while they are read.
        So a script that writes its checkpoint in place (``torch.save(..., "ckpt.pt")``) is not
        saved half-written; meanwhile the last settled copy is kept. At the end the folder is
        taken as it is. Returns whether the folder's files were settled."""
        files_sig = self._files_signature()
        quiet = all(time.time_ns() - mtime >= QUIET_S * 1e9 for _, _, mtime in files_sig)
        settled = final or quiet or files_sig == self._settled_sig
        if settled and files_sig != self._settled_sig:
            files = {str(p.relative_to(self.checkpoint_dir)): p.read_bytes() for p in self._checkpoint_files()}
            if final or self._files_signature() == files_sig:
                self._settled, self._settled_sig = files, files_sig
            else:
                settled = False
        sig = self._signature()
        if sig == self._seen:
            return settled
        metrics = self.metrics_file.read_bytes() if self.metrics_file.exists() else b""
        state: dict[str, Any] = {"files": dict(self._settled), "metrics": metrics}
        if self.parsed is not None:
            with self.parsed.lock:
                state["parsed"] = list(self.parsed.records)
        ctx.save_checkpoint(state)
        self._seen = sig
        return settled

    def sync_loop(self, ctx, stop: threading.Event) -> None:
        while not stop.wait(SYNC_EVERY_S):
            try:
                if self.parsed is not None:
                    self.parsed.poll()
                # a folder still being written is tried again soon, not a whole round later
                for _ in range(int(SYNC_EVERY_S / QUIET_S)):
                    if self.sync(ctx, final=False) or stop.wait(QUIET_S):
                        break
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
