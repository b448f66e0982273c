"""What ``overnight.run`` and ``overnight.load`` return: a :class:`StudyResult`, the finished trials
of a study read back from its results location (its rows, the failed ones with their errors, the
per-step history, the artifact tables, the best row and the Markdown report), in the manner of
Ray Tune's ``ResultGrid``. It only reads results (and writes report.md when asked for the
report). Light to import, as ``import orchestrator`` imports it: pandas and the readers are
imported inside the methods.

The examples read ``results/demo/smoke``, the tiny study that the example of ``overnight.run``
(orchestrator/api.py) runs; tests/orchestrator/test_api.py runs that example first, then these.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.report.definitions import View
    from orchestrator.results.dataset import StudyStore

MODES = ("min", "max")


@dataclass(frozen=True)
class StudyRows:
    """One study directory as a result reads it: its store, its study.json and its rows split by
    definition (orchestrator/report/definitions.py)."""
    store: StudyStore
    manifest: dict[str, Any]
    view: View

    @property
    def name(self) -> str:
        return f"{self.manifest.get('study', {}).get('name', '?')}/{self.manifest.get('scale', '?')}"


def study_rows(store: StudyStore, trial_ids: set[str] | None = None, all_rows: bool = False) -> StudyRows:
    """A study directory read for a result. ``trial_ids``: the study's current trials (default:
    those of its study.json); ``all_rows``: rows of earlier definitions too, labelled."""
    from orchestrator.report import definitions as D

    manifest = store.manifest() or {}
    return StudyRows(store, manifest, D.view(store, manifest, trial_ids, all_rows))


def write_reports(stores: Sequence[StudyStore], html: str | None = None, all_rows: bool = False) -> str:
    """The Markdown report of these studies, as `overnight report` writes it: report.md and its
    plots into each study's location, the texts joined; ``html``: also one self-contained page."""
    from pathlib import Path

    from orchestrator.report import html as html_page
    from orchestrator.report import page

    reports = [page.for_store(store, all_rows=all_rows) for store in stores]
    for store, rep in zip(stores, reports):
        page.write(store, rep)
    if html:
        Path(html).write_text(html_page.page(reports))
    return "\n".join(page.markdown(rep, images=page.images_of(store)) for store, rep in zip(stores, reports))


class StudyResult:
    """The trials of a study, read from its results location: what ``overnight.run`` returns, and
    ``overnight.load`` for a study already run. A result of several studies (``load`` of a folder
    that holds more than one) is one combined result: its ``rows`` are every study's rows, one
    after the other, and ``studies`` has one result per study.

    >>> import orchestrator as overnight
    >>> result = overnight.load("results/demo/smoke")
    >>> result
    StudyResult(demo/smoke: 4 trials, 2 completed, 2 failed, 0 diverged, 0 pending)
    >>> print(result.best()["lr"], len(result.failed))
    0.4 2
    """

    def __init__(self, studies: Sequence[StudyRows], location: str, all_rows: bool = False):
        self._studies = list(studies)
        self._location = location
        self._all_rows = all_rows
        self._rows: pd.DataFrame | None = None

    @classmethod
    def of_store(cls, store: StudyStore, trial_ids: set[str] | None = None, all_rows: bool = False) -> StudyResult:
        """The result of the study in ``store`` (RESULTS/<study>/<scale>). ``trial_ids``: its
        current trials (default: those of its study.json).

        >>> from orchestrator.results.dataset import StudyStore
        >>> StudyResult.of_store(StudyStore("results/demo/smoke"))
        StudyResult(demo/smoke: 4 trials, 2 completed, 2 failed, 0 diverged, 0 pending)
        """
        return cls([study_rows(store, trial_ids, all_rows)], store.location, all_rows)

    @classmethod
    def read(cls, location: str, all_rows: bool = False) -> StudyResult:
        """The result of every study under ``location`` (RESULTS, RESULTS/<study> or one
        RESULTS/<study>/<scale>), combined. ``all_rows``: rows of earlier definitions of each
        study too, labelled in a ``definition`` column.

        >>> StudyResult.read("results").studies
        [StudyResult(demo/smoke: 4 trials, 2 completed, 2 failed, 0 diverged, 0 pending)]
        """
        from orchestrator.results.dataset import find_studies

        stores = find_studies(str(location))
        return cls([study_rows(store, all_rows=all_rows) for store in stores], str(location), all_rows)

    # ---- what the trials left -------------------------------------------------------------------
    @property
    def rows(self) -> pd.DataFrame:
        """One row per finished trial of the study's current definition (with ``all_rows``, the
        rows of its earlier definitions too): config, metrics, ``status``, ``error``, timings.

        >>> import orchestrator as overnight
        >>> rows = overnight.load("results/demo/smoke").rows
        >>> print(rows.sort_values(["lr", "fail"])[["lr", "fail", "status"]].to_string(index=False))
         lr  fail    status
        0.1  none completed
        0.1 raise    failed
        0.4  none completed
        0.4 raise    failed
        """
        if self._rows is None:
            import pandas as pd

            frames = [s.view.rows for s in self._studies]
            if len(frames) == 1:
                self._rows = frames[0]
            else:
                kept = [f for f in frames if not f.empty]
                self._rows = pd.concat(kept, ignore_index=True, sort=False) if kept else pd.DataFrame()
        return self._rows

    @property
    def failed(self) -> pd.DataFrame:
        """The rows of the failed trials (status ``failed``, after their retries), with their
        error text in the ``error`` column: a DataFrame, empty when none failed.

        >>> import orchestrator as overnight
        >>> failed = overnight.load("results/demo/smoke").failed
        >>> print(failed.sort_values("lr")[["lr", "status"]].to_string(index=False))
         lr status
        0.1 failed
        0.4 failed
        """
        rows = self.rows
        if rows.empty or "status" not in rows:
            return rows.iloc[0:0]
        return rows[rows["status"] == "failed"].reset_index(drop=True)

    @property
    def errors(self) -> dict[str, str]:
        """trial_id -> error text of each failed trial (the exception line, then where it was
        raised in brackets).

        >>> import orchestrator as overnight
        >>> errors = overnight.load("results/demo/smoke").errors
        >>> sorted(text.split(" [")[0] for text in errors.values())
        ['ValueError: synthetic failure at step 1 (lr=0.1)', 'ValueError: synthetic failure at step 1 (lr=0.4)']
        """
        failed = self.failed
        return {str(t): str(e or "") for t, e in zip(failed["trial_id"], failed["error"])} if len(failed) else {}

    @property
    def pending(self) -> int:
        """Trials of the current study without a row yet (not run, interrupted, or running).

        >>> import orchestrator as overnight
        >>> overnight.load("results/demo/smoke").pending
        0
        """
        return sum(len(s.view.ids) - len(s.view.current) for s in self._studies)

    @property
    def studies(self) -> list[StudyResult]:
        """One result per study (a list of one for the result of one study).

        >>> import orchestrator as overnight
        >>> [len(s) for s in overnight.load("results").studies]
        [4]
        """
        if len(self._studies) == 1:
            return [self]
        return [StudyResult([s], s.store.location, self._all_rows) for s in self._studies]

    @property
    def location(self) -> str:
        """Where the results are: the study's RESULTS/<study>/<scale>, or for a combined result
        the location it was read from.

        >>> import orchestrator as overnight
        >>> overnight.load("results/demo/smoke").location
        'results/demo/smoke'
        """
        return self._location

    @property
    def kept_aside(self) -> list[str]:
        """Per study, what its folder holds beyond its current trials (rows of earlier
        definitions: a changed fixed value, another workload version), one line each; those rows
        are not in ``rows`` unless read with ``all_rows``.

        >>> import orchestrator as overnight
        >>> overnight.load("results/demo/smoke").kept_aside
        []
        """
        if self._all_rows:
            return []
        return [f"{s.name}: {line}" for s in self._studies if s.view.groups for line in s.view.lines()]

    def history(self) -> pd.DataFrame:
        """The per-step history the trials reported (``ctx.report``), long: one row per trial,
        step and metric (``trial_id``, ``step``, ``time``, ``phase``, ``metric``, ``value``);
        only the rows of the trials in ``rows``.

        >>> import orchestrator as overnight
        >>> history = overnight.load("results/demo/smoke").history()
        >>> print(history.groupby("metric")["step"].agg(["min", "max"]).to_string())
                min  max
        metric
        loss      0    1
        """
        return self._per_study(lambda s: s.store.history())

    def artifact(self, name: str) -> pd.DataFrame:
        """The artifact table ``name`` (``ctx.write_artifact``), every trial's rows with their
        ``trial_id``; only the trials in ``rows``. A name no trial has written raises
        ValueError, naming the artifacts there are.

        >>> import orchestrator as overnight
        >>> overnight.load("results/demo/smoke").artifact("layers")
        Traceback (most recent call last):
        ...
        ValueError: no artifact 'layers' in demo/smoke (artifacts there: none)
        """
        from orchestrator.results import layout as L

        written = sorted({a for s in self._studies for a in s.store.list_dirs(L.ARTIFACTS)})
        if name not in written:
            names = ", ".join(s.name for s in self._studies)
            raise ValueError(f"no artifact {name!r} in {names} (artifacts there: {', '.join(written) or 'none'})")
        return self._per_study(lambda s: s.store.artifact(name))

    def _per_study(self, read) -> pd.DataFrame:
        """``read(study)`` of each study, only the rows of its trials in ``rows``, one after the other."""
        import pandas as pd

        frames = []
        for s in self._studies:
            df = read(s)
            if not df.empty:
                frames.append(df[df["trial_id"].isin(s.view.row_ids)].reset_index(drop=True))
        return pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()

    def best(self, metric: str | None = None, mode: str | None = None) -> pd.Series:
        """The completed row with the best ``metric`` (default: the study's ``metric``), lowest
        for ``mode`` "min", highest for "max" (default: the study's ``mode``). ValueError when no
        completed row has a value for it.

        >>> import orchestrator as overnight
        >>> result = overnight.load("results/demo/smoke")
        >>> best = result.best()
        >>> print(best["lr"], best["status"], best["loss"] == result.rows["loss"].min())
        0.4 completed True
        >>> print(result.best("loss", mode="max")["lr"])
        0.1
        """
        metric = metric or self._study_field("metric")
        mode = mode or self._study_field("mode")
        if mode not in MODES:
            raise ValueError(f"mode must be 'min' or 'max' (got {mode!r})")
        rows = self.rows
        if metric not in rows:
            raise ValueError(f"no column {metric!r} in the rows")
        done = rows[(rows["status"] == "completed") & rows[metric].notna()]
        if done.empty:
            raise ValueError(f"no completed trial has a value for {metric!r}")
        return done.loc[done[metric].idxmin() if mode == "min" else done[metric].idxmax()]

    def _study_field(self, key: str) -> Any:
        """The studies' ``metric`` or ``mode``: one value for all of them, else ValueError."""
        values = {s.manifest.get("study", {}).get(key) for s in self._studies}
        if len(values) != 1 or None in values:
            said = ", ".join(sorted(str(v) for v in values))
            raise ValueError(f"give {key}=: the studies' {key} is not one value (found: {said})")
        return values.pop()

    def report(self, html: str | None = None) -> str:
        """The Markdown report, as ``overnight.report_markdown`` gives it: report.md and its plots
        are written into each study's location; ``html``: also one self-contained page.

        >>> import orchestrator as overnight
        >>> print(overnight.load("results/demo/smoke").report().splitlines()[0])
        # demo — smoke scale
        """
        return write_reports([s.store for s in self._studies], html, self._all_rows)

    def __len__(self) -> int:
        """The number of rows.

        >>> import orchestrator as overnight
        >>> len(overnight.load("results/demo/smoke"))
        4
        """
        return len(self.rows)

    def __repr__(self) -> str:
        """The studies and how many of their trials finished how.

        >>> import orchestrator as overnight
        >>> overnight.load("results/demo/smoke")
        StudyResult(demo/smoke: 4 trials, 2 completed, 2 failed, 0 diverged, 0 pending)
        """
        from orchestrator.results.rows import count_statuses

        rows = self.rows
        counts = count_statuses(rows["status"] if "status" in rows else [])
        trials = sum(s.view.trials for s in self._studies)
        names = ", ".join(s.name for s in self._studies)
        return (f"StudyResult({names}: {trials} trials, {counts['completed']} completed, {counts['failed']} failed, "
                f"{counts['diverged']} diverged, {self.pending} pending)")
