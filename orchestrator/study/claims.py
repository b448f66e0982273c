"""Claims: the findings of a study's seed, declared in the study file so that a report can test
them (orchestrator/report/verdicts.py computes the verdicts). Each claim quotes the seed's sentence and
figures, names the document and line they come from, and states a computable comparison:

- ``order``: a statistic of ``metric`` across values of ``column``, largest first (``order: [4,
  2]`` claims 4 > 2; ``[1, 2, 4]`` claims 1 > 2 > 4), optionally ``paired`` on other config
  columns (``paired: auto``: every other config column); or, with ``metrics: [a, b]``, one row's
  metrics against each other (a > b, paired by row);
- ``threshold``: a statistic of ``metric`` against a constant (``op: ">"``, ``value: 100``);
- ``correlation``: the sign of a Spearman or Pearson correlation between ``x`` and ``y``, over
  trial rows or over an ``artifact``'s rows joined with their trial's row;
- ``equal``: no effect: the ``metric`` is the same, within ``margin``, across ``values`` of
  ``column`` (each against the first; ``paired`` as for an order), e.g. "lambda has no effect";
- ``counts``: how rows fall into the values of a verdict ``column`` (the seed's ``expect``, e.g.
  13 / 5 / 0): the claim is that the seed's most frequent value is ours too.

Every kind may read an ``artifact``'s rows (each joined with its trial's row) instead of trial
rows. ``scope`` names the population the claim is about (e.g. ``bits == 4``); ``where`` is a
filter within it (e.g. only rows with a reliable gap), and the report also judges the claim
without that filter and shows both verdicts when they differ, so a filter never silently decides
a verdict.

``requires`` lists preconditions: a claim whose precondition fails is "not testable here", with
the reason and the measured value, never by an author's choice on the day."""
from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

KINDS = ("order", "threshold", "correlation", "counts", "equal")
OPS = (">", ">=", "<", "<=")
STATS = ("mean", "median")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Requirement(_Strict):
    """A precondition: the ``stat`` of ``metric`` over the (``where``) rows ``op`` ``value``."""
    metric: str
    stat: Literal["mean", "median", "min", "max"] = "mean"
    op: Literal[">", ">=", "<", "<="]
    value: float
    where: str | None = None
    why: str = Field(min_length=1)   # what it guards, e.g. "the correctors must move the loss by 1 %"


class Claim(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_]*$")
    seed: str = Field(min_length=1)          # the seed's sentence and figures, quoted
    source: str = Field(pattern=r"^[\w./-]+:\d+(-\d+)?$")   # document:line (or line-line) in ../shared
    kind: Literal["order", "threshold", "correlation", "counts", "equal"]
    metric: str | None = None
    stat: Literal["mean", "median"] = "mean"
    scope: str | None = None                 # the population the claim is about (always applied)
    where: str | None = None                 # a filter within it (judged with and without)
    artifact: str | None = None              # rows of a per-trial artifact instead of trial rows
    # order
    column: str | None = None
    order: list[Any] | None = None
    paired: list[str] | Literal["auto"] | None = None
    metrics: list[str] | None = None         # or: a row's metrics against each other, largest first
    # equal
    values: list[Any] | None = None          # the column's values that give the same metric (first: reference)
    margin: float | None = Field(None, gt=0)  # the largest difference that still counts as "the same"
    # threshold
    op: Literal[">", ">=", "<", "<="] | None = None
    value: float | None = None
    # correlation
    method: Literal["spearman", "pearson"] = "spearman"
    x: str | None = None
    y: str | None = None
    sign: Literal["positive", "negative"] | None = None
    # counts
    expect: dict[str, int] | None = None
    requires: list[Requirement] = Field(default_factory=list)
    note: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> "Claim":
        need = {"order": ("metric", "column", "order"), "threshold": ("metric", "op", "value"),
                "correlation": ("x", "y", "sign"), "counts": ("column", "expect"),
                "equal": ("metric", "column", "values", "margin")}[self.kind]
        if self.kind == "order" and self.metrics is not None:
            need = ("metrics",)
        for key in need:
            if getattr(self, key) is None:
                raise ValueError(f"{key}: required for a {self.kind} claim")
        allowed = set(need) | {"paired"} if self.kind in ("order", "equal") and self.metrics is None else set(need)
        allowed |= {"method"} if self.kind == "correlation" else set()
        for key in ("metric", "column", "order", "paired", "metrics", "values", "margin", "op", "value", "x", "y",
                    "sign", "expect"):
            if getattr(self, key) is not None and key not in allowed:
                raise ValueError(f"{key}: a {self.kind} claim{' over metrics' if self.metrics else ''} takes no {key}")
        if self.metrics is not None and (len(self.metrics) < 2 or len(set(self.metrics)) != len(self.metrics)):
            raise ValueError("metrics: name at least two different metrics, largest first")
        if self.kind == "order" and self.metrics is None:
            assert self.order is not None  # required above
            if len(self.order) < 2:
                raise ValueError("order: name at least two values, largest first")
            if len({repr(v) for v in self.order}) != len(self.order):
                raise ValueError("order: a value is named twice")
            if isinstance(self.paired, list) and self.column in self.paired:
                raise ValueError(f"paired: {self.column!r} is the compared column; pair on the others")
        if self.kind == "equal":
            assert self.values is not None  # required above
            if len(self.values) < 2 or len({repr(v) for v in self.values}) != len(self.values):
                raise ValueError("values: name at least two different values (the first is the reference)")
        if self.kind == "counts":
            assert self.expect is not None  # required above
            if len(self.expect) < 2 or any(v < 0 for v in self.expect.values()):
                raise ValueError("expect: the seed's counts of at least two values, none negative")
        return self

    def columns(self) -> list[str]:
        """The row columns the claim reads (not its requirements')."""
        cols = [self.metric, self.column, self.x, self.y] + list(self.metrics or [])
        cols += self.paired if isinstance(self.paired, list) else []
        return [c for c in dict.fromkeys(cols) if c]


def check(claims: list[Claim], columns: dict[str, Any], values: dict[str, set], metrics: set[str],
          artifact_columns: AbstractSet[str] = frozenset()) -> list[tuple[str, str]]:
    """(field, message) for each claim that names a column the rows will not have, or a value its
    column never takes in the study: ``columns`` are the row columns, ``values`` the values each
    config column takes across the study's trials, ``metrics`` the declared metric names.
    ``artifact_columns``: columns an artifact may add (correlations over an artifact)."""
    out = []
    seen = set()
    for i, c in enumerate(claims):
        where = f"claims.{i}"
        if c.id in seen:
            out.append((f"{where}.id", f"claim id {c.id!r} is used twice"))
        seen.add(c.id)
        known = set(columns) | (set(artifact_columns) if c.artifact else set())
        for key in ("metric", "column", "x", "y"):
            col = getattr(c, key)
            if col is not None and col not in known:
                out.append((f"{where}.{key}", f"no column {col!r} in the study's rows"))
        for col in c.metrics or []:
            if col not in known:
                out.append((f"{where}.metrics", f"no column {col!r} in the study's rows"))
        for col in c.paired if isinstance(c.paired, list) else []:
            if col not in values:
                out.append((f"{where}.paired", f"{col!r} is not a config column of the study"))
        if c.kind in ("order", "equal") and c.column in values and not c.metrics:
            have = values[c.column]
            for v in (c.order if c.kind == "order" else c.values) or []:  # both required by the validator
                if not any(_same(v, h) for h in have):
                    out.append((f"{where}.{c.kind if c.kind == 'order' else 'values'}", f"{c.column} never takes the value {v!r} in this study "
                                                  f"(it takes {sorted(map(repr, have))})"))
        if c.kind == "counts" and c.column in values:
            have = {str(h) for h in values[c.column]}
            for v in c.expect or {}:  # required by the validator
                if v not in have:
                    out.append((f"{where}.expect", f"{c.column} never takes the value {v!r} in this study"))
        for j, r in enumerate(c.requires):
            if r.metric not in known:
                out.append((f"{where}.requires.{j}.metric", f"no column {r.metric!r} in the study's rows"))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b
