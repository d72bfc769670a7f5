"""Plots as PNG files, byte-identical for the same inputs.

No pyplot (no global figure state, no backend switch in the caller's process): figures are
``matplotlib.figure.Figure`` objects saved through the Agg canvas, under matplotlib's built-in
default style plus ``STYLE`` (so a user's matplotlibrc does not change the output), with the
PNG "Software" tag removed and a fixed ``svg.hashsalt``; colours and markers are assigned to
pools in sorted order, so a pool has the same colour in every plot of a report.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

DPI = 110
STYLE = {
    "svg.hashsalt": "poolbench",
    "font.family": "DejaVu Sans",
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
    "legend.fontsize": 8.0,
    "xtick.labelsize": 8.0,
    "ytick.labelsize": 8.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "image.interpolation": "nearest",
    "path.simplify": False,
}
PNG_METADATA = {"Software": None}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p")


@contextlib.contextmanager
def plot_style():
    """matplotlib's defaults + ``STYLE`` for the duration of the block, whatever the user set."""
    with mpl.rc_context():
        mpl.rcdefaults()
        mpl.rcParams.update(STYLE)
        yield


def new_figure(width: float, height: float):
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG without the varying metadata; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=DPI, metadata=PNG_METADATA)
    return path


def pool_styles(pools: Iterable[str]) -> dict[str, dict]:
    """{pool: {"color", "marker"}} in sorted pool order (tab10, then tab20 beyond ten pools)."""
    names = sorted(dict.fromkeys(str(p) for p in pools))
    cmap = mpl.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {p: {"color": cmap(i % cmap.N), "marker": MARKERS[i % len(MARKERS)]}
            for i, p in enumerate(names)}


def pareto_front(xs: Sequence[float], ys: Sequence[float], x_better: str = "max",
                 y_better: str = "max") -> list[int]:
    """Indices of the points no other point beats on both axes, in increasing x."""
    pts = np.column_stack([np.asarray(xs, float) * (1 if x_better == "max" else -1),
                           np.asarray(ys, float) * (1 if y_better == "max" else -1)])
    keep = []
    for i, p in enumerate(pts):
        if not np.isfinite(p).all():
            continue
        dominated = any(np.all(q >= p) and np.any(q > p) for j, q in enumerate(pts)
                        if j != i and np.isfinite(q).all())
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: (xs[i], ys[i]))


def scatter_front(points: Mapping[str, tuple[float, float]], styles: dict, path: Path, *,
                  xlabel: str, ylabel: str, title: str, x_better: str = "max",
                  y_better: str = "max", note: str | None = None) -> Path:
    """One labelled point per pool and the Pareto front (dashed) through the undominated ones."""
    pools = sorted(points)
    xs = [points[p][0] for p in pools]
    ys = [points[p][1] for p in pools]
    with plot_style():
        fig = new_figure(6.4, 4.6)
        ax = fig.add_subplot()
        for p, x, y in zip(pools, xs, ys):
            st = styles[p]
            ax.scatter([x], [y], s=60, color=st["color"], marker=st["marker"], label=p, zorder=3,
                       edgecolors="black", linewidths=0.6)
        front = pareto_front(xs, ys, x_better, y_better)
        if len(front) >= 1:
            fx = [xs[i] for i in front]
            fy = [ys[i] for i in front]
            ax.plot(fx, fy, linestyle="--", color="0.35", linewidth=1.2, zorder=2,
                    label="Pareto front")
        _pad_limits(ax, xs, ys)
        for p, (dx, dy) in zip(pools, _label_offsets(ax, pools, xs, ys, fig.get_size_inches())):
            ax.annotate(p, (points[p][0], points[p][1]), xytext=(dx, dy), textcoords="offset points",
                        fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        better = ("right" if x_better == "max" else "left") + ", " + ("up" if y_better == "max" else "down")
        ax.text(0.99, 0.01, f"better: {better}" + (f"\n{note}" if note else ""),
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="0.35")
        ax.legend(loc="best", frameon=False)
        return save(fig, path)


def _label_offsets(ax, labels, xs, ys, fig_inches) -> list[tuple[float, float]]:
    """A text offset (points) per label, the first of eight places around its marker that
    overlaps no other marker or label placed before it (else the first place): labels of
    close points do not print over each other. Geometry is estimated from the axis limits
    and the figure size (the axes take about 80% of it), no rendering needed."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    width_pt, height_pt = 0.8 * fig_inches[0] * 72, 0.8 * fig_inches[1] * 72
    to_pt = [((x - x0) / ((x1 - x0) or 1.0) * width_pt, (y - y0) / ((y1 - y0) or 1.0) * height_pt)
             for x, y in zip(xs, ys)]
    marker = 5.0
    taken = [(px - marker, py - marker, px + marker, py + marker) for px, py in to_pt]
    offsets = []
    for label, (px, py) in zip(labels, to_pt):
        w, h = 4.9 * len(str(label)), 9.0          # 8 pt DejaVu Sans, about 0.6 em a glyph
        places = [(6, 5), (6, -13), (-6 - w, 5), (-6 - w, -13), (8, -4), (-8 - w, -4),
                  (-w / 2, 8), (-w / 2, -17)]
        chosen = places[0]
        for dx, dy in places:
            box = (px + dx, py + dy, px + dx + w, py + dy + h)
            inside = box[0] >= 0 and box[2] <= width_pt and box[1] >= 0 and box[3] <= height_pt
            if inside and not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                                  for b in taken):
                chosen = (dx, dy)
                break
        dx, dy = chosen
        taken.append((px + dx, py + dy, px + dx + w, py + dy + h))
        offsets.append((dx, dy))
    return offsets


def _pad_limits(ax, xs, ys, frac: float = 0.12) -> None:
    for values, setter in ((xs, ax.set_xlim), (ys, ax.set_ylim)):
        v = np.asarray([x for x in values if np.isfinite(x)], float)
        if not len(v):
            continue
        lo, hi = float(v.min()), float(v.max())
        span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
        setter(lo - frac * span, hi + frac * span * 1.8)


def grouped_bars(table, styles: dict, path: Path, *, ylabel: str, title: str,
                 hline: float | None = None, hline_label: str | None = None, per_row: int = 5) -> Path:
    """``table``: DataFrame, index = categories (x groups), columns = pools (bars). At most
    ``per_row`` groups a panel, panels stacked with one value axis, so that a dozen pools over
    fifteen corruptions stay readable."""
    cats = [str(c) for c in table.index]
    pools = [str(c) for c in table.columns]
    n = max(len(pools), 1)
    width = 0.8 / n
    chunks = [list(range(i, min(i + per_row, len(cats)))) for i in range(0, max(len(cats), 1), per_row)]
    values = table.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    with plot_style():
        group = max(1.0, 0.12 * n + 0.3)            # inches per group of bars
        fig = new_figure(min(per_row, max(len(cats), 1)) * group + 2.6, 2.3 * len(chunks) + 0.5)
        axes = fig.subplots(len(chunks), 1, sharey=True, squeeze=False)[:, 0]
        for ax, chunk in zip(axes, chunks):
            x = np.arange(len(chunk))
            for i, p in enumerate(pools):
                ax.bar(x + (i - (n - 1) / 2) * width, values[chunk, i], width, label=p,
                       color=styles[p]["color"], edgecolor="black", linewidth=0.4)
            if hline is not None:
                ax.axhline(hline, color="black", linestyle=":", linewidth=1.0, label=hline_label)
            ax.set_xticks(x, [cats[c] for c in chunk])
            ax.set_xlim(-0.6, per_row - 0.4 if len(chunks) > 1 else len(chunk) - 0.4)
            ax.set_ylabel(ylabel)
            ax.grid(axis="x", visible=False)
        if len(finite) and hline is not None and finite.min() > 0.4 * hline:
            # ratios around the reference: start the axis near the data, not at 0
            low = min(finite.min(), hline)
            axes[0].set_ylim(bottom=max(0.0, 10.0 * np.floor((low - 0.05 * (finite.max() - low) - 1) / 10.0)))
        axes[0].set_title(title)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", frameon=False)
        return save(fig, path)


def ratio_heatmap(table, path: Path, *, title: str, colorbar_label: str) -> Path:
    """``table``: ratios (index = rows, columns = pools), shown on a log colour scale centred on
    1 (blue below, red above) with every value written in its cell."""
    values = table.to_numpy(dtype=float)
    finite = values[np.isfinite(values) & (values > 0)]
    span = float(np.abs(np.log10(finite)).max()) if len(finite) else 1.0
    span = max(span, np.log10(2.0))
    norm = LogNorm(vmin=10 ** -span, vmax=10 ** span)
    rows, cols = table.shape
    with plot_style():
        fig = new_figure(max(6.0, 0.62 * cols + 3.4), max(2.6, 0.34 * rows + 1.6))
        ax = fig.add_subplot()
        masked = np.ma.masked_invalid(np.where(values > 0, values, np.nan))
        image = ax.imshow(masked, cmap="RdBu_r", norm=norm, aspect="auto")
        for i in range(rows):
            for j in range(cols):
                v = values[i, j]
                if np.isfinite(v):
                    dark = abs(np.log10(v)) > 0.6 * span if v > 0 else False
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7.0,
                            color="white" if dark else "black")
        ax.set_xticks(range(cols), [str(c) for c in table.columns], rotation=40, ha="right",
                      rotation_mode="anchor")
        ax.set_yticks(range(rows), [str(r) for r in table.index])
        ax.grid(False)
        ax.set_title(title)
        fig.colorbar(image, ax=ax, label=colorbar_label, shrink=0.9)
        return save(fig, path)


def lines(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], styles: dict, path: Path,
          *, xlabel: str, ylabel: str, title: str, xticks: Sequence[float] | None = None,
          xticklabels: Sequence[str] | None = None, panels: Mapping[str, Mapping] | None = None,
          ) -> Path:
    """One line per pool. ``panels`` (optional) {panel title: {ylabel, series}} draws several
    side-by-side axes sharing x instead of the single ``series``."""
    groups = dict(panels) if panels else {title: {"ylabel": ylabel, "series": series}}
    with plot_style():
        fig = new_figure(4.6 * len(groups) + 1.6, 4.0)
        axes = fig.subplots(1, len(groups), squeeze=False)[0]
        for ax, (name, spec) in zip(axes, groups.items()):
            for p in sorted(spec["series"]):
                xs, ys = spec["series"][p]
                st = styles[p]
                ax.plot(xs, ys, color=st["color"], marker=st["marker"], markersize=5, linewidth=1.4,
                        label=p)
            if xticks is not None:
                ax.set_xticks(list(xticks), list(xticklabels) if xticklabels is not None else None)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(spec["ylabel"])
            ax.set_title(name)
        axes[-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return save(fig, path)


CURVE_PANELS = {"curve_train_loss": ("training loss (task)", "mean loss over the epoch"),
                "curve_test_error": ("test error", "top-1 error %"),
                "curve_lr": ("learning rate", "rate at the epoch's last step")}


def learning_curves(curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
                    styles: dict, path: Path, *, title: str = "") -> Path:
    """Per epoch, one line per pool in one panel per metric (three to a row): ``curves``
    {metric: {pool: (epochs, values)}}, the metrics of ``CURVE_PANELS`` first, then the auxiliary
    terms (``curve_<term>``, drawn only for the pools that have them); one legend of every pool."""
    order = [m for m in CURVE_PANELS if m in curves] + sorted(m for m in curves if m not in CURVE_PANELS)
    cols = min(3, len(order))
    rows = -(-len(order) // cols)
    with plot_style():
        fig = new_figure(4.2 * cols + 1.4, 3.3 * rows)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        handles = {}
        for ax, metric in zip(axes, order):
            name, ylabel = CURVE_PANELS.get(metric, (f"auxiliary {metric[len('curve_'):]}",
                                                     "mean over the epoch"))
            for pool in sorted(curves[metric]):
                xs, ys = curves[metric][pool]
                st = styles[pool]
                (handles[pool],) = ax.plot(xs, ys, color=st["color"], marker=st["marker"],
                                           markersize=4, linewidth=1.3, label=pool)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.set_title(name)
        for ax in axes[len(order):]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
        fig.legend([handles[p] for p in sorted(handles)], sorted(handles), loc="outside right upper",
                   frameon=False)
        return save(fig, path)


def image_grid(rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray, dict]]]], path: Path, *,
               title: str, caption: str | None = None, cell: float = 2.3) -> Path:
    """A grid of images: ``rows`` = [(row label, [(panel title, array, imshow kwargs), ...])]."""
    ncols = max(len(panels) for _, panels in rows)
    with plot_style():
        fig = new_figure(cell * ncols + 0.4, cell * len(rows) + 0.5 + (0.3 if caption else 0.0))
        axes = fig.subplots(len(rows), ncols, squeeze=False)
        for r, (label, panels) in enumerate(rows):
            for c in range(ncols):
                ax = axes[r][c]
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                for side in ax.spines.values():
                    side.set_visible(c < len(panels))
                if c >= len(panels):
                    ax.set_axis_off()
                    continue
                name, array, kwargs = panels[c]
                ax.imshow(array, **{"interpolation": "nearest", **kwargs})
                ax.set_title(name, fontsize=8)
                if c == 0:
                    ax.set_ylabel(label, fontsize=8)
        fig.suptitle(title, fontsize=10)
        if caption:
            fig.supxlabel(caption, fontsize=7, color="0.3")
        return save(fig, path)


def bands_grid(image: tuple[str, np.ndarray, dict],
               rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray, dict]]]], path: Path, *,
               title: str, caption: str | None = None, cell: float = 2.0) -> Path:
    """The input image on the left, spanning every row; one row of band images per variant."""
    ncols = max(len(panels) for _, panels in rows)
    nrows = len(rows)
    with plot_style():
        fig = new_figure(cell * (ncols + 1) + 0.6, cell * nrows + 0.5 + (0.35 if caption else 0.0))
        grid = fig.add_gridspec(nrows, ncols + 1)

        def show(ax, name, array, kwargs, ylabel=None):
            ax.imshow(array, **{"interpolation": "nearest", **kwargs})
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for side in ax.spines.values():
                side.set_visible(True)
            ax.set_title(name, fontsize=8)
            if ylabel:
                ax.set_ylabel(ylabel, fontsize=8)

        show(fig.add_subplot(grid[:, 0]), *image)
        for r, (label, panels) in enumerate(rows):
            for c, (name, array, kwargs) in enumerate(panels):
                show(fig.add_subplot(grid[r, c + 1]), name, array, kwargs, label if c == 0 else None)
        fig.suptitle(title, fontsize=10)
        if caption:
            fig.supxlabel(caption, fontsize=7, color="0.3")
        return save(fig, path)
