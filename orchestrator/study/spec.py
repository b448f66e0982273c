"""Study files: YAML -> validated :class:`Study`, then one scale (and ``--set`` overrides) resolved.

Every error names the file, the field and the offending value in one line (see ``UserError``).
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, StrictBool, Tag, ValidationError, field_validator,
                      model_validator)

from orchestrator.study.claims import Claim
from orchestrator.study.command_spec import CommandSpec, ParamSpec, check_command
from orchestrator.errors import UserError
from orchestrator.results.rows import RESERVED

SCALES = ("smoke", "fast", "full")
# columns every result row has; a parameter of the same name would be overwritten
STATS = {"mean", "std", "n", "min", "max", "median", "sem"}
_SHARE = re.compile(r"^share([<>]=?)(-?\d+(\.\d+)?)$")
_COUNT = re.compile(r"^count([<>]=?)(-?\d+(\.\d+)?)$")
_CORR = re.compile(r"^(spearman|pearson):(.+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_axes(grid: dict[str, Any]) -> dict[str, list]:
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"axis {key!r} must be a non-empty list (got {values!r})")
    return grid


def _check_zip(groups: dict[str, Any]) -> dict[str, list[dict]]:
    for group, rows in groups.items():
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and r for r in rows):
            raise ValueError(f"zip group {group!r} must be a non-empty list of mappings")
        keys = set(rows[0])
        for r in rows[1:]:
            if set(r) != keys:
                raise ValueError(f"zip group {group!r}: every entry needs the keys {sorted(keys)} (got {sorted(r)})")
    return groups


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)
    custom: dict[str, float] = Field(default_factory=dict)  # custom Ray resources, e.g. {"big_mem": 1}

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError(f"gpu above 1 must be a whole number (got {v})")
        return v


class Variant(_Strict):
    name: str | None = None
    fixed: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Any] = Field(default_factory=dict)
    zip: dict[str, Any] = Field(default_factory=dict)

    _axes = field_validator("grid")(classmethod(lambda cls, v: _check_axes(v)))
    _zips = field_validator("zip")(classmethod(lambda cls, v: _check_zip(v)))


class ScaleOverride(_Strict):
    description: str = ""
    fixed: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Any] = Field(default_factory=dict)
    resources: Resources | None = None
    max_concurrent: int | None = Field(None, ge=1)

    _axes = field_validator("grid")(classmethod(lambda cls, v: _check_axes(v)))


class BestSpec(_Strict):
    by: list[str] = Field(default_factory=list)
    metric: str
    mode: Literal["min", "max"] = "max"
    top: int = Field(1, ge=1)


def check_bundle(v: Any) -> str | int:
    """``bundle``: "auto" or a whole number >= 1."""
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        return v
    if isinstance(v, str) and v.isdigit() and int(v) >= 1:
        return int(v)
    raise ValueError(f"bundle must be auto or a whole number >= 1 (got {v!r})")


def check_group(v: Any) -> str | int:
    """``group``: "auto", "off" or a whole number >= 1 (the most trials in one vectorised group)."""
    if v in ("auto", "off") or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        return v
    if isinstance(v, str) and v.isdigit() and int(v) >= 1:
        return int(v)
    raise ValueError(f"group must be auto, off or a whole number >= 1 (got {v!r})")


def check_stat(s: str) -> str:
    """mean, std, ..., share>X / count>X (also >=, <, <=), spearman:COL / pearson:COL."""
    if s in STATS or _SHARE.match(s) or _COUNT.match(s) or _CORR.match(s):
        return s
    raise ValueError(f"unknown stat {s!r} (use {', '.join(sorted(STATS))}, share>X, count>X, spearman:COLUMN "
                     f"or pearson:COLUMN)")


def stat_columns(stats: list[str]) -> list[str]:
    """Columns the stats read besides the value itself (the other side of a correlation)."""
    return [m.group(2) for s in stats if (m := _CORR.match(s))]


class CompareSpec(_Strict):
    """Ratios (or differences) between groups: per cell (``by`` + ``over``), the ``of`` statistic
    of each value for ``column == a`` divided by (or minus) the same for ``column == b``."""
    column: str
    pairs: list[tuple[Any, Any]] = Field(min_length=1)
    op: Literal["ratio", "difference"] = "ratio"
    of: str = "mean"
    over: list[str] = Field(default_factory=list)
    floor: float = Field(0.01, ge=0)  # a ratio to a denominator at or under this is left out

    _of = field_validator("of")(classmethod(lambda cls, v: check_stat(v)))


_KINDS = ("best", "pivot", "compare", "count")
_DEFAULT_STATS = ["mean", "std", "n"]


class ReportTable(_Strict):
    """One table of the report. Kinds: grouped statistics (``by`` x ``values`` x ``stats``),
    ``best`` rows, ``pivot`` (a column's values become columns), ``compare`` (ratios or differences
    between groups) and ``count`` (rows per value). ``artifact`` pools a per-trial artifact's rows
    (each joined with its trial's row) instead of one row per trial."""
    title: str
    where: str | None = None
    artifact: str | None = None
    by: list[str] = Field(default_factory=list)
    values: list[str] = Field(default_factory=list)
    stats: list[str] = Field(default_factory=lambda: list(_DEFAULT_STATS))
    best: BestSpec | None = None
    pivot: str | None = None
    compare: CompareSpec | None = None
    count: list[str] = Field(default_factory=list)
    order: dict[str, list[Any]] = Field(default_factory=dict)
    layout: Literal["wide", "long"] = "wide"   # long: one row per value (grouped statistics)
    columns: list[str] | None = None
    decimals: int = Field(2, ge=0, le=8)
    note: str | None = None

    _stats = field_validator("stats")(classmethod(lambda cls, v: [check_stat(s) for s in v]))

    @property
    def kind(self) -> str:
        return next((k for k in _KINDS if getattr(self, k)), "grouped")

    @model_validator(mode="after")
    def _shape(self) -> "ReportTable":
        kinds = [k for k in _KINDS if getattr(self, k)]
        if len(kinds) > 1:
            raise ValueError(f"{kinds[1]}: a table is one of best, pivot, compare or count (this one also has {kinds[0]})")
        if self.best is None and not self.count and not self.values:
            raise ValueError("a table needs `values` (grouped statistics, pivot or compare), `best` or `count`")
        if self.layout == "long" and kinds:
            raise ValueError(f"layout: only grouped statistics have a long layout (this is a {kinds[0]} table)")
        if self.count and self.values:
            raise ValueError("values: a count table counts rows; it takes no values")
        if self.pivot and self.pivot in self.by:
            raise ValueError(f"pivot: {self.pivot!r} is also in `by`")
        c = self.compare
        if c and not c.over and self.stats != _DEFAULT_STATS:
            raise ValueError("stats: a compare table without compare.over has one ratio per cell; stats summarise over `over`")
        if c and (c.column in self.by or c.column in c.over):
            raise ValueError(f"compare.column: {c.column!r} is also in `by` or `over`")
        return self


class ReportPlot(_Strict):
    """One figure of the report: ``plot`` is its kind. bar / line: the ``stat`` of ``y`` per ``x``
    (and ``hue``), with ``error`` bars; heatmap: the ``stat`` of ``value`` over ``x`` x ``y``;
    scatter: every row as a point. ``facet`` draws one panel per value."""
    plot: Literal["bar", "line", "heatmap", "scatter"]
    title: str
    x: str
    y: str
    value: str | None = None
    hue: str | None = None
    facet: str | None = None
    where: str | None = None
    artifact: str | None = None
    stat: str = "mean"
    error: Literal["sem", "std", "none"] = "sem"
    order: dict[str, list[Any]] = Field(default_factory=dict)
    logx: bool = False
    logy: bool = False
    decimals: int = Field(2, ge=0, le=8)
    note: str | None = None

    @field_validator("stat")
    @classmethod
    def _stat(cls, v: str) -> str:
        check_stat(v)
        if _CORR.match(v):
            raise ValueError(f"a plot aggregates one column; {v!r} needs two")
        return v

    @model_validator(mode="after")
    def _shape(self) -> "ReportPlot":
        if self.plot == "heatmap" and not self.value:
            raise ValueError("value: a heatmap needs the column to colour by (x and y are its axes)")
        if self.plot != "heatmap" and self.value:
            raise ValueError(f"value: only a heatmap takes `value` (a {self.plot} plots y)")
        if self.plot == "heatmap" and self.hue:
            raise ValueError("hue: a heatmap has no hue (use facet)")
        if (self.logx and self.plot not in ("line", "scatter")) or (self.logy and self.plot == "heatmap"):
            raise ValueError(f"{'logx' if self.logx else 'logy'}: a {self.plot} has no numeric axis to put on a log scale")
        cols = [c for c in (self.x, self.y, self.hue, self.facet) if c]
        if len(set(cols)) != len(cols):
            raise ValueError(f"x, y, hue and facet must be different columns (got {cols})")
        return self


def _report_item_kind(v: Any) -> str:
    return "<plot>" if isinstance(v, dict) and "plot" in v or isinstance(v, ReportPlot) else "<table>"


ReportItem = Annotated[Union[Annotated[ReportTable, Tag("<table>")], Annotated[ReportPlot, Tag("<plot>")]],
                       Discriminator(_report_item_kind)]


class Study(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    workload: str = Field(min_length=1)
    description: str = ""
    metric: str | None = None
    mode: Literal["min", "max"] = "max"
    # a trial that finishes without a value for `metric` is failed, unless this is true (then the
    # run summary and the report count the rows without it)
    allow_missing_metric: StrictBool = False
    max_failures: int = Field(1, ge=0, le=100)
    max_concurrent: int | None = Field(None, ge=1)
    # trials per Tune trial (orchestrator/run/bundle.py): "auto", or a number (1: one by one)
    bundle: Literal["auto"] | int = "auto"
    # trials run as one batched computation when the workload declares group_key/run_group
    # (orchestrator/run/groups.py): "auto" (up to 8), "off", or the most trials per group
    group: Literal["auto", "off"] | int = "auto"
    fixed: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Any] = Field(default_factory=dict)
    zip: dict[str, Any] = Field(default_factory=dict)
    variants: list[Variant] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    scales: dict[Literal["smoke", "fast", "full"], ScaleOverride] = Field(default_factory=dict)
    report: list[ReportItem] = Field(default_factory=list)
    # the seed's findings, each with a computable comparison (orchestrator/study/claims.py); the report
    # opens with their verdicts (orchestrator/report/verdicts.py)
    claims: list[Claim] = Field(default_factory=list)
    # commentary printed under the report's header: it lives here so that a regenerated page keeps it
    notes: str = ""
    # workload: command only (orchestrator/run/command.py): how to start the program, and the
    # declarations a built-in workload makes in Python
    command: CommandSpec | None = None
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    metrics: dict[str, Literal["float", "int", "str", "bool"]] = Field(default_factory=dict)

    _axes = field_validator("grid")(classmethod(lambda cls, v: _check_axes(v)))
    _zips = field_validator("zip")(classmethod(lambda cls, v: _check_zip(v)))

    @field_validator("bundle", mode="before")
    @classmethod
    def _bundle(cls, v: Any) -> Any:
        return check_bundle(v)

    @field_validator("group", mode="before")
    @classmethod
    def _group(cls, v: Any) -> Any:
        return check_group(v)

    @model_validator(mode="after")
    def _command_fields(self) -> "Study":
        if self.workload == "command" and self.command is None:
            raise ValueError("command: required with `workload: command` (argv, and optionally append, cwd, timeout_s)")
        if self.workload != "command":
            for key in ("command", "params", "metrics"):
                if getattr(self, key):
                    raise ValueError(f"{key}: only for `workload: command` (a Python workload declares its own)")
        for k in sorted(set(self.params) & RESERVED):
            raise ValueError(f"params.{k}: is a reserved result column; rename the parameter")
        if self.command is not None:
            check_command(self.command, set(self.params), dict(self.metrics))
        if self.allow_missing_metric and not self.metric:
            raise ValueError("allow_missing_metric: the study has no `metric` to miss")
        return self

    @model_validator(mode="after")
    def _no_duplicate_keys(self) -> "Study":
        # Base level: fixed, grid and zip keys are disjoint. A variant may override a base fixed
        # value but never a base axis, and its own keys are disjoint too.
        base_axes = _owners(self.grid, self.zip, prefix="")
        every = set(self.fixed) | set(base_axes)
        for v in self.variants:
            every |= set(v.fixed) | set(v.grid) | {k for rows in v.zip.values() for k in rows[0]}
        for k in sorted(every & RESERVED):
            raise ValueError(f"{k}: is a reserved result column; rename the parameter")
        for k in self.fixed:
            if k in base_axes:
                raise ValueError(f"fixed.{k}: is also an axis in {base_axes[k]}")
        for i, v in enumerate(self.variants):
            own = _owners(v.grid, v.zip, prefix=f"variants.{i}.")
            for k in list(own) + list(v.fixed):
                if k in base_axes:
                    raise ValueError(f"variants.{i}.{k}: is already an axis in {base_axes[k]}")
                if k in own and k in v.fixed:
                    raise ValueError(f"variants.{i}.{k}: is both fixed and an axis")
        return self


def _owners(grid: dict[str, list], zips: dict[str, list[dict]], prefix: str) -> dict[str, str]:
    """key -> where it is an axis; raises if two axes set the same key."""
    owner: dict[str, str] = {}
    places = [(k, f"{prefix}grid") for k in grid]
    places += [(k, f"{prefix}zip.{g}") for g, rows in zips.items() for k in rows[0]]
    for k, where in places:
        if k in owner:
            raise ValueError(f"{where}.{k}: is also set by {owner[k]}")
        owner[k] = where
    return owner


# --------------------------------------------------------------------------------------------
def _format_validation(err: ValidationError) -> tuple[str, str]:
    first = err.errors()[0]
    # tags of the report item union ("<table>", "<plot>") are not fields of the file
    loc = ".".join(str(p) for p in first["loc"] if p not in ("function-after",) and not str(p).startswith("<"))
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "missing":
        msg = "required field is missing"
    elif "input" in first and first["type"] not in ("value_error",):
        msg = f"{msg} (got {first['input']!r})"
    m = re.match(r"^([\w.]+): (.*)$", msg)
    if m and first["type"] == "value_error":  # model-level checks name their own field
        loc = ".".join(p for p in (loc, m.group(1)) if p)
        msg = m.group(2)
    return loc, msg


def validate(doc: Any, source: str) -> Study:
    if not isinstance(doc, dict):
        raise UserError(f"a study file must be a YAML mapping (got {type(doc).__name__})", source=source)
    try:
        return Study.model_validate(doc)
    except ValidationError as e:
        loc, msg = _format_validation(e)
        raise UserError(msg, source=source, field=loc or None) from None


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


class StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key written twice in one mapping (PyYAML keeps the last one
    silently, which would drop e.g. a whole first ``grid:`` block)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base class reports unhashable keys
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise _DuplicateKey(None, None, f"duplicate key {key!r} (first at line {first})", key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass


def load_raw(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise UserError("no such study file", source=str(path))
    try:
        doc = parse_yaml(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"invalid YAML: {problem}", source=str(path), field=where) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read: {e}", source=str(path)) from None
    return doc


def load(path: str | Path) -> Study:
    return validate(load_raw(path), str(path))


# --------------------------------------------------------------------------------------------
def resolve(raw: dict, source: str, scale: str, sets: list[str] | None = None) -> Study:
    """The study as it runs at ``scale`` with ``--set`` overrides applied, validated again."""
    study = validate(raw, source)  # validates every scale block too
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r} (use {', '.join(SCALES)})", source="--scale")
    if study.scales and scale not in study.scales:
        raise UserError(f"study defines no {scale!r} scale (it has {', '.join(study.scales)})", source=source, field="scales")
    doc = copy.deepcopy(raw)
    override = doc.get("scales", {}).get(scale) or {}
    doc["fixed"] = {**doc.get("fixed", {}), **override.get("fixed", {})}
    for axis, values in (override.get("grid") or {}).items():
        hits = [g for g in [doc.get("grid", {})] + [v.get("grid", {}) for v in doc.get("variants", [])] if axis in g]
        if not hits:
            raise UserError(f"{axis!r} is not a grid axis of the study", source=source, field=f"scales.{scale}.grid.{axis}")
        for g in hits:
            g[axis] = values
    if override.get("resources"):
        doc["resources"] = {**doc.get("resources", {}), **override["resources"]}
    if override.get("max_concurrent"):
        doc["max_concurrent"] = override["max_concurrent"]
    doc["scales"] = {}
    for item in sets or []:
        _apply_set(doc, item)
    return validate(doc, source)


def _parse_value(text: str) -> Any:
    try:
        return parse_yaml(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def _apply_set(doc: dict, item: str) -> None:
    if "=" not in item:
        raise UserError(f"expected key=value (got {item!r})", source="--set")
    key, text = item.split("=", 1)
    key = key.strip()
    value = _parse_value(text)
    if not key:
        raise UserError(f"empty key in {item!r}", source="--set")
    top = key.split(".", 1)[0]
    if top in Study.model_fields and top != "scales":
        # a path into the study document, e.g. resources.gpu=0.25 or grid.bits=[2,4]
        parts = key.split(".")
        node = doc
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"{p!r} is not a mapping", source="--set", field=key)
        node[parts[-1]] = value
        return
    grids = [doc.get("grid", {})] + [v.get("grid", {}) for v in doc.get("variants", [])]
    hits = [g for g in grids if key in g]
    for g in hits:  # a grid axis: a list replaces it, a scalar pins it
        g[key] = value if isinstance(value, list) else [value]
    if hits:
        return
    for group, rows in doc.get("zip", {}).items():
        if rows and key in rows[0]:
            raise UserError(f"{key!r} is zipped in group {group!r}; set the whole group with zip.{group}=[...]", source="--set", field=key)
    doc.setdefault("fixed", {})[key] = value
    for v in doc.get("variants") or []:  # a variant's own value would win over the base's: pin it there too
        if key in (v.get("fixed") or {}):
            v["fixed"][key] = value


def origins(raw: dict, scale: str, sets: list[str] | None = None) -> dict[str, list[tuple[str, list]]]:
    """parameter -> [(where it is set, the values it takes there), ...] in the order they apply,
    so an error about a parameter can name the file field (or ``--set``) it came from."""
    out: dict[str, list[tuple[str, list]]] = {}

    def add(key: str, where: str, values: list) -> None:
        out.setdefault(key, []).append((where, values))

    def block(node: Any, prefix: str) -> None:
        if not isinstance(node, dict):
            return
        for k, v in (node.get("fixed") or {}).items():
            add(k, f"{prefix}fixed.{k}", [v])
        for k, v in (node.get("grid") or {}).items():
            add(k, f"{prefix}grid.{k}", v if isinstance(v, list) else [v])
        for g, rows in (node.get("zip") or {}).items():
            for row in rows if isinstance(rows, list) else []:
                for k, v in (row.items() if isinstance(row, dict) else []):
                    add(k, f"{prefix}zip.{g}.{k}", [v])

    block(raw, "")
    for i, v in enumerate(raw.get("variants") or []):
        block(v, f"variants.{i}.")
    block((raw.get("scales") or {}).get(scale) or {}, f"scales.{scale}.")
    for item in sets or []:
        key, _, text = item.partition("=")
        key = key.strip()
        if key.split(".", 1)[0] not in Study.model_fields or key.startswith("scales"):
            value = _parse_value(text)
            add(key, f"--set {key}", value if isinstance(value, list) else [value])
        elif key.startswith(("fixed.", "grid.")):
            add(key.split(".", 1)[1], f"--set {key}", [_parse_value(text)])
    return out
