"""Two studies side by side (``overnight report A B``): every table of A's report computed on
both A's and B's rows, joined on the table's group columns, each measurement as A, B and the
difference B - A. For example transformer_grid against transformer_grid_legacy, or one study at
two scales."""
from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import pandas as pd

from orchestrator.report import page as R
from orchestrator.study.report_schema import ReportTable

DELTA = "Δ"


@dataclass
class Comparison:
    a: R.Header
    b: R.Header
    sections: list[R.Section] = field(default_factory=list)   # tables only, A and B joined
    labels: tuple[str, str] = ("A", "B")


def merge_keys(spec: ReportTable) -> list[str]:
    """Columns that identify a row of the table in both studies (group values, not measurements)."""
    keys = list(spec.by) + (list(spec.best.by) if spec.best else []) + (["value"] if spec.layout == "long" else [])
    return list(dict.fromkeys(keys))


def _numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _ranked(frames: list[pd.DataFrame], keys: list[str]) -> tuple[list[pd.DataFrame], list[str]]:
    """Keys that identify one row: with several rows per key (best top-k) or no keys, the rank
    within the key is added as ``#``."""
    if keys and not any(df.duplicated(keys).any() for df in frames):
        return frames, keys
    ranked = [df.assign(**{"#": (df.groupby(keys, dropna=False).cumcount() if keys else pd.Series(range(len(df)),
                                                                                                   index=df.index)) + 1})
              for df in frames]
    return ranked, keys + ["#"]


def _suffixed(df: pd.DataFrame, on: list[str], label: str) -> pd.DataFrame:
    return df.rename(columns={c: f"{c} [{label}]" for c in df.columns if c not in on})


def side_by_side(fa: pd.DataFrame | None, fb: pd.DataFrame | None, keys: list[str],
                 labels: tuple[str, str] = ("A", "B"), no_delta: AbstractSet[str] = frozenset()) -> pd.DataFrame:
    """One row per key in either frame; every other column as ``col [A]``, ``col [B]`` and, for
    numbers outside ``no_delta``, ``Δ col`` = B - A. A missing frame (no table on that side) leaves
    its columns out."""
    present = [(f, lab) for f, lab in ((fa, labels[0]), (fb, labels[1])) if f is not None]
    frames, on = _ranked([f for f, _ in present], keys)
    parts = [_suffixed(f, on, lab) for f, (_, lab) in zip(frames, present)]
    merged = parts[0] if len(parts) == 1 else parts[0].merge(parts[1], on=on, how="outer", sort=False)
    order = list(on)
    columns = dict.fromkeys(c for f in frames for c in f.columns if c not in on)
    for col in columns:
        cols = [f"{col} [{lab}]" for _, lab in present if f"{col} [{lab}]" in merged.columns]
        order += cols
        if len(cols) == 2 and col not in no_delta and all(_numeric(f[col]) for f in frames):
            whole = all(pd.api.types.is_integer_dtype(f[col]) for f in frames)   # counts stay whole
            kind = "Int64" if whole else "Float64"
            merged[f"{DELTA} {col}"] = merged[cols[1]].astype(kind) - merged[cols[0]].astype(kind)
            order.append(f"{DELTA} {col}")
    merged = R.T.order_rows(merged[order], on, {})
    return merged.drop(columns=["#"]) if on == ["#"] else merged


def compare(ra: R.Report, rb: R.Report, labels: tuple[str, str] = ("A", "B")) -> Comparison:
    """``ra`` and ``rb`` must come from the same tables (build B with A's study report)."""
    out = Comparison(ra.header, rb.header, labels=labels)
    for sa, sb in zip(ra.sections, rb.sections):
        if not isinstance(sa.spec, ReportTable):  # a plot (Section.is_plot)
            continue
        keys = merge_keys(sa.spec)
        sec = R.Section(sa.spec, sa.name, keys=keys)
        sec.notes = [f"{lab}: {'; '.join(s.notes)}" for lab, s in zip(labels, (sa, sb)) if s.notes]
        if not (sa.notes and sb.notes):
            labels_only = set(sa.keys) | set(sb.keys)
            sec.frame = side_by_side(None if sa.notes else sa.frame, None if sb.notes else sb.frame, keys, labels,
                                     no_delta=labels_only)
            sec.keys = [c for c in sec.frame.columns if c in keys or c.rsplit(" [", 1)[0] in labels_only]
        out.sections.append(sec)
    return out


def markdown(cmp: Comparison) -> str:
    a, b = cmp.labels
    lines = [f"# Comparison: {a} = {cmp.a.study} ({cmp.a.scale}), {b} = {cmp.b.study} ({cmp.b.scale})", "",
             f"Tables of {cmp.a.study}'s report computed on both; {DELTA} = {b} - {a}.", ""]
    for lab, h in ((a, cmp.a), (b, cmp.b)):
        body = [x for x in R.header_lines(h)[1:] if x and x != h.description]
        lines += [f"**{lab}** — `{h.location}`", ""] + [f"- {x}" for x in body] + [""]
    for sec in cmp.sections:
        spec = sec.spec
        lines += [f"## {spec.title}", ""] + ([f"_Rows: `{spec.where}`_", ""] if spec.where else [])
        if sec.frame is not None:
            lines += [R.markdown_table(sec.frame, spec.decimals, sec.keys), ""]
        if sec.notes:
            lines += [f"_({'; '.join(sec.notes)})_", ""]
    return "\n".join(lines).rstrip() + "\n"


def labels_of(a: R.Header, b: R.Header) -> tuple[str, str]:
    """Short column labels: the scales when the study is the same, else A and B."""
    if a.study == b.study and a.scale != b.scale:
        return a.scale, b.scale
    return "A", "B"


def for_stores(store_a, store_b, study_file: str | None = None, all_rows: bool = False) -> Comparison:
    """A's tables (its study file's, see ``report.spec_for``) computed on both studies' rows: each
    study's current trials (``all_rows``: every row, labelled; orchestrator/report/definitions.py)."""
    from orchestrator.report import definitions as D

    ma, mb = store_a.manifest(), store_b.manifest()
    study_a = R.spec_for(ma, study_file)
    study_b = R.Study.model_validate(mb["study"]).model_copy(update={"report": study_a.report})
    built = []
    for store, m, study in ((store_a, ma, study_a), (store_b, mb, study_b)):
        view = D.view(store, m, {t["trial_id"] for t in m["trials"]}, all_rows)
        rep = R.build(study, m["scale"], view.rows, view.trials, R.study_artifacts(store, view.row_ids),
                      store.location, draw=False)
        rep.header.aside = view.lines()
        built.append(rep)
    ra, rb = built
    return compare(ra, rb, labels_of(ra.header, rb.header))
