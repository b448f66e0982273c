"""`workload: command`: any training program as a workload, one process per trial.

The study says how to start the program (``command:``) and declares its parameters (``params:``)
and metrics (``metrics:``); they are checked like a built-in workload's. ``command.argv``,
``resume_args`` and ``env`` take placeholders: ``{param}`` for a parameter's value, and
(BUILTINS) ``{trial_id}``, ``{seed}``, ``{attempt}``, ``{python}``, ``{data_root}``,
``{study_dir}``, and the trial's folders:

    {checkpoint_dir}  saved to the results location (local or s3://) as it changes, and handed
                      back (on any node) when the trial resumes; when it comes back with files,
                      ``resume_args`` (e.g. [--init_from=resume]) are appended to argv
    {trial_dir}       a fresh empty folder of this try's own (not saved); ``cwd: trial`` runs the
                      program there (the default, ``cwd: .``, is the study file's folder)

Every placeholder must be a parameter or a built-in when the study loads. The program also
finds, in its environment:

    OVERNIGHT_TRIAL_ID, OVERNIGHT_SEED, OVERNIGHT_ATTEMPT, OVERNIGHT_CHECKPOINT_DIR,
    OVERNIGHT_TRIAL_DIR, OVERNIGHT_DATA_ROOT, OVERNIGHT_SCALE
    OVERNIGHT_METRICS_FILE    append JSON lines here: every line is a step of the history, the
                              last line's values are the row's metrics
    OVERNIGHT_DEVICE, CUDA_VISIBLE_DEVICES, OVERNIGHT_GPU_IDS   what Ray assigned

A program that knows nothing of overnight reports through ``command.metrics_from`` instead
(class MetricsFrom): regular expressions over its stdout and stderr lines, whose named groups are
declared metrics or ``step`` (read as the lines arrive), and CSV, JSON-lines or TensorBoard files
it writes, their columns or tags mapped to declared metrics (read every second and at the end).
What they give is saved with the checkpoint as it arrives, so a killed try loses none of it. One
value per step and metric (a resumed program that repeats steps replaces them); the row takes
each metric's value at its last step, and OVERNIGHT_METRICS_FILE's last line wins over them.

The exit code decides the status (non-zero: failed after retries, with the last line of stderr as
the error; a non-finite metric: diverged; exit 0 without the study's metric: failed, saying
where it looked, unless the study sets ``allow_missing_metric: true``). The tails of stdout and
stderr are kept as the trial's ``output`` artifact. See README "Writing a workload".
"""
from __future__ import annotations

import re
import string
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from orchestrator.study.params import Metrics, Params, knob, metric, param, suggest

_TYPES = {"float": float, "int": int, "str": str, "bool": bool}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# placeholders every template (argv, resume_args, env, metrics_from paths) may use besides the parameters
BUILTINS = {
    "python": "the interpreter overnight runs on",
    "trial_id": "the trial id",
    "seed": "the trial's seed",
    "attempt": "1 on the first try, 2 on the first retry or resume, ...",
    "checkpoint_dir": "a folder saved to the results location as it changes and handed back on resume",
    "trial_dir": "a fresh empty folder of this try's own (not saved)",
    "metrics_file": "append JSON lines here: a step of the history each",
    "data_root": "where datasets are (--data-root)",
    "study_dir": "the folder of the study file",
}
TENSORBOARD_MISSING = "install tensorboard to read event files"


def _regex(text: str) -> str:
    try:
        rx = re.compile(text)
    except re.error as e:
        raise ValueError(f"not a regular expression: {e.msg} at position {e.pos}") from None
    if not rx.groupindex:
        raise ValueError("has no named group: write (?P<name>...) for each value, named after a declared metric or step")
    return text


class PatternSource(_Strict):
    """Lines of the program's output that carry metrics."""

    pattern: str = Field(description="a regular expression searched in every line; its named groups are "
                         "declared metrics (converted to their type) or `step`")

    _pattern = field_validator("pattern")(classmethod(lambda cls, v: _regex(v)))


class FileSource(_Strict):
    """A CSV file (with a header line) or a JSON-lines file the program writes."""

    path: str = Field(description="the file; {placeholders} as in argv, relative to the program's working directory")
    columns: dict[str, str] | None = Field(None, description="column (or key) -> declared metric; default: every "
                                           "declared metric under its own name")
    step: str | None = Field(None, description="the column (or key) with the step; default: `step` when the file "
                             "has it, else the row number")


class TensorBoardSource(_Strict):
    """TensorBoard event files the program writes (read with the tensorboard package)."""

    path: str = Field(description="a folder searched for event files, its subfolders too; {placeholders} as in argv")
    tags: dict[str, str] | None = Field(None, description="scalar tag -> declared metric; default: every declared "
                                        "metric under its own name")


def _path_only(v: Any) -> Any:
    return {"path": v} if isinstance(v, str) else v


def _patterns(v: Any) -> Any:
    return [{"pattern": p} if isinstance(p, str) else p for p in v] if isinstance(v, list) else v


class MetricsFrom(_Strict):
    """Where a program that writes no OVERNIGHT_METRICS_FILE puts its metrics. A string is short for
    {pattern: ...} (stdout, stderr) or {path: ...} (csv, jsonl, tensorboard)."""

    stdout: list[PatternSource] = Field(default_factory=list)
    stderr: list[PatternSource] = Field(default_factory=list)
    csv: FileSource | None = None
    jsonl: FileSource | None = None
    tensorboard: TensorBoardSource | None = None

    _lines = field_validator("stdout", "stderr", mode="before")(classmethod(lambda cls, v: _patterns(v)))
    _files = field_validator("csv", "jsonl", "tensorboard", mode="before")(classmethod(lambda cls, v: _path_only(v)))

    def files(self) -> dict[str, FileSource | TensorBoardSource]:
        return {k: getattr(self, k) for k in ("csv", "jsonl", "tensorboard") if getattr(self, k) is not None}


class CommandSpec(_Strict):
    """How to start the program for one trial."""

    argv: list[str] = Field(min_length=1, description="program and arguments; {key} is replaced by the "
                            "config value, {trial_dir}, {checkpoint_dir}, {python}, ... by what BUILTINS says")
    append: Literal["none", "flags", "hydra"] = Field(
        "none", description="also pass every parameter: flags = `--key value`, hydra = `key=value`")
    cwd: str = Field(".", description="working directory, relative to the study file; `trial`: the try's own "
                     "empty folder, {trial_dir}")
    timeout_s: float | None = Field(None, gt=0, description="kill the program after this many seconds")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables ({placeholders} as in argv)")
    resume_args: list[str] = Field(default_factory=list, description="appended to argv when the trial resumes with "
                                   "files in its checkpoint folder, e.g. [--init_from=resume]")
    metrics_from: MetricsFrom | None = Field(None, description="read metrics from the output or from files "
                                             "(besides OVERNIGHT_METRICS_FILE)")
    version: str = Field("1", description="bump when the program changes its results (part of every trial id)")

    def templates(self) -> list[tuple[str, str]]:
        """(field, text) of every text with {placeholders}."""
        out = [(f"argv.{i}", a) for i, a in enumerate(self.argv)]
        out += [(f"resume_args.{i}", a) for i, a in enumerate(self.resume_args)]
        out += [(f"env.{k}", v) for k, v in self.env.items()]
        if self.metrics_from is not None:
            out += [(f"metrics_from.{k}.path", src.path) for k, src in self.metrics_from.files().items()]
        return out


def placeholders(text: str) -> list[str]:
    """The {names} in ``text`` (ValueError for unbalanced braces)."""
    return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]


def check_command(command: CommandSpec, params: set[str], metrics: dict[str, str]) -> None:
    """What the study file's command: section refers to exists: every {placeholder} is a parameter
    or a built-in, every metric a pattern, column or tag names is declared. Raises
    ValueError("command.FIELD: message")."""
    known = set(params) | set(BUILTINS)
    for where, text in command.templates():
        try:
            names = placeholders(text)
        except ValueError as e:
            raise ValueError(f"command.{where}: {e} (write {{{{ and }}}} for literal braces)") from None
        for name in names:
            if name not in known:
                hint = suggest(name, known)
                raise ValueError(f"command.{where}: no parameter {name!r} for the placeholder {{{name}}}{hint} "
                                 f"(parameters: {', '.join(sorted(params)) or 'none'}; built-in: "
                                 f"{', '.join(BUILTINS)})")
    src = command.metrics_from
    if src is None:
        return
    declared = f"declared metrics: {', '.join(metrics)}" if metrics else "no metrics are declared (metrics:)"
    for stream in ("stdout", "stderr"):
        for i, p in enumerate(getattr(src, stream)):
            groups = list(re.compile(p.pattern).groupindex)
            for g in groups:
                if g != "step" and g not in metrics:
                    raise ValueError(f"command.metrics_from.{stream}.{i}.pattern: group {g!r} is not a declared "
                                     f"metric{suggest(g, metrics)} ({declared}; or `step`)")
            if groups == ["step"]:
                raise ValueError(f"command.metrics_from.{stream}.{i}.pattern: names no metric, only the step ({declared})")
    for kind, f in src.files().items():
        key = "tags" if kind == "tensorboard" else "columns"
        mapping = getattr(f, key)
        if mapping is None and not metrics:
            raise ValueError(f"command.metrics_from.{kind}: {declared}")
        for name, metric_name in (mapping or {}).items():
            if metric_name not in metrics:
                raise ValueError(f"command.metrics_from.{kind}.{key}.{name}: {metric_name!r} is not a declared "
                                 f"metric{suggest(metric_name, metrics)} ({declared})")


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
    fields: dict[str, Any] = {k: (_TYPES[t] | None, metric(k)) for k, t in specs.items()}
    return create_model("CommandMetrics", __base__=Metrics, **fields)
