"""overnight run | status | report | list | describe | export.

Exit codes: 0 all trials done, 1 some trials failed (or were left unfinished), 2 bad input (one
line on stderr naming the file, field and value), 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from orchestrator.study import loader
from orchestrator.run.launch import DEFAULT_DATA, DEFAULT_RESULTS, STUDY_DIR
from orchestrator.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        raise UserError(f"{message} (see `overnight {self.prog.split()[-1]} --help`)" if " " in self.prog else message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="overnight", description="Run research studies (grids of training runs) on Ray Tune; "
                                              "every finished trial is a row of a Parquet dataset.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run(sub)
    _add_reading(sub)
    return p


def _add_run(sub) -> None:
    """`overnight run`: the one command that starts Ray."""
    r = sub.add_parser("run", help="run (or resume) a study")
    r.add_argument("study", help="study YAML file, or the name of one in configs/studies/")
    r.add_argument("--scale", default="fast", help="smoke | fast | full (default: fast)")
    r.add_argument("--results", default=DEFAULT_RESULTS, help="results root: a path or a pyarrow.fs URI (default: results/)")
    r.add_argument("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else an embedded local Ray)")
    r.add_argument("--max-concurrent", type=int, default=None, help="at most N trials at once")
    r.add_argument("--bundle", default=None, metavar="auto|N",
                   help="study trials per Ray Tune trial: auto (default, or the study's bundle:) or N; "
                        "each trial keeps its own row, checkpoint and retries")
    r.add_argument("--group", default=None, metavar="auto|off|N",
                   help="trials a workload can batch (group_key/run_group) run as one computation: auto "
                        "(default, or the study's group:; up to 8), off, or at most N per group")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter (or a study field such as resources.gpu=0.25); repeatable")
    r.add_argument("--retry-failed", action="store_true", help="run failed trials again")
    r.add_argument("--dry-run", action="store_true", help="print the trials and run nothing")
    r.add_argument("--data-root", default=DEFAULT_DATA, help="where datasets are found or downloaded")
    r.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray")
    r.add_argument("--num-gpus", type=float, default=None, help="GPUs of the embedded local Ray (may exceed the real ones: fake GPUs)")
    r.add_argument("--no-report", action="store_true", help="do not print the report at the end")


def _add_reading(sub) -> None:
    """The commands that read results, study files or workloads, and never start Ray."""
    s = sub.add_parser("status", help="summarise a results directory (does not start Ray)")
    s.add_argument("results_dir", nargs="?", default=DEFAULT_RESULTS)
    s.add_argument("--all-rows", action="store_true",
                   help="also count rows of earlier definitions of a study (not in its current trials), labelled")

    rep = sub.add_parser("report", help="write report.md (and its plots) for a results directory and print it; "
                                         "with two study directories, compare them side by side")
    rep.add_argument("results_dir", nargs="*", default=[DEFAULT_RESULTS],
                     help="a results location (every study under it), or two RESULTS/<study>/<scale> to compare")
    rep.add_argument("--out", default=None, help="also write the report to this file")
    rep.add_argument("--html", default=None, metavar="FILE",
                     help="also write one self-contained HTML page (tables, plots embedded, header)")
    rep.add_argument("--study", default=None, metavar="FILE",
                     help="take the tables and plots from this study file (default: configs/studies/<study>.yaml "
                          "when it is the same study, else the ones frozen in study.json)")
    rep.add_argument("--all-rows", action="store_true",
                     help="also tabulate rows of earlier definitions of the study (not in its current trials), "
                          "labelled in a `definition` column")

    sub.add_parser("list", help="studies in configs/studies/ and the registered workloads")

    d = sub.add_parser("describe", help="a workload's parameters (type, default, doc) and metrics")
    d.add_argument("workload", help="a registered workload name (see `overnight list`) or module:Class")

    e = sub.add_parser("export", help="one compacted Parquet or CSV file of a study's rows, for sharing")
    e.add_argument("results_dir", help="RESULTS/<study>/<scale> (a path or a URI)")
    e.add_argument("--out", required=True, help="FILE.parquet or FILE.csv (a path or a URI); a Parquet export "
                                                 "carries study.json and its artifacts beside it, and "
                                                 "`overnight report FILE.parquet` reports from it")

    f = sub.add_parser("findings", help="the findings index: per study, the verdicts of its claims over its "
                                        "committed export (docs/results/README.md)")
    f.add_argument("--data", default="docs/results/data", help="folder of <study>_<scale>.parquet exports")
    f.add_argument("--studies", default="configs/studies", help="folder of study files")
    f.add_argument("--scale", default="fast", choices=("smoke", "fast", "full"))
    f.add_argument("--out", default=None, help="write the index here (e.g. docs/results/README.md)")


# ------------------------------------------------------------------------------------------
def cmd_run(a: argparse.Namespace) -> int:
    from orchestrator.run.launch import check_bundle, check_group, execute_study, study_path
    from orchestrator.run.execute import describe
    from orchestrator.run.prepare import pending, prepare
    from orchestrator.results.dataset import study_store

    if a.max_concurrent is not None and a.max_concurrent < 1:
        raise UserError(f"must be at least 1 (got {a.max_concurrent})", source="--max-concurrent")
    bundle = check_bundle(a.bundle, "--bundle") if a.bundle is not None else None
    group = check_group(a.group, "--group") if a.group is not None else None
    prep = prepare(study_path(a.study), a.scale, a.sets, data_root=a.data_root)
    if a.dry_run:
        store = study_store(a.results, prep.study.name, a.scale)
        _print_dry_run(prep, store, len(pending(store, prep.trials, a.retry_failed)[0]))
        return 0
    out, store = execute_study(prep, a.results, data_root=a.data_root, retry_failed=a.retry_failed,
                               address=a.address, max_concurrent=a.max_concurrent, num_cpus=a.num_cpus,
                               num_gpus=a.num_gpus, bundle=bundle, group=group, say=lambda s: print(s, file=sys.stderr))
    print(f"{prep.study.name}/{a.scale}: {describe(out)}", file=sys.stderr)
    if out.interrupted:
        print("interrupted: run the same command again to resume", file=sys.stderr)
    for tid, err in out.failures[:5]:
        print(f"  failed {tid}: {str(err).splitlines()[0][:200] if err else ''}", file=sys.stderr)
    if len(out.failures) > 5:
        print(f"  ... and {len(out.failures) - 5} more (their rows have status 'failed' and the error)", file=sys.stderr)
    if out.failed:
        print("failed trials keep their rows and are not run again: add --retry-failed to run them again",
              file=sys.stderr)
    if not a.no_report and not out.interrupted:
        from orchestrator.report.page import write_report

        print(write_report(store, prep.study, a.scale, {t.trial_id for t in prep.trials}))
    return out.exit_code


def _print_dry_run(prep, store, todo: int) -> None:
    trials = prep.trials
    print(f"{len(trials)} trials")
    print(f"{prep.study.name}/{prep.scale}: workload {prep.study.workload} v{prep.version}; "
          f"{len(trials) - todo} finished, {todo} to run; results in {store.location}")
    from orchestrator.study.params import declared, id_config

    model = declared(prep.workload)[0]
    for t in trials[:5]:  # what makes each trial itself: the values away from their defaults
        print(f"  {t.trial_id}  {_short(id_config(model, t.config))}")
    if len(trials) > 5:
        print(f"  ... {len(trials) - 5} more")


def _short(cfg: dict[str, Any], limit: int = 160) -> str:
    text = " ".join(f"{k}={v}" for k, v in cfg.items())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _study_dirs(results_dir: str) -> list:
    """The studies under a results location, or the one study of a Parquet export
    (orchestrator/results/export.py: its rows, study.json and artifacts)."""
    from orchestrator.results.export import is_export, open_export
    from orchestrator.results.dataset import find_studies

    if is_export(str(results_dir)):
        return [open_export(str(results_dir))]
    return find_studies(results_dir)


def cmd_status(a: argparse.Namespace) -> int:
    from orchestrator.results.rows import FAILED

    summaries = [_study_summary(store, a.all_rows) for store in _study_dirs(a.results_dir)]
    if sys.stdout.isatty():
        _status_table(summaries)
    else:
        for st in summaries:
            print(f"{st['name']}: {st['trials']} trials | {st['completed']} completed | {st['failed']} failed | "
                  f"{st['diverged']} diverged | {st['pending']} pending{st['resumable']} | {st['spent']} trial time | "
                  f"{st['driver']}")
            print(f"  {st['location']}")
            for line in st["definitions"]:
                print(f"  {line}")
            for line in st["failures"]:
                print(f"  {line}")
    return max((1 if st[FAILED] else 0 for st in summaries), default=0)


def _study_summary(store, all_rows: bool = False) -> dict[str, Any]:
    """Counts of one study directory, read without starting Ray: of its current trials, and with
    ``all_rows`` of the rows of earlier definitions too (orchestrator/report/definitions.py)."""
    from orchestrator.report import definitions as D
    from orchestrator.formats import fmt_duration
    from orchestrator.results.rows import FAILED, count_statuses

    m = store.manifest()
    ids = [t["trial_id"] for t in m["trials"]]
    view = D.view(store, m, set(ids), all_rows, columns=["status", "wall_s", "error"])  # read once, what is shown
    rows = view.rows
    counts = count_statuses(rows["status"] if not rows.empty else [])
    in_flight = set(store.in_flight()) & set(ids)
    holder = store.lock().holder()
    failures = [f"failed {r.trial_id}: {str(r.error).splitlines()[0][:200]}"
                for r in rows[rows["status"] == FAILED].head(5).itertuples()] if counts[FAILED] else []
    return {"name": f"{m['study']['name']}/{m['scale']}", "trials": view.trials, **counts,
            "pending": len(ids) - len(view.current),
            "definitions": D.status_lines(view) if all_rows else view.lines(),
            "resumable": f" ({len(in_flight)} with checkpoints)" if in_flight else "",
            "spent": fmt_duration(float(rows["wall_s"].sum())) if not rows.empty else "0s",
            "driver": "driver running: " + holder if holder else "no driver running", "holder": holder or "",
            "location": store.location, "failures": failures}


def _status_table(summaries: list[dict[str, Any]]) -> None:
    from rich.console import Console, JustifyMethod
    from rich.table import Table

    table = Table(title="overnight status", title_justify="left")
    justify: JustifyMethod
    for col, justify in (("study", "left"), ("trials", "right"), ("done", "right"), ("failed", "right"),
                         ("diverged", "right"), ("pending", "right"), ("time", "right"), ("driver", "left")):
        table.add_column(col, justify=justify, no_wrap=col != "driver")
    for st in summaries:
        table.add_row(st["name"], str(st["trials"]), str(st["completed"]),
                      f"[red]{st['failed']}[/red]" if st["failed"] else "0", str(st["diverged"]),
                      f"{st['pending']}{st['resumable']}", st["spent"], st["holder"] or "-")
    console = Console()
    console.print(table)
    for st in summaries:
        for line in st["definitions"] + st["failures"]:
            console.print(f"{st['name']}: {line}", markup=False, highlight=False)


def cmd_report(a: argparse.Namespace) -> int:
    from orchestrator.report import compare, html, page as report
    from orchestrator.run.launch import study_path

    dirs = a.results_dir or [DEFAULT_RESULTS]
    if len(dirs) > 2:
        raise UserError(f"report takes one results location, or two study directories to compare (got {len(dirs)})",
                        source="report")
    study_file = str(study_path(a.study)) if a.study else None
    doc: compare.Comparison | list[report.Report]
    if len(dirs) == 2:
        stores = [_one_study(d) for d in dirs]
        doc = compare.for_stores(stores[0], stores[1], study_file, all_rows=a.all_rows)
        text = compare.markdown(doc)
        _write_text(a.out, text, "--out")
    else:
        stores = _study_dirs(dirs[0])
        doc = [report.for_store(store, study_file, all_rows=a.all_rows) for store in stores]
        for store, rep in zip(stores, doc):
            report.write(store, rep)
        text = "\n".join(report.markdown(rep, images=report.images_of(store)) for store, rep in zip(stores, doc))
        if a.out:  # a file to paste elsewhere: its plots go beside it, linked relative to it
            text_out = "\n".join(report.markdown(rep, images=_plots_beside(a.out, rep, len(stores) > 1))
                                  for rep in doc)
            _write_text(a.out, text_out, "--out")
    if a.html:
        _write_text(a.html, html.page(doc), "--html")
    print(text, end="")
    return 0


def _one_study(location: str):
    stores = _study_dirs(location)
    if len(stores) != 1:
        raise UserError(f"a comparison takes two study directories (RESULTS/<study>/<scale>); found {len(stores)} "
                        f"studies under it", source=location)
    return stores[0]


def _write_text(path: str | None, text: str, option: str) -> None:
    if not path:
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    except OSError as e:
        raise UserError(f"cannot write: {e.strerror}", source=option, field=path) from None


def _plots_beside(out: str, rep, several: bool) -> str:
    """Copies the report's plots into a folder named after ``out`` (``r.md`` -> ``r/``, one
    subfolder per study when there are several) and returns that folder relative to ``out``."""
    from orchestrator.report import page as report

    rel = Path(Path(out).stem)
    if several:
        rel = rel / f"{rep.header.study}-{rep.header.scale}"
    folder = Path(out).parent / rel
    try:
        for sec in report.plotted(rep):
            assert sec.figure is not None  # plotted() keeps the sections with a figure
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{sec.name}.png").write_bytes(sec.figure.png)
    except OSError as e:
        raise UserError(f"cannot write the plots: {e.strerror}", source="--out", field=str(folder)) from None
    return rel.as_posix()


def cmd_list(a: argparse.Namespace) -> int:
    from orchestrator.run import registry

    print("Studies (configs/studies/):")
    files = sorted(STUDY_DIR.glob("*.yaml")) if STUDY_DIR.is_dir() else []
    if not files:
        print("  (none here; run from the project root)")
    for f in files:
        try:
            st = loader.load(f)
            from orchestrator.study.grid import configs

            n = sum(1 for _ in configs(st))
            scales = ",".join(st.scales) or "-"
            print(f"  {f.stem:<28} {st.workload:<24} {n:>4} trials  scales {scales:<16} {st.description[:70]}")
        except UserError as e:
            print(f"  {f.stem:<28} INVALID: {e}")
    print("Workloads:")
    for name, target in sorted(registry.registered().items()):
        try:
            cls = registry.load(name)
            print(f"  {name:<24} v{cls.version:<4} {target}")
        except UserError as e:
            print(f"  {name:<24} unavailable: {e.bare}")
    return 0


def cmd_describe(a: argparse.Namespace) -> int:
    from orchestrator.study import params
    from orchestrator.run import registry

    try:
        cls = registry.load(a.workload)
    except UserError as e:
        raise UserError(e.bare + params.suggest(a.workload, registry.registered()), source="describe") from None
    print(params.describe(cls))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from orchestrator.results.export import export

    stores = _study_dirs(a.results_dir)
    if len(stores) != 1:
        raise UserError(f"export takes one study directory (RESULTS/<study>/<scale>); found {len(stores)} under it",
                        source=a.results_dir)
    n = export(stores[0], a.out)
    print(f"{n} rows -> {a.out}", file=sys.stderr)
    return 0


def cmd_findings(a: argparse.Namespace) -> int:
    from orchestrator.report.findings import index

    studies = Path(a.studies)
    if not studies.is_dir():
        raise UserError("no such folder of study files", source="--studies", field=a.studies)
    pages = Path(a.out).parent if a.out else Path(a.data).parent
    text = index(studies, Path(a.data), pages, a.scale)
    _write_text(a.out, text, "--out")
    print(text, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        a = _parser().parse_args(argv)
        return {"run": cmd_run, "status": cmd_status, "report": cmd_report, "list": cmd_list,
                "describe": cmd_describe, "export": cmd_export, "findings": cmd_findings}[a.command](a)
    except UserError as e:
        print(f"overnight: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("overnight: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `overnight ... | head`
        sys.stderr.close()
        return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
