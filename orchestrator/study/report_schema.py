"""The ``report:`` section of a study file: tables (grouped statistics, best rows, pivots,
comparisons, counts) and plots, and the statistics they may ask for. Validated with the study
(orchestrator/study/spec.py); computed by orchestrator/report/tables.py and plots.py."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

# the statistics a table or plot may ask for (check_stat)
STATS = {"mean", "std", "n", "min", "max", "median", "sem"}
_SHARE = re.compile(r"^share([<>]=?)(-?\d+(\.\d+)?)$")
_COUNT = re.compile(r"^count([<>]=?)(-?\d+(\.\d+)?)$")
_CORR = re.compile(r"^(spearman|pearson):(.+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BestSpec(_Strict):
    by: list[str] = Field(default_factory=list)
    metric: str
    mode: Literal["min", "max"] = "max"
    top: int = Field(1, ge=1)


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
