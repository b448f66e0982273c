"""A report as one self-contained HTML page (``overnight report DIR --html report.html``): the
header, every table, every plot embedded as a data: URI. No scripts, no external files, so it can
be mailed or opened from a shared drive."""
from __future__ import annotations

import base64
import numbers
from datetime import datetime, timezone
from html import escape
from typing import Sequence

import numpy as np
import pandas as pd

from orchestrator.report import page as R
from orchestrator.report.compare import DELTA, Comparison
from orchestrator.formats import fmt_duration

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330; margin: 0;
       background: #f6f7f9; }
article { max-width: 1180px; margin: 24px auto; background: #fff; padding: 24px 32px; border-radius: 6px;
          box-shadow: 0 1px 3px rgba(0,0,0,.08); }
h1 { font-size: 22px; margin: 0 0 6px; } h2 { font-size: 16px; margin: 28px 0 8px; border-bottom: 1px solid #e3e6ea;
     padding-bottom: 4px; }
p.desc { color: #4a5262; margin: 0 0 12px; } p.note { color: #4a5262; font-size: 13px; margin: 4px 0; }
p.rows, p.missing { color: #6b7385; font-size: 12px; font-style: italic; margin: 4px 0; }
table.meta td { padding: 1px 14px 1px 0; vertical-align: top; } table.meta td:first-child { color: #6b7385; }
.scroll { overflow-x: auto; }
table.data { border-collapse: collapse; font-size: 12.5px; margin: 6px 0; }
table.data th, table.data td { border-bottom: 1px solid #e3e6ea; padding: 3px 9px; white-space: nowrap; }
table.data th { background: #f0f2f5; text-align: left; position: sticky; top: 0; }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.data td.key { font-weight: 600; } table.data td.neg { color: #b3261e; } table.data td.pos { color: #1b7a3a; }
figure { margin: 8px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e3e6ea; }
footer { color: #8a90a0; font-size: 12px; text-align: center; margin: 8px 0 24px; }
ul.failed { font-size: 12.5px; }
"""


def _cell(v, as_key: bool, decimals: int, delta: bool) -> str:
    text = escape(R.cell(v, as_key, decimals))
    numeric = not as_key and isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
    cls = ["key"] if as_key else (["num"] if numeric else [])
    if delta and numeric and not pd.isna(v) and v != 0:
        cls.append("pos" if v > 0 else "neg")
    return f'<td class="{" ".join(cls)}">{text}</td>' if cls else f"<td>{text}</td>"


def table_html(df: pd.DataFrame, decimals: int, keys: Sequence[str]) -> str:
    if df.empty:
        return '<p class="missing">(no rows)</p>'
    cols = [str(c) for c in df.columns]
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    rows = []
    for rec in df.itertuples(index=False):
        rows.append("<tr>" + "".join(_cell(None if v is pd.NA else v, c in keys, decimals, c.startswith(DELTA))
                                     for v, c in zip(rec, cols)) + "</tr>")
    return f'<div class="scroll"><table class="data"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def header_html(h: R.Header, title_tag: str = "h1", label: str = "") -> str:
    meta = [("Workload", f"<code>{escape(h.workload)}</code>"),
            ("Trials", escape(", ".join(f"{v} {k}" for k, v in h.counts.items())
                              + (f", {h.unfinished} not finished (partial report)" if h.unfinished else "")))]
    if h.compute_s is not None:
        meta.append(("Compute", escape(f"{fmt_duration(h.compute_s)} of trial time; first start to last finish "
                                       f"{fmt_duration(h.span_s or 0.0)}")))
    for line in h.missing + h.aside + h.data + h.provenance:   # "Kept aside: ...", "Data: ...", "Not the study's dataset: ...", "Code: ..."
        key, _, text = line.partition(": ")
        meta.append((escape(key.strip("*")), escape(text)))
    if h.location:
        meta.append(("Results", f"<code>{escape(h.location)}</code>"))
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in meta)
    title = f"{escape(label + ' = ') if label else ''}{escape(h.study)} — {escape(h.scale)} scale"
    desc = f'<p class="desc">{escape(h.description)}</p>' if h.description else ""
    return f'<header><{title_tag}>{title}</{title_tag}>{desc}<table class="meta">{rows}</table></header>'


def section_html(sec: R.Section) -> str:
    spec = sec.spec
    parts = [f'<section id="{escape(sec.name)}"><h2>{escape(spec.title)}</h2>']
    if spec.note:
        parts.append(f'<p class="note">{escape(spec.note)}</p>')
    where = [f"artifact {spec.artifact} joined with its trial's row"] if spec.artifact else []
    where += [spec.where] if spec.where else []
    if where:
        parts.append(f'<p class="rows">Rows: {escape("; ".join(where))}</p>')
    if sec.is_plot and sec.figure is not None and sec.figure.png:
        data = base64.b64encode(sec.figure.png).decode()
        parts.append(f'<figure><img alt="{escape(spec.title)}" src="data:image/png;base64,{data}"></figure>')
    elif sec.frame is not None and not (sec.notes and sec.frame.empty):
        parts.append(table_html(sec.frame, spec.decimals, sec.keys))
    if sec.notes:
        parts.append(f'<p class="missing">({escape("; ".join(sec.notes))})</p>')
    return "".join(parts) + "</section>"


def claims_html(verdicts) -> str:
    """The claims table (orchestrator/report/verdicts.py), as the Markdown report has it."""
    from orchestrator.report import verdicts as V

    if not verdicts:
        return ""
    rows = []
    for v in verdicts:
        c = v.claim
        ours, suffix = V.row_text(v, quote="")
        verdict = v.verdict + suffix
        rows.append(f"<tr><td><code>{escape(c.id)}</code></td><td>{escape(c.seed)} ({escape(c.source)})</td>"
                    f"<td>{escape(ours)}</td><td>{escape(v.rule or '–')}</td><td><b>{escape(verdict)}</b></td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("claim", "seed (source)", "ours", "rule", "verdict"))
    return (f'<section id="claims"><h2>Claims of the seed</h2><div class="scroll"><table class="data"><thead><tr>{head}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div></section>')


def report_html(rep: R.Report) -> str:
    notes = f'<p class="note">{escape(rep.notes)}</p>' if rep.notes else ""
    body = [header_html(rep.header), notes, claims_html(rep.claims)] + [section_html(s) for s in rep.sections]
    if rep.failed:
        items = "".join(f"<li><code>{escape(t)}</code>: {escape(e)}</li>" for t, e in rep.failed)
        body.append(f'<section id="failed"><h2>Failed trials</h2><ul class="failed">{items}</ul></section>')
    return "<article>" + "".join(body) + "</article>"


def comparison_html(cmp: Comparison) -> str:
    a, b = cmp.labels
    title = f"Comparison: {a} = {cmp.a.study} ({cmp.a.scale}), {b} = {cmp.b.study} ({cmp.b.scale})"
    intro = f'<p class="desc">Tables of {escape(cmp.a.study)}\'s report computed on both; {DELTA} = {b} - {a}.</p>'
    heads = header_html(cmp.a, "h2", a) + header_html(cmp.b, "h2", b)
    return f"<article><h1>{escape(title)}</h1>{intro}{heads}" + "".join(section_html(s) for s in cmp.sections) + "</article>"


def page(doc: Sequence[R.Report] | Comparison) -> str:
    """The whole page: several reports one after the other, or a comparison."""
    if isinstance(doc, Comparison):
        title, body = f"{doc.a.study} vs {doc.b.study}", comparison_html(doc)
    else:
        title = ", ".join(f"{r.header.study} ({r.header.scale})" for r in doc)
        body = "".join(report_html(r) for r in doc)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)} — overnight report</title><style>{CSS}</style></head><body>{body}"
            f"<footer>overnight report, {stamp}</footer></body></html>\n")
