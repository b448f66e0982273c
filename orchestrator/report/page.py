"""A study's report: what its ``report:`` section declares (tables and plots), computed from the
Parquet rows (and per-trial artifacts) of a results location.

:func:`build` computes a :class:`Report` (header, one section per table or plot, failed trials);
:func:`markdown` and ``orchestrator.report.html`` render it; :func:`write` stores report.md and the
plots (report/NN-title.png, with the plotted numbers as report/NN-title.csv) beside the results.
The numbers are in orchestrator/report/tables.py, the figures in orchestrator/report/plots.py."""
from __future__ import annotations

import math
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd

from orchestrator.results import layout as L
from orchestrator.report import plots as P
from orchestrator.report import tables as T
from orchestrator.report import verdicts as V
from orchestrator.errors import UserError
from orchestrator.formats import fmt_duration
from orchestrator.results.provenance import data_summary, provenance_lines
from orchestrator.results.rows import COMPLETED, FAILED, count_statuses
from orchestrator.study.spec import Study
from orchestrator.study.report_schema import ReportPlot, ReportTable

_stat_label = T.stat_label
STUDY_DIR = Path("configs/studies")   # where `overnight` finds a study by name (run from the project root)


def table(rows: pd.DataFrame, spec: ReportTable | ReportPlot,
          artifacts: T.Artifacts | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The table and any notes (missing columns, empty selection); of a plot, the numbers it draws."""
    if isinstance(spec, ReportPlot):
        df, notes = T.select(rows, spec, artifacts)
        return (df, notes) if notes else (P.plot_data(df, spec), [])
    return T.table(rows, spec, artifacts)


# ---------------------------------------------------------------------------- the report
@dataclass
class Header:
    study: str
    scale: str
    workload: str
    description: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    unfinished: int = 0                     # trials of the study without a row yet
    compute_s: float | None = None          # sum of trial wall times
    span_s: float | None = None             # first start to last finish
    data: list[str] = field(default_factory=list)        # what data the rows ran on (orchestrator/results/provenance.py)
    provenance: list[str] = field(default_factory=list)  # code, environment, data files of the rows' runs
    aside: list[str] = field(default_factory=list)       # rows of earlier definitions (orchestrator/report/definitions.py)
    missing: list[str] = field(default_factory=list)     # completed rows without the study's metric
    location: str = ""


@dataclass
class Section:
    spec: ReportTable | ReportPlot
    name: str                               # file stem of its plot: NN-title
    frame: pd.DataFrame | None = None       # a table
    keys: list[str] = field(default_factory=list)
    figure: P.Figure | None = None          # a plot
    notes: list[str] = field(default_factory=list)

    @property
    def is_plot(self) -> bool:
        return isinstance(self.spec, ReportPlot)


@dataclass
class Report:
    header: Header
    sections: list[Section]
    failed: list[tuple[str, str]] = field(default_factory=list)   # (trial_id, first line of error)
    claims: list[V.Verdict] = field(default_factory=list)          # one per claim of the study, in order
    notes: str = ""                                                 # the study's commentary


def slug(index: int, title: str) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:48].rstrip("-")
    return f"{index:02d}-{words or 'plot'}"


def config_keys(study: Study) -> set[str]:
    keys = set(study.fixed) | set(study.grid) | {k for rows in study.zip.values() for k in rows[0]}
    for v in study.variants:
        keys |= set(v.fixed) | set(v.grid) | {k for rows in v.zip.values() for k in rows[0]}
    return keys


def header(study: Study, scale: str, rows: pd.DataFrame, total: int | None = None, location: str = "") -> Header:
    n = len(rows)
    h = Header(study.name, scale, study.workload, study.description, dict(count_statuses(rows["status"] if n else [])),
               unfinished=max(0, (total or 0) - n), location=location)
    if n and {"wall_s", "started_at", "finished_at"} <= set(rows.columns):
        h.compute_s = float(rows["wall_s"].sum())
        h.span_s = (pd.to_datetime(rows["finished_at"]).max() - pd.to_datetime(rows["started_at"]).min()).total_seconds()
    h.data = data_summary(rows)
    h.missing = missing_metric_lines(study, rows)
    return h


def missing_metric_lines(study: Study, rows: pd.DataFrame) -> list[str]:
    """How many completed rows have no value for the study's metric (allow_missing_metric: true
    lets a trial without it complete; rows of older runs may lack it too)."""
    if not study.metric or rows.empty:
        return []
    done = rows[rows["status"] == COMPLETED]
    missing = int(done[study.metric].isna().sum()) if study.metric in done else len(done)
    if not missing:
        return []
    why = " (allow_missing_metric: true)" if study.allow_missing_metric else ""
    return [f"Without the metric: {missing} of {len(done)} completed rows have no `{study.metric}`{why}."]


def section(index: int, spec: ReportTable | ReportPlot, completed: pd.DataFrame, labels: set[str],
            artifacts: T.Artifacts | None, draw: bool = True) -> Section:
    sec = Section(spec, slug(index, spec.title))
    if isinstance(spec, ReportPlot):
        if draw:
            try:
                sec.figure = P.render(completed, spec, artifacts)
                sec.notes = sec.figure.notes
            except Exception as e:  # noqa: BLE001 - one bad figure leaves the rest of the report
                sec.notes = [f"plot failed: {type(e).__name__}: {e}"]
        return sec
    sec.frame, sec.notes = T.table(completed, spec, artifacts)
    sec.keys = T.key_columns(spec, sec.frame, labels)
    return sec


def determinism_lines(study: Study) -> list[str]:
    """What the workload declares not bit-identical across execution knobs (orchestrator/run/registry.py
    determinism_note); nothing when every metric is, or when the workload cannot be loaded here."""
    from orchestrator.run import registry

    if study.workload == "command":
        return []
    try:
        note = registry.determinism_note(study.workload)
    except Exception:  # noqa: BLE001 - a report of finished rows does not need the workload's code
        return []
    prefix = "Not bit-identical across execution knobs on one machine: "
    return [f"Determinism (what is not bit-identical across --bundle, --group, --max-concurrent and resumes): "
            f"{note.removeprefix(prefix)}"] if note else []


def build(study: Study, scale: str, rows: pd.DataFrame, total: int | None = None,
          artifacts: T.Artifacts | None = None, location: str = "", draw: bool = True,
          runs: list[dict] | None = None) -> Report:
    """Every table and plot of ``study.report`` over ``rows`` (completed ones are tabulated);
    ``runs``: study.json's driver-run records, for the header's code and environment lines."""
    n = len(rows)
    completed = rows[rows["status"] == COMPLETED] if n else rows
    labels = config_keys(study)
    sections = [section(i + 1, spec, completed, labels, artifacts, draw) for i, spec in enumerate(study.report)]
    failed = rows[rows["status"] == FAILED].head(10) if n else rows
    errors = [(r.trial_id, str(r.error).splitlines()[0][:300] if str(r.error) else "") for r in failed.itertuples()]
    claims = V.judge_all(study.claims, completed, sorted(labels), artifacts) if n else \
        [V.Verdict(c, V.UNTESTABLE, reason="no rows yet") for c in study.claims]
    head = header(study, scale, rows, total, location)
    head.provenance = provenance_lines(runs, rows) + determinism_lines(study)
    return Report(head, sections, errors, claims, study.notes)


# ---------------------------------------------------------------------------- Markdown
def cell(v: Any, as_key: bool, decimals: int) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and not as_key:
        return f"{v:.{decimals}f}"
    if isinstance(v, float) and v == int(v):
        return str(int(v)) if abs(v) < 1e15 else str(v)
    return str(v)


def markdown_table(df: pd.DataFrame, decimals: int = 2, keys: Sequence[str] = ()) -> str:
    """Pipe table; ``keys`` columns (group labels, config values) are printed as they are,
    the others rounded to ``decimals``."""
    if df.empty:
        return "_(no rows)_"
    cols = [str(c) for c in df.columns]
    is_key = [c in set(keys) for c in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for rec in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v, k, decimals).replace("|", "\\|") for v, k in zip(rec, is_key)) + " |")
    return "\n".join(lines)


def header_lines(h: Header) -> list[str]:
    lines = [f"# {h.study} — {h.scale} scale", ""]
    if h.description:
        lines += [h.description, ""]
    summary = "Trials: " + ", ".join(f"{v} {k}" for k, v in h.counts.items())
    if h.unfinished:
        summary += f", {h.unfinished} not finished (partial report)"
    lines.append(summary + f". Workload `{h.workload}`.")
    if h.compute_s is not None:
        lines.append(f"Compute: {fmt_duration(h.compute_s)} of trial time; first start to last finish "
                     f"{fmt_duration(h.span_s or 0.0)}.")
    return lines + h.missing + h.aside + h.data + h.provenance + [""]


def section_lines(sec: Section, images: str) -> list[str]:
    spec = sec.spec
    lines = [f"## {spec.title}", ""]
    if spec.note:
        lines += [spec.note, ""]
    if spec.where or spec.artifact:
        what = f"artifact `{spec.artifact}` joined with its trial's row" if spec.artifact else ""
        lines += ["_Rows: " + "; ".join(p for p in (what, f"`{spec.where}`" if spec.where else "") if p) + "_", ""]
    if sec.notes:
        return lines + [f"_({'; '.join(sec.notes)})_", ""]
    if sec.is_plot:
        return lines + ([f"![{spec.title}]({images}/{sec.name}.png)", ""] if sec.figure and sec.figure.png else [])
    return lines + [markdown_table(sec.frame, spec.decimals, sec.keys), ""]


def claim_lines(verdicts: list[V.Verdict]) -> list[str]:
    """The claims table: each seed finding, where it comes from, what our rows give, the rule, the verdict."""
    if not verdicts:
        return []
    count = V.tally(verdicts)
    lines = ["## Claims of the seed", "",
             ", ".join(f"{n} {k}" for k, n in count.items() if n) + f" (of {len(verdicts)}); rules: "
             "orchestrator/report/verdicts.py.", "",
             "| claim | seed (source) | ours | rule | verdict |", "|---|---|---|---|---|"]

    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")
    for v in verdicts:
        c = v.claim
        ours, suffix = V.row_text(v)
        lines.append(f"| `{c.id}` | {esc(c.seed)} ({c.source}) | {esc(ours)} | {esc(v.rule or '–')} | "
                     f"**{v.verdict}**{suffix} |")
    notes = [f"- `{v.claim.id}`: {v.claim.note}" for v in verdicts if v.claim.note]
    return lines + ([""] + notes if notes else []) + [""]


def markdown(report: Report, images: str = L.REPORT_DIR) -> str:
    """The report as Markdown; plots are linked as ``images``/NN-title.png."""
    lines = header_lines(report.header)
    if report.notes:
        lines += [report.notes.strip(), ""]
    lines += claim_lines(report.claims)
    for sec in report.sections:
        lines += section_lines(sec, images)
    if report.failed:
        lines += ["## Failed trials", ""] + [f"- `{tid}`: {err}" for tid, err in report.failed] + [""]
    return "\n".join(lines).rstrip() + "\n"


def render(study: Study, scale: str, rows: pd.DataFrame, total: int | None = None,
           artifacts: T.Artifacts | None = None) -> str:
    """The report as Markdown (plots are drawn, and linked as report/NN-title.png)."""
    return markdown(build(study, scale, rows, total, artifacts))


# ---------------------------------------------------------------------------- storage
def study_artifacts(store, trial_ids: set[str]) -> T.Artifacts:
    """Artifact reader over a store, limited to the study's trials, read once per name."""
    cache: dict[str, pd.DataFrame] = {}

    def read(name: str) -> pd.DataFrame:
        if name not in cache:
            df = store.artifact(name)
            cache[name] = df[df["trial_id"].isin(trial_ids)].reset_index(drop=True) if not df.empty else df
        return cache[name]
    return read


def study_rows(store, trial_ids: set[str]) -> pd.DataFrame:
    """The rows of these trials (a study directory may hold rows of trials no longer in the grid)."""
    rows = store.rows()
    if rows.empty:
        return rows
    return rows[rows["trial_id"].isin(trial_ids)].reset_index(drop=True)


def build_for(store, study: Study, scale: str, trial_ids: set[str], all_rows: bool = False,
              draw: bool = True) -> Report:
    """The report of a study's trials in ``store``: rows of other trials there (earlier definitions
    of the study) are kept aside and named in the header; ``all_rows`` includes them, labelled."""
    from orchestrator.report import definitions as D

    m = store.manifest() or {}
    view = D.view(store, m, trial_ids, all_rows)
    rep = build(study, scale, view.rows, total=view.trials, artifacts=study_artifacts(store, view.row_ids),
                location=store.location, runs=m.get("runs"), draw=draw)
    rep.header.aside = view.lines()
    return rep


def spec_for(manifest: dict, study_file: str | Path | None = None) -> Study:
    """The study a report is made from: the one frozen in study.json, with the tables, plots, claims and notes of
    ``study_file`` when given, else of configs/studies/<name>.yaml when that file is the same study
    (same name and workload): a report section edited after the run applies without running again."""
    from orchestrator.study import loader
    study = Study.model_validate(manifest["study"])
    path = Path(study_file) if study_file else STUDY_DIR / f"{study.name}.yaml"
    if not study_file and not path.is_file():
        return study
    try:
        current = loader.load(path)
    except UserError:
        if study_file:
            raise
        return study  # a broken file next door does not stop a report of finished results
    if not study_file and (current.name, current.workload) != (study.name, study.workload):
        return study
    return study.model_copy(update={"report": current.report, "claims": current.claims, "notes": current.notes})


def for_store(store, study_file: str | Path | None = None, all_rows: bool = False, draw: bool = True) -> Report:
    """The report of the study in ``store`` (RESULTS/<study>/<scale>), from its study.json: the
    definition frozen there, its trials' rows (``all_rows``: every row, labelled)."""
    m = store.manifest()
    return build_for(store, spec_for(m, study_file), m["scale"], {t["trial_id"] for t in m["trials"]}, all_rows,
                     draw=draw)


def images_of(store) -> str:
    """Where a report's plots are, for text read outside the results location."""
    return L.join(store.location, L.REPORT_DIR)


def plotted(report: Report) -> list[Section]:
    """The sections that drew a plot (their figure has a PNG)."""
    return [sec for sec in report.sections if sec.figure is not None and sec.figure.png]


def write(store, report: Report) -> str:
    """report.md and report/ (each plot as PNG and its numbers as CSV) into the study's location;
    the report/ folder of an earlier report is replaced. Returns report.md's text."""
    store.delete_dir(L.REPORT_DIR)
    for sec in plotted(report):
        fig = sec.figure
        assert fig is not None  # plotted() keeps the sections with a figure
        store.write_bytes(L.join(L.REPORT_DIR, f"{sec.name}.png"), fig.png)
        store.write_bytes(L.join(L.REPORT_DIR, f"{sec.name}.csv"), fig.data.to_csv(index=False).encode())
    text = markdown(report)
    store.write_bytes(L.REPORT, text.encode())
    return text


def write_report(store, study: Study, scale: str, trial_ids: set[str]) -> str:
    """report.md and its plots (report/) into the study's location; returns report.md's text."""
    return write(store, build_for(store, study, scale, trial_ids))
