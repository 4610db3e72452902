"""Figures of a comparison (:mod:`fedml_prr.compare`), drawn with matplotlib's Agg canvas.

Each figure is built on its own ``Figure`` (no pyplot, no global backend switch), so plotting
works headless and leaves the caller's matplotlib state alone.  One colour per algorithm, in
the order given, in every figure.  Values are plotted in percent.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .statistics import NO_VALUE, AlgorithmStats, SeedStat, client_names, task_of

DPI = 120
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
#: line styles and markers cycle too, so curves that coincide (e.g. two at zero retrogress) stay visible
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MAX_WIDTH_IN = 16.0


def algorithm_colours(algorithms: Sequence[str]) -> Dict[str, str]:
    """A distinct colour per algorithm, in the given order (cycling after ten)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(algorithms)}


def _line_style(index: int) -> Dict[str, str]:
    return {"linestyle": LINESTYLES[index % len(LINESTYLES)], "marker": MARKERS[index % len(MARKERS)]}


def _legend(fig, handles, labels) -> None:
    """One legend outside the axes, on the right, so it never hides data."""
    fig.legend(handles, labels, loc="outside right upper", frameon=False)


def _points(stat: SeedStat) -> float:
    return 100 * stat.mean


def _err(stat: SeedStat) -> float:
    return 0.0 if math.isnan(stat.std) else 100 * stat.std


def _seeds_note(stats: Mapping[str, AlgorithmStats]) -> str:
    counts = sorted({len(s.seeds) for s in stats.values()})
    n = "/".join(str(c) for c in counts)
    return f"mean ± std over {n} seeds" if counts != [1] else "one seed"


def _metric_label(stats: Mapping[str, AlgorithmStats]) -> str:
    """How the primary metric is written in figures: ``macro-F1`` or ``Dice``."""
    return task_of(stats).selection_label


def _new_figure(width: float, height: float, ncols: int = 1):
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _draw_curves(ax, stats: Mapping[str, AlgorithmStats], colours: Mapping[str, str], field: str) -> None:
    for index, (name, s) in enumerate(stats.items()):
        curve: Sequence[SeedStat] = getattr(s, field)
        rounds = list(s.rounds)
        mean = [_points(c) for c in curve]
        low = [_points(c) - _err(c) for c in curve]
        high = [_points(c) + _err(c) for c in curve]
        ax.plot(rounds, mean, color=colours[name], markersize=4, linewidth=1.8, label=name, **_line_style(index))
        ax.fill_between(rounds, low, high, color=colours[name], alpha=0.18, linewidth=0)
    rounds = sorted({r for s in stats.values() for r in s.rounds})
    if rounds and len(rounds) <= 25:
        ax.set_xticks(rounds)
    ax.set_xlabel("round")
    ax.grid(True, alpha=0.3)


def plot_macro_f1_curve(stats: Mapping[str, AlgorithmStats], path: Path) -> Path:
    """Per-round client-averaged test macro-F1 (segmentation: Dice) per algorithm, with a ± std band over seeds."""
    fig, (ax,) = _new_figure(8.5, 4.5)
    colours = algorithm_colours(list(stats))
    _draw_curves(ax, stats, colours, "curve_primary")
    label = _metric_label(stats)
    ax.set_ylabel(f"test {label} (%), mean over clients")
    ax.set_title(f"Test {label} per round ({_seeds_note(stats)})")
    _legend(fig, *ax.get_legend_handles_labels())
    fig.savefig(path)
    return path


def plot_client_macro_f1(stats: Mapping[str, AlgorithmStats], path: Path) -> Path:
    """Grouped bars: each client's test macro-F1 (Dice) at the selected round, plus the client average."""
    clients, primary, label = client_names(stats), task_of(stats).selection_metric, _metric_label(stats)
    groups = clients + ["Average"]
    colours = algorithm_colours(list(stats))
    n_alg = max(len(stats), 1)
    width = 0.8 / n_alg
    fig, (ax,) = _new_figure(min(MAX_WIDTH_IN, max(7.5, 2.0 + 0.45 * n_alg * len(groups))), 4.5)
    nan = NO_VALUE
    label_bars = n_alg * len(groups) <= 30
    for i, (name, s) in enumerate(stats.items()):
        values = [s.client_primary.get(c, nan) for c in clients] + [s.metrics[primary]]
        xs = [g + (i - (n_alg - 1) / 2) * width for g in range(len(groups))]
        heights = [0.0 if math.isnan(v.mean) else _points(v) for v in values]
        bars = ax.bar(xs, heights, width * 0.92, yerr=[_err(v) for v in values], capsize=3,
                      color=colours[name], label=name, error_kw={"elinewidth": 1, "ecolor": "#333333"})
        if label_bars:
            ax.bar_label(bars, labels=["n/a" if math.isnan(v.mean) else f"{_points(v):.0f}" for v in values],
                         padding=2, fontsize=7, label_type="edge")
    ax.axvline(len(clients) - 0.5, color="#999999", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_xlabel("client")
    ax.set_ylabel(f"test {label} (%) at the selected round")
    top = max([_points(v) + _err(v) for s in stats.values()
               for v in list(s.client_primary.values()) + [s.metrics[primary]] if not math.isnan(v.mean)] or [1.0])
    ax.set_ylim(0, min(100.0, top * 1.18) if top * 1.18 > 5 else 5)
    ax.set_title(f"Per-client test {label} ({_seeds_note(stats)})")
    ax.grid(True, axis="y", alpha=0.3)
    _legend(fig, *ax.get_legend_handles_labels())
    fig.savefig(path)
    return path


def plot_retrogress(stats: Mapping[str, AlgorithmStats], path: Path) -> Path:
    """Left: per-round client-averaged retrogress (± std band); right: each algorithm's overall mean."""
    fig, (ax_curve, ax_bar) = _new_figure(min(MAX_WIDTH_IN, 11.5 + 0.3 * len(stats)), 4.5, ncols=2)
    fig.get_layout_engine().set(w_pad=0.15)
    colours = algorithm_colours(list(stats))
    ax_curve.axhline(0.0, color="#777777", linewidth=0.9, linestyle="--", zorder=1)
    _draw_curves(ax_curve, stats, colours, "curve_retrogress")
    ax_curve.set_ylabel(f"retrogress (points of test {_metric_label(stats)})")
    ax_curve.set_title("Retrogress per round (mean over clients)")
    _legend(fig, *ax_curve.get_legend_handles_labels())

    names = list(stats)
    overall = [stats[n].metrics["retrogress"] for n in names]
    bars = ax_bar.bar(range(len(names)), [0.0 if math.isnan(v.mean) else _points(v) for v in overall], 0.6,
                      yerr=[_err(v) for v in overall], capsize=4, color=[colours[n] for n in names],
                      error_kw={"elinewidth": 1, "ecolor": "#333333"})
    ax_bar.bar_label(bars, labels=["n/a" if math.isnan(v.mean) else f"{_points(v):+.1f}" for v in overall],
                     padding=3, fontsize=9)
    ax_bar.axhline(0.0, color="#777777", linewidth=0.9, linestyle="--", zorder=1)
    ax_bar.set_xticks(range(len(names)), names)
    ax_bar.set_xlabel("algorithm")
    ax_bar.set_ylabel("mean retrogress (points)")
    ax_bar.set_title("Mean over rounds and clients")
    ends = [_points(v) + sign * _err(v) for v in overall if not math.isnan(v.mean) for sign in (-1, 1)] or [0.0]
    span = max(max(ends) - min(ends), 1.0)
    ax_bar.set_ylim(min(min(ends), 0.0) - 0.15 * span, max(max(ends), 0.0) + 0.15 * span)  # room for the labels
    ax_bar.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"Retrogress: change of test {_metric_label(stats)} when a client receives the server's model "
                 f"({_seeds_note(stats)}; higher is better)", fontsize=11)
    fig.savefig(path)
    return path


def write_plots(stats: Mapping[str, AlgorithmStats], out: Path) -> List[Path]:
    """Write the three comparison figures into ``out``; return their paths (``*_macro_f1.png``, or
    ``*_dice.png`` for segmentation)."""
    out, primary = Path(out), task_of(stats).selection_metric
    return [plot_macro_f1_curve(stats, out / f"curve_{primary}.png"),
            plot_client_macro_f1(stats, out / f"clients_{primary}.png"),
            plot_retrogress(stats, out / "retrogress.png")]
