"""What the driver and the trial processes say to each other, as types.

The driver (orchestrator/run/prepare.py builds the ``Plan``; orchestrator/run/execute.py and
sweep.py) turns the plan's pending trials into ``Member``s and cuts them into ``Unit``s; the
trial processes (orchestrator/run/bundle.py, groups.py, trial.py) run each unit and answer with
every member's ``Status``, or with ``NotRun.HAD_ROW`` for a member that already had its row.

How they travel: a Tune trial's config is only the index of its unit (``param_space`` is a
range, which Tune's variant generator copies as one object); the run's units go into Ray's object
store once (``ray.put``, so pickled, never deep-copied by Tune), and each trial process fetches
that table once (``bundle.trainable``). Members and units therefore travel as the objects they
are. The members of a run share their settings' objects (the schema list, the command spec), so
pickling the table stores those once. Statuses come back inside Tune results as plain strings
(``Status.value``), read back with ``Status(text)`` (orchestrator/run/sweep.py, ``Bridge``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from orchestrator.results.rows import Status

if TYPE_CHECKING:   # only annotations: a trial process imports this module, and needs none of these
    from orchestrator.results.dataset import StudyStore
    from orchestrator.study.grid import Trial
    from orchestrator.study.spec import Study

__all__ = ["Member", "NotRun", "Plan", "Status", "Unit"]


class NotRun(Enum):
    """What a member that was not run comes to: not a row status, since no row was written."""

    HAD_ROW = "had its row"   # an earlier try of its unit, or another driver's worker, wrote it


@dataclass(frozen=True, slots=True)
class Member:
    """One trial as a trial process runs it: its id and config, the run's settings it needs, and
    what the driver knows of it from earlier runs."""

    trial_id: str
    config: dict[str, Any]
    study: str
    scale: str
    workload: str
    results: str          # location of RESULTS/<study>/<scale>
    stage_cache: str      # location of the shared stage cache
    data_root: str
    metric: str | None
    max_failures: int
    cpu: float = 1.0
    gpu: float = 0.0
    schema: list | None = None          # the study's row schema (params.schema_to_json)
    workload_spec: dict | None = None   # workload: command only (registry.load)
    allow_missing_metric: bool = False  # the study's: a run without `metric` may still be completed
    rerun: bool = False   # --retry-failed sends it again: it has a (failed) row already
    # process deaths in runs before this one (tries without a row and without an error), so that
    # only this run's count against it (orchestrator/run/bundle.py)
    deaths: int = 0


@dataclass(frozen=True, slots=True)
class Unit:
    """What one Tune trial runs: its members one after another (a bundle), or, ``grouped``, all of
    them through the workload's ``run_group`` (a vectorised group, orchestrator/run/groups.py)."""

    members: tuple[Member, ...]
    grouped: bool = False

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("a unit has at least one member")
        if self.grouped and len(self.members) < 2:
            raise ValueError("a vectorised group has at least two members")

    @property
    def name(self) -> str:
        """Its Tune trial's name: the trial id for a lone trial."""
        first = self.members[0].trial_id
        return first if len(self.members) == 1 else f"{first}+{len(self.members) - 1}"


@dataclass
class Plan:
    """The execution plan of one run: what prepare.plan_run hands to execute.run (the study, its
    trials, those still to run, where results and caches go)."""

    study: Study
    scale: str
    version: str
    trials: list[Trial]
    pending: list[Trial]
    store: StudyStore
    stage_cache: str
    data_root: str

    rerun: frozenset[str] = frozenset()   # failed trials sent again by --retry-failed
    schema: list | None = None            # the study's row schema (params.schema_to_json)
    workload_spec: dict | None = None     # workload: command only
    deaths: dict[str, int] = field(default_factory=dict)   # Member.deaths of the trials left in flight
    known: dict[str, str] = field(default_factory=dict)   # statuses of the rows when the run was planned
    group: int | str | None = None        # --group / group= (None: the study's group; orchestrator/run/groups.py)

    def members(self) -> list[Member]:
        """The pending trials, in order, as the trial processes get them."""
        study = self.study
        return [Member(trial_id=t.trial_id, config=t.config, study=study.name, scale=self.scale,
                       workload=study.workload, results=self.store.location, stage_cache=self.stage_cache,
                       data_root=self.data_root, metric=study.metric, max_failures=study.max_failures,
                       cpu=study.resources.cpu, gpu=study.resources.gpu, schema=self.schema,
                       workload_spec=self.workload_spec, allow_missing_metric=study.allow_missing_metric,
                       rerun=t.trial_id in self.rerun, deaths=self.deaths.get(t.trial_id, 0))
                for t in self.pending]
