"""The execution plan of one run: what prepare.plan_run hands to execute.run (the study, its
trials, those still to run, where results and caches go). Its own module, so that prepare builds
it without importing execute, and execute reads it without importing prepare."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.study.grid import Trial
from orchestrator.study.spec import Study
from orchestrator.results.dataset import StudyStore


@dataclass
class Plan:
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
    # process deaths of trials left in flight by an earlier run (attempts - errors), so that a
    # bundle counts only this run's against the member (orchestrator/run/bundle.py)
    deaths: dict[str, int] = field(default_factory=dict)
    known: dict[str, str] = field(default_factory=dict)   # statuses of the rows when the run was planned
    group: int | str | None = None        # --group / group= (None: the study's group; orchestrator/run/groups.py)

    def common(self) -> dict[str, Any]:
        """What every trial of this run shares (sent once, with tune.with_parameters)."""
        return dict(study=self.study.name, scale=self.scale, workload=self.study.workload,
                    results=self.store.location, stage_cache=self.stage_cache, data_root=self.data_root,
                    metric=self.study.metric, max_failures=self.study.max_failures,
                    cpu=self.study.resources.cpu, gpu=self.study.resources.gpu, schema=self.schema,
                    workload_spec=self.workload_spec, allow_missing_metric=self.study.allow_missing_metric)

    def member(self, trial: Trial) -> dict[str, Any]:
        """What is one trial's own (a bundle carries a list of these)."""
        m: dict[str, Any] = {"trial_id": trial.trial_id, "config": trial.config}
        if trial.trial_id in self.rerun:
            m["rerun"] = True
        if self.deaths.get(trial.trial_id):
            m["deaths"] = self.deaths[trial.trial_id]
        return m
