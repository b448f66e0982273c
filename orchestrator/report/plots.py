"""The figures a study declares in its report (``plot:`` items): the data each one plots, a
matplotlib figure drawn from exactly that data (no pyplot, no display: the Agg renderer), and the
PNG. The data is kept with the figure so a report can save it beside the image (CSV) and a test
can check the figure against it."""
from __future__ import annotations

import io
import math
import textwrap
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.report import tables as T
from orchestrator.study.report_schema import ReportPlot

PANEL_W, PANEL_H, MAX_COLS, DPI = 4.8, 3.4, 3, 100


@dataclass
class Figure:
    spec: ReportPlot
    data: pd.DataFrame                   # what is drawn, one row per bar / point / cell
    png: bytes = b""
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- data
def measure(spec: ReportPlot) -> str:
    """The column a plot shows as a number: y, or the colour of a heatmap."""
    if spec.plot == "heatmap":
        assert spec.value is not None  # ReportPlot requires it of a heatmap
        return spec.value
    return spec.y


def plot_data(df: pd.DataFrame, spec: ReportPlot) -> pd.DataFrame:
    """One row per drawn element. bar / line: facet, hue, x, the ``stat`` of y, its error and n;
    heatmap: facet, y, x, the ``stat`` of value and n; scatter: every row with numbers in x and y."""
    keys = [c for c in (spec.facet, spec.hue) if c]
    df = df.dropna(subset=keys + [spec.x] + ([spec.y] if spec.plot == "heatmap" else []))  # no place to draw
    if spec.plot == "scatter":
        out = df[keys + [spec.x, spec.y]].copy()
        out[spec.x], out[spec.y] = T.numeric(out[spec.x]), T.numeric(out[spec.y])
        return T.order_rows(out.dropna(subset=[spec.x, spec.y]), keys, spec.order)
    cells = keys + ([spec.y] if spec.plot == "heatmap" else []) + [spec.x]
    m = measure(spec)
    records = []
    for key, g in T.groups(df, cells):
        rec: dict[str, Any] = dict(zip(cells, key))
        rec[m] = T.stat(g, m, spec.stat)
        if spec.plot != "heatmap":
            rec["error"] = T.stat(g, m, spec.error) if spec.error != "none" else float("nan")
        rec["n"] = T.stat(g, m, "n")
        records.append(rec)
    out = pd.DataFrame.from_records(records)
    return T.order_rows(out.dropna(subset=[m]), cells, spec.order)


def _levels(data: pd.DataFrame, col: str | None, spec: ReportPlot) -> list[Any]:
    return [None] if not col else T.ordered_values(data[col], spec.order.get(col))


def _label(v: Any) -> str:
    return T.text(v) if not isinstance(v, (np.floating, float)) else T.text(float(v))


# ---------------------------------------------------------------------------- drawing
def figure(data: pd.DataFrame, spec: ReportPlot):
    """The matplotlib Figure of ``data`` (from :func:`plot_data`): one panel per facet value."""
    from matplotlib.figure import Figure as MplFigure

    facets = _levels(data, spec.facet, spec)
    heat = spec.plot == "heatmap"
    ncols = min(len(facets), MAX_COLS + heat)
    nrows = math.ceil(len(facets) / ncols)
    width = PANEL_W * (0.8 if heat and ncols > 1 else 1.0)
    fig = MplFigure(figsize=(width * ncols + 0.6 * heat, PANEL_H * nrows + 0.4), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=spec.plot != "heatmap")
    images = []
    for i, value in enumerate(facets):
        ax = axes[i // ncols][i % ncols]
        part = data if spec.facet is None else data[data[spec.facet] == value]
        if spec.facet is not None:
            ax.set_title(f"{spec.facet} = {_label(value)}", fontsize=10)
        images.append(DRAW[spec.plot](ax, part, data, spec))
        _axes(ax, spec, first_column=i % ncols == 0)
    for j in range(len(facets), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    if spec.plot == "heatmap" and images:
        fig.colorbar(images[-1], ax=axes.ravel().tolist(), shrink=0.9, label=f"{spec.value} ({spec.stat})")
    elif spec.hue:
        _legend(fig, data, spec)
    fig.suptitle(textwrap.fill(spec.title, width=int(width * ncols * 10)), fontsize=11)
    return fig


def _legend(fig, data: pd.DataFrame, spec: ReportPlot) -> None:
    """One legend for every panel: each hue value keeps its colour across facets."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Patch | Line2D] = []
    for k, h in enumerate(_levels(data, spec.hue, spec)):
        if spec.plot == "bar":
            handles.append(Patch(color=_color(k), label=_label(h)))
        else:
            handles.append(Line2D([], [], color=_color(k), marker="o", linestyle="-" if spec.plot == "line" else "",
                                  label=_label(h)))
    fig.legend(handles=handles, title=spec.hue, loc="outside right center", fontsize=8, title_fontsize=8)


def _color(k: int) -> str:
    return f"C{k % 10}"


def _axes(ax, spec: ReportPlot, first_column: bool = True) -> None:
    ax.set_xlabel(spec.x)
    if spec.plot == "heatmap":
        ax.set_ylabel(spec.y)
        return
    err = f" ± {spec.error}" if spec.plot in ("bar", "line") and spec.error != "none" else ""
    if first_column:  # the other panels share its y axis
        ax.set_ylabel(spec.y if spec.plot == "scatter" else f"{spec.y} ({spec.stat}{err})")
    ax.grid(True, axis="y", alpha=0.3)
    if spec.logx:
        ax.set_xscale("log")
    if spec.logy:
        ax.set_yscale("log")


def _categories(ax, xs: list[Any]) -> dict[Any, int]:
    pos = {x: i for i, x in enumerate(xs)}
    ax.set_xlim(-0.5, len(xs) - 0.5)
    labels = [_label(x) for x in xs]
    ax.set_xticks(range(len(xs)), labels, rotation=30 if sum(map(len, labels)) > 40 else 0,
                  ha="right" if sum(map(len, labels)) > 40 else "center", fontsize=8)
    return pos


def _hues(part: pd.DataFrame, spec: ReportPlot, data: pd.DataFrame):
    """(index, hue value, its rows) for every hue value of the whole plot (so colours agree)."""
    for k, h in enumerate(_levels(data, spec.hue, spec)):
        yield k, h, (part if spec.hue is None else part[part[spec.hue] == h])


def _bar(ax, part: pd.DataFrame, data: pd.DataFrame, spec: ReportPlot):
    pos = _categories(ax, _levels(data, spec.x, spec))
    hues = list(_hues(part, spec, data))
    width = 0.8 / len(hues)
    for k, h, g in hues:
        if g.empty:
            continue
        x = np.array([pos[v] for v in g[spec.x]], dtype=float) - 0.4 + width * (k + 0.5)
        err = g["error"].to_numpy(float) if spec.error != "none" else None
        ax.bar(x, g[spec.y].to_numpy(float), width, yerr=err, capsize=3, color=_color(k),
               label=_label(h) if h is not None else None, error_kw={"elinewidth": 1})
    ax.axhline(0, color="black", linewidth=0.6)


def _line(ax, part: pd.DataFrame, data: pd.DataFrame, spec: ReportPlot):
    numeric_x = pd.api.types.is_numeric_dtype(data[spec.x]) and not pd.api.types.is_bool_dtype(data[spec.x])
    pos: dict[Any, int] = {} if numeric_x else _categories(ax, _levels(data, spec.x, spec))
    for k, h, g in _hues(part, spec, data):
        if g.empty:
            continue
        g = g.sort_values(spec.x, kind="stable") if numeric_x else g
        x = g[spec.x].to_numpy(float) if numeric_x else np.array([pos[v] for v in g[spec.x]], dtype=float)
        err = g["error"].to_numpy(float) if spec.error != "none" else None
        ax.errorbar(x, g[spec.y].to_numpy(float), yerr=err, marker="o", markersize=4, capsize=3, color=_color(k),
                    label=_label(h) if h is not None else None)
    xs: np.ndarray | list[float] = np.unique(T.numeric(data[spec.x]).dropna().to_numpy(float)) if numeric_x else []
    if 0 < len(xs) <= 12 and not spec.logx:  # a few settings (depth, bits): tick exactly those
        ax.set_xticks(xs, [_label(v) for v in xs], fontsize=8)


def _scatter(ax, part: pd.DataFrame, data: pd.DataFrame, spec: ReportPlot):
    for k, h, g in _hues(part, spec, data):
        if not g.empty:
            ax.scatter(g[spec.x].to_numpy(float), g[spec.y].to_numpy(float), s=14, alpha=0.75, color=_color(k),
                       label=_label(h) if h is not None else None)


def _heatmap(ax, part: pd.DataFrame, data: pd.DataFrame, spec: ReportPlot):
    xs, ys = _levels(data, spec.x, spec), _levels(data, spec.y, spec)
    grid = np.full((len(ys), len(xs)), np.nan)
    for y, x, v in part[[spec.y, spec.x, spec.value]].itertuples(index=False, name=None):
        grid[ys.index(_match(ys, y)), xs.index(_match(xs, x))] = v
    values = data[spec.value].to_numpy(float)
    im = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="viridis", origin="lower",
                   vmin=np.nanmin(values), vmax=np.nanmax(values))
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.{spec.decimals}f}", ha="center", va="center", fontsize=7,
                    color="white" if im.norm(v) < 0.5 else "black")
    ax.set_xticks(range(len(xs)), [_label(x) for x in xs], fontsize=8)
    ax.set_yticks(range(len(ys)), [_label(y) for y in ys], fontsize=8)
    return im


def _match(levels: list[Any], v: Any) -> Any:
    return next(x for x in levels if x == v)


DRAW = {"bar": _bar, "line": _line, "scatter": _scatter, "heatmap": _heatmap}


# ---------------------------------------------------------------------------- entry point
def render(rows: pd.DataFrame, spec: ReportPlot, artifacts: T.Artifacts | None = None) -> Figure:
    """The figure of ``spec`` over completed ``rows``, as PNG bytes with its data; or notes."""
    df, notes = T.select(rows, spec, artifacts)
    if notes:
        return Figure(spec, pd.DataFrame(), notes=notes)
    data = plot_data(df, spec)
    if data.empty:
        return Figure(spec, data, notes=[f"no numbers in {measure(spec)} to plot"])
    fig = figure(data, spec)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return Figure(spec, data, png=buf.getvalue())
