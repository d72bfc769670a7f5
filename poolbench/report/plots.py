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

import numpy as np

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
    import matplotlib as mpl

    with mpl.rc_context():
        mpl.rcdefaults()
        mpl.rcParams.update(STYLE)
        yield


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG without the varying metadata; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=DPI, metadata=PNG_METADATA)
    return path


def pool_styles(pools: Iterable[str]) -> dict[str, dict]:
    """{pool: {"color", "marker"}} in sorted pool order (tab10, then tab20 beyond ten pools)."""
    import matplotlib as mpl

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
            ax.annotate(p, (x, y), xytext=(6, 5), textcoords="offset points", fontsize=8)
        front = pareto_front(xs, ys, x_better, y_better)
        if len(front) >= 1:
            fx = [xs[i] for i in front]
            fy = [ys[i] for i in front]
            ax.plot(fx, fy, linestyle="--", color="0.35", linewidth=1.2, zorder=2,
                    label="Pareto front")
        _pad_limits(ax, xs, ys)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        better = ("right" if x_better == "max" else "left") + ", " + ("up" if y_better == "max" else "down")
        ax.text(0.99, 0.01, f"better: {better}" + (f"\n{note}" if note else ""),
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="0.35")
        ax.legend(loc="best", frameon=False)
        return save(fig, path)


def _pad_limits(ax, xs, ys, frac: float = 0.12) -> None:
    for values, setter in ((xs, ax.set_xlim), (ys, ax.set_ylim)):
        v = np.asarray([x for x in values if np.isfinite(x)], float)
        if not len(v):
            continue
        lo, hi = float(v.min()), float(v.max())
        span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
        setter(lo - frac * span, hi + frac * span * 1.8)


def grouped_bars(table, styles: dict, path: Path, *, ylabel: str, title: str,
                 hline: float | None = None, hline_label: str | None = None, log: bool = False) -> Path:
    """``table``: DataFrame, index = categories (x groups), columns = pools (bars); ``log``: a
    logarithmic value axis (ratios spanning orders of magnitude)."""
    cats = [str(c) for c in table.index]
    pools = [str(c) for c in table.columns]
    n = max(len(pools), 1)
    width = 0.8 / n
    x = np.arange(len(cats))
    with plot_style():
        fig = new_figure(max(6.4, 0.45 * len(cats) * max(1.0, n / 3) + 2.0), 4.2)
        ax = fig.add_subplot()
        for i, p in enumerate(pools):
            vals = table[table.columns[i]].to_numpy(dtype=float)
            ax.bar(x + (i - (n - 1) / 2) * width, vals, width, label=p, color=styles[p]["color"],
                   edgecolor="black", linewidth=0.4)
        if hline is not None:
            ax.axhline(hline, color="black", linestyle=":", linewidth=1.0, label=hline_label)
        values = table.to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        if log:
            ax.set_yscale("log")
        elif len(finite) and hline is not None and finite.min() > 0.4 * hline:
            # ratios around the reference: start the axis near the data, not at 0
            low = min(finite.min(), hline)
            ax.set_ylim(bottom=max(0.0, 10.0 * np.floor((low - 0.05 * (finite.max() - low) - 1) / 10.0)))
        ax.set_xticks(x, cats, rotation=40, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.6, len(cats) - 0.4)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
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
