"""Typed parameters and metrics: what a workload takes in and what its rows hold.

A workload declares (as class attributes, in the style of Hydra's structured configs):

    class Params(overnight_params.Params):      # every parameter: type, default, range, one-line doc
        bits: Literal[2, 4, 8] = param(4, "activation bit width")
        lr: float = param(1e-3, "learning rate", gt=0)
        stage_cache: bool = knob(True, "reuse trained backbones")   # execution only: not hashed

    class Metrics(overnight_params.Metrics):    # every metric column of the row, with its type
        loss: float = metric("final training loss")

    artifacts = {"layers": LayerRow}            # optional: the columns of each per-trial table

The orchestrator validates every trial config against ``Params`` before Ray starts, hashes the
canonical config (``id_config``) into the trial id, and writes every row with one schema built
from the fixed columns, ``Params`` and ``Metrics`` (see ``row_schema``).
"""
from __future__ import annotations

import difflib
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.errors import UserError

KNOB = "overnight_knob"


class Params(BaseModel):
    """Base of a workload's parameter model: unknown keys are errors and values are checked
    strictly ("4" is not an int, true is not a number), except that an int is a valid float.

    >>> from typing import Literal
    >>> import orchestrator as overnight
    >>> class Params(overnight.Params):
    ...     lr: float = overnight.param(0.1, "step size", gt=0)
    ...     bits: Literal[2, 4, 8] = overnight.param(4, "activation bit width")
    >>> Params(lr=1, bits=8)
    Params(lr=1.0, bits=8)
    >>> Params(lr=0.5).bits
    4
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AnyParams(Params):
    """What ``run`` receives from a workload that declares no ``Params``: the study's keys as they
    were written (not checked, not converted), each an attribute (``config.x``; ``getattr(config,
    "x", default)`` for a key a trial may lack); ``config.model_dump()`` gives them as a dict.

    >>> import orchestrator as overnight
    >>> config = overnight.AnyParams(x=3, name="a")
    >>> config.x, getattr(config, "y", 0)
    (3, 0)
    >>> config.model_dump()
    {'x': 3, 'name': 'a'}
    """

    model_config = ConfigDict(extra="allow", strict=False, frozen=True)


class Metrics(BaseModel):
    """Base of a workload's metric declaration: one field per row column (all nullable).

    >>> import orchestrator as overnight
    >>> class Metrics(overnight.Metrics):
    ...     loss: float | None = overnight.metric("final training loss")
    ...     accuracy: float | None = overnight.metric("test accuracy")
    >>> Metrics(loss=0.25)
    Metrics(loss=0.25, accuracy=None)
    >>> list(Metrics.model_fields)
    ['loss', 'accuracy']
    """

    model_config = ConfigDict(extra="forbid")


def param(default: Any, doc: str, **constraints: Any) -> Any:
    """A parameter: its default, a one-line doc, and pydantic constraints (ge, le, gt, lt, ...).

    >>> import orchestrator as overnight
    >>> class Params(overnight.Params):
    ...     steps: int = overnight.param(4, "training steps", ge=1)
    >>> Params().steps, Params.model_fields["steps"].description
    (4, 'training steps')
    >>> overnight.validate(Params, {"steps": 0})
    Traceback (most recent call last):
        ...
    orchestrator.study.params.ParamError: steps: Input should be greater than or equal to 1 (got 0)
    """
    return Field(default, description=doc, **constraints)


def knob(default: Any, doc: str, **constraints: Any) -> Any:
    """An execution-only parameter (a cache switch, a path): passed to ``run`` and kept in the row,
    but not part of the trial id, because it does not change the result.

    >>> import orchestrator as overnight
    >>> class Params(overnight.Params):
    ...     lr: float = overnight.param(0.1, "step size")
    ...     stage_cache: bool = overnight.knob(True, "reuse trained backbones")
    >>> overnight.validate(Params, {"stage_cache": False})
    {'lr': 0.1, 'stage_cache': False}
    >>> overnight.is_knob(Params, "stage_cache")
    True
    """
    return Field(default, description=doc, json_schema_extra={KNOB: True}, **constraints)


def metric(doc: str) -> Any:
    """A metric column; None (null) when the trial did not produce it.

    >>> import orchestrator as overnight
    >>> class Metrics(overnight.Metrics):
    ...     loss: float | None = overnight.metric("final training loss")
    >>> Metrics().loss is None
    True
    >>> Metrics.model_fields["loss"].description
    'final training loss'
    """
    return Field(None, description=doc)


# --------------------------------------------------------------------------------------------
def declared(workload: Any) -> tuple[type[BaseModel] | None, type[BaseModel] | None, dict[str, type[BaseModel]]]:
    """(Params, Metrics, artifacts) a workload class declares; each may be absent."""
    from orchestrator.results.rows import RESERVED  # here: rows imports pyarrow, which `import orchestrator` must not

    params = getattr(workload, "Params", None)
    metrics = getattr(workload, "Metrics", None)
    arts = dict(getattr(workload, "artifacts", None) or {})
    if params is not None and not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise UserError(f"workload {workload.name!r}: Params must be a pydantic model class", field="workload")
    if metrics is not None and not (isinstance(metrics, type) and issubclass(metrics, BaseModel)):
        raise UserError(f"workload {workload.name!r}: Metrics must be a pydantic model class", field="workload")
    for model, what in ((params, "parameter"), (metrics, "metric")):
        for name in (model.model_fields if model else {}):
            if name in RESERVED:
                raise UserError(f"workload {workload.name!r}: {what} {name!r} is a reserved row column", field="workload")
    return params, metrics, arts


def is_knob(model: type[BaseModel], name: str) -> bool:
    """Whether ``model``'s field ``name`` was declared with ``knob`` (execution only: kept in the
    row, left out of the trial id).

    >>> import orchestrator as overnight
    >>> class Params(overnight.Params):
    ...     lr: float = overnight.param(0.1, "step size")
    ...     cache_dir: str = overnight.knob("", "where to cache")
    >>> overnight.is_knob(Params, "cache_dir"), overnight.is_knob(Params, "lr")
    (True, False)
    """
    extra = model.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(KNOB))


class ParamError(ValueError):
    """A config a workload's Params rejects: which key, what is wrong, the value.

    >>> import orchestrator as overnight
    >>> class Params(overnight.Params):
    ...     lr: float = overnight.param(0.1, "step size")
    >>> try:
    ...     overnight.validate(Params, {"lrr": 0.2})
    ... except overnight.ParamError as e:
    ...     print(e.key, e.value, e.unknown, "|", e)
    lrr 0.2 True | lrr: unknown parameter (did you mean `lr`?)
    """

    def __init__(self, key: str, message: str, value: Any = None, unknown: bool = False):
        super().__init__(f"{key}: {message}")
        self.key, self.message, self.value, self.unknown = key, message, value, unknown


def suggest(name: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def validate(model: type[Params], config: dict[str, Any]) -> dict[str, Any]:
    """The full config (every parameter, defaults filled, values normalised to their declared
    types). Raises ParamError naming the first bad key.

    >>> import orchestrator as overnight
    >>> class Params(overnight.Params):
    ...     lr: float = overnight.param(0.1, "step size", gt=0)
    ...     steps: int = overnight.param(4, "training steps")
    >>> overnight.validate(Params, {"lr": 1})
    {'lr': 1.0, 'steps': 4}
    >>> overnight.validate(Params, {"steps": "4"})
    Traceback (most recent call last):
        ...
    orchestrator.study.params.ParamError: steps: Input should be a valid integer (got '4')
    """
    try:
        return model.model_validate(config).model_dump(mode="python")
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(p) for p in err["loc"]]
        key = loc[0] if loc else ""
        if err["type"] == "extra_forbidden":
            known = list(model.model_fields)
            raise ParamError(key, f"unknown parameter{suggest(key, known)}", config.get(key), unknown=True) from None
        msg = err["msg"].removeprefix("Value error, ")
        if not key:  # a model-level check: its message names the fields itself
            raise ParamError("", msg) from None
        value = err.get("input")
        raise ParamError(".".join(loc), f"{msg} (got {value!r})", value) from None


def id_config(model: type[BaseModel] | None, full: dict[str, Any]) -> dict[str, Any]:
    """What a trial id hashes: the values that differ from their defaults, knobs left out. So an
    explicit default equals an omitted one, and a new parameter with a default changes no id."""
    if model is None:
        return dict(full)
    out = {}
    for name, info in model.model_fields.items():
        if name not in full or is_knob(model, name):
            continue
        default = info.get_default(call_default_factory=True)
        if not _same(full[name], default):
            out[name] = full[name]
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type (so True is not 1), after normalisation by the model."""
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------------------------
def describe(workload: Any) -> str:
    """Every parameter (type, default, doc) and every metric of a workload, as plain text."""
    params, metrics, arts = declared(workload)
    lines = [f"{workload.name} v{workload.version}"]
    doc = (getattr(workload, "__doc__", "") or "").strip().splitlines()
    if doc:
        lines.append(f"  {doc[0]}")
    lines.append("")
    lines.append("Parameters:" if params else "Parameters: not declared (any key is accepted, types inferred)")
    for name, f in (params.model_fields.items() if params else []):
        typ = _type_text(f.annotation)
        limits = ", ".join(f"{sym} {getattr(m, attr)}" for m in f.metadata for attr, sym in _LIMITS
                           if getattr(m, attr, None) is not None)
        default = f.get_default(call_default_factory=True)
        tag = " [execution only, not in the trial id]" if params and is_knob(params, name) else ""
        lines.append(f"  {name}: {typ} = {default!r}{'  (' + limits + ')' if limits else ''}{tag}")
        if f.description:
            lines.append(f"      {f.description}")
    lines.append("")
    lines.append("Metrics:" if metrics else "Metrics: not declared (returned metrics go to extra_metrics)")
    for name, f in (metrics.model_fields.items() if metrics else []):
        lines.append(f"  {name}: {_type_text(f.annotation)}" + (f"  {f.description}" if f.description else ""))
    for art, model in arts.items():
        lines.append("")
        lines.append(f"Artifact {art}:")
        for name, f in model.model_fields.items():
            lines.append(f"  {name}: {_type_text(f.annotation)}" + (f"  {f.description}" if f.description else ""))
    lines.append("")
    lines.extend(_determinism_lines(workload))
    return "\n".join(lines)


def _determinism_lines(workload: Any) -> list[str]:
    """What ``determinism`` (orchestrator/study/determinism.py, ``NotBitIdentical``) declares."""
    from orchestrator.study.determinism import determinism

    entries = determinism(workload)
    knobs = "--bundle, --group, --max-concurrent, resumed or run straight through"
    if entries is None:
        return ["Determinism: not declared"]
    if not entries:
        return [f"Determinism: every metric is bit-identical on one machine whatever {knobs}"]
    return [f"Determinism: bit-identical on one machine whatever {knobs}, except:"] + [f"  {e.text()}" for e in entries]


_LIMITS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "min length"),
           ("max_length", "max length"))


def _type_text(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return " | ".join(repr(v) for v in typing.get_args(annotation))
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or str(annotation).replace("typing.", "")
