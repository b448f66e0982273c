"""The schema of a study file: :class:`Study` (workload, grid, variants, scales, resources,
execution knobs, claims, report, and a command workload's declarations). Reading a file and
resolving a scale is orchestrator/study/loader.py; the ``report:`` items are
orchestrator/study/report_schema.py."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from orchestrator.results.rows import RESERVED
from orchestrator.study.claims import Claim
from orchestrator.study.command_spec import CommandSpec, ParamSpec, check_command
from orchestrator.study.report_schema import ReportItem

SCALES = ("smoke", "fast", "full")


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
