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
import json
import math
import types
import typing
from datetime import datetime
from typing import Any, Literal, Union

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.errors import UserError

# columns every result row has, in order, with their types
ROW_FIELDS: list[tuple[str, pa.DataType]] = [
    ("trial_id", pa.string()), ("study", pa.string()), ("scale", pa.string()), ("status", pa.string()),
]
ROW_TAIL: list[tuple[str, pa.DataType]] = [
    ("started_at", pa.timestamp("us", tz="UTC")), ("finished_at", pa.timestamp("us", tz="UTC")),
    ("wall_s", pa.float64()), ("host", pa.string()), ("device", pa.string()), ("attempts", pa.int64()),
    ("error", pa.string()),
    # metrics a workload returned without declaring them, as one JSON object (see docs in README)
    ("extra_metrics", pa.string()),
]
RESERVED = {name for name, _ in ROW_FIELDS + ROW_TAIL}
KNOB = "overnight_knob"


class Params(BaseModel):
    """Base of a workload's parameter model: unknown keys are errors and values are checked
    strictly ("4" is not an int, true is not a number), except that an int is a valid float."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Metrics(BaseModel):
    """Base of a workload's metric declaration: one field per row column (all nullable)."""

    model_config = ConfigDict(extra="forbid")


def param(default: Any, doc: str, **constraints: Any) -> Any:
    """A parameter: its default, a one-line doc, and pydantic constraints (ge, le, gt, lt, ...)."""
    return Field(default, description=doc, **constraints)


def knob(default: Any, doc: str, **constraints: Any) -> Any:
    """An execution-only parameter (a cache switch, a path): passed to ``run`` and kept in the row,
    but not part of the trial id, because it does not change the result."""
    return Field(default, description=doc, json_schema_extra={KNOB: True}, **constraints)


def metric(doc: str) -> Any:
    """A metric column; None (null) when the trial did not produce it."""
    return Field(None, description=doc)


# --------------------------------------------------------------------------------------------
def declared(workload: Any) -> tuple[type[Params] | None, type[Metrics] | None, dict[str, type[BaseModel]]]:
    """(Params, Metrics, artifacts) a workload class declares; each may be absent."""
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
    extra = model.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(KNOB))


class ParamError(ValueError):
    """A config a workload's Params rejects: which key, what is wrong, the value."""

    def __init__(self, key: str, message: str, value: Any = None, unknown: bool = False):
        super().__init__(f"{key}: {message}")
        self.key, self.message, self.value, self.unknown = key, message, value, unknown


def suggest(name: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def validate(model: type[Params], config: dict[str, Any]) -> dict[str, Any]:
    """The full config (every parameter, defaults filled, values normalised to their declared
    types). Raises ParamError naming the first bad key."""
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


def id_config(model: type[Params] | None, full: dict[str, Any]) -> dict[str, Any]:
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
_SCALARS: dict[Any, pa.DataType] = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string(),
                                    datetime: pa.timestamp("us", tz="UTC")}


def arrow_type(annotation: Any) -> pa.DataType:
    """The Parquet column type for a declared Python type. Lists and mappings are stored as JSON
    text (one cell), Literals by the type of their values, Optional[X] as a nullable X."""
    origin = typing.get_origin(annotation)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if origin is Literal:
        kinds = {type(v) for v in typing.get_args(annotation)}
        if kinds == {bool}:
            return pa.bool_()
        if kinds <= {int, bool} and bool not in kinds:
            return pa.int64()
        if kinds <= {int, float} and bool not in kinds:
            return pa.float64()
        return pa.string()
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        kinds = {arrow_type(a) for a in args}
        if len(kinds) == 1:
            return kinds.pop()
        if kinds <= {pa.int64(), pa.float64()}:
            return pa.float64()
        return pa.string()
    if typing.get_origin(annotation) is typing.Annotated:
        return arrow_type(typing.get_args(annotation)[0])
    return pa.string()  # list, dict, nested models: JSON text


def inferred_type(values: list[Any]) -> pa.DataType:
    """Column type for an undeclared parameter, from every value it takes in the study."""
    kinds = {type(v) for v in values if v is not None}
    if kinds == {bool}:
        return pa.bool_()
    if kinds == {int}:
        return pa.int64()
    if kinds and kinds <= {int, float}:
        return pa.float64()
    if kinds == {str}:
        return pa.string()
    return pa.string()


def row_schema(params: type[Params] | None, metrics: type[Metrics] | None,
               configs: list[dict[str, Any]]) -> pa.Schema:
    """One schema for every row of a study: fixed columns, config columns, metric columns."""
    fields = list(ROW_FIELDS)
    if params is not None:
        fields += [(n, arrow_type(f.annotation)) for n, f in params.model_fields.items()]
    else:
        keys: dict[str, list] = {}
        for c in configs:
            for k, v in c.items():
                keys.setdefault(k, []).append(v)
        fields += [(k, inferred_type(v)) for k, v in keys.items()]
    if metrics is not None:
        fields += [(n, arrow_type(f.annotation)) for n, f in metrics.model_fields.items()]
    fields += ROW_TAIL
    return pa.schema(fields)


def schema_to_json(schema: pa.Schema) -> list[list[str]]:
    return [[f.name, str(f.type)] for f in schema]


def schema_from_json(items: list[list[str]]) -> pa.Schema:
    return pa.schema([(name, _type_from_text(t)) for name, t in items])


def _type_from_text(text: str) -> pa.DataType:
    simple = {"string": pa.string(), "int64": pa.int64(), "double": pa.float64(), "bool": pa.bool_()}
    if text in simple:
        return simple[text]
    if text.startswith("timestamp"):
        return pa.timestamp("us", tz="UTC")
    raise ValueError(f"unsupported column type {text!r}")


def cell(value: Any, typ: pa.DataType) -> Any:
    """``value`` converted for a column of type ``typ``; raises TypeError when it cannot be."""
    if value is None:
        return None
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy / torch scalars
    if typ == pa.string():
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if typ == pa.bool_():
        if isinstance(value, bool):
            return value
    elif typ == pa.int64():
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif typ == pa.float64():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    else:
        return value
    raise TypeError(f"expected {typ}, got {value!r}")


def finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


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
        tag = " [execution only, not in the trial id]" if is_knob(params, name) else ""
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
    return "\n".join(lines)


_LIMITS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "min length"),
           ("max_length", "max length"))


def _type_text(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return " | ".join(repr(v) for v in typing.get_args(annotation))
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or str(annotation).replace("typing.", "")
