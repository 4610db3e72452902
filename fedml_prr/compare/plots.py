"""Figures of a comparison (:mod:`fedml_prr.compare`), drawn with matplotlib's Agg canvas.

Each figure is built on its own ``Figure`` (no pyplot, no global backend switch), so plotting
works headless and leaves the caller's matplotlib state alone.  Every algorithm has its own colour
and its own marker (:func:`algorithm_styles`), the same in every figure and every comparison for a
registered algorithm.  Values are plotted in percent; mean ± std bands are clipped to the metric's
range ([0, 100]; retrogress [-100, 100]).
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..config import DECLARED
from ..training.tasks import METRIC_LABELS
from .paired import PairedDifference, by_method, paired_metrics
from .statistics import NO_VALUE, AlgorithmStats, SeedStat, client_names, task_of

DPI = 120
#: 20 colours told apart on screen and in print: matplotlib's tab10, then 10 of Kelly's (1965)
#: colours of maximum contrast that tab10 lacks
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#000000", "#f3c300", "#a1caf1", "#008856", "#e68fac", "#882d17",
           "#8db600", "#604e97", "#2b3d26", "#f99379")
#: as many markers as colours, so the pair stays unique past 20 algorithms
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "p", "h", "d", "8", "H", "1", "2", "3", "4", "+")
#: line styles cycle too, so curves that coincide (e.g. two at zero retrogress) stay visible
LINESTYLES = ("-", "--", "-.", ":")
MAX_WIDTH_IN = 16.0
#: the range of the plotted values (percent): metrics, and the retrogress (a difference of two metrics)
METRIC_RANGE, RETROGRESS_RANGE = (0.0, 100.0), (-100.0, 100.0)


class Style(NamedTuple):
    """How one algorithm is drawn."""

    colour: str
    marker: str
    linestyle: str


def fixed_order() -> List[str]:
    """The built-in algorithms in the order of their declaration (:mod:`fedml_prr.config.algorithms`:
    PRR, then the baselines), PRR's ablations last: each one's style slot."""
    declared = DECLARED.registration_order()
    return [n for n in declared if not n.startswith("PRR-")] + [n for n in declared if n.startswith("PRR-")]


def _slots(algorithms: Sequence[str]) -> Dict[str, int]:
    """A distinct slot per algorithm: a built-in algorithm's place in :func:`fixed_order`, then each
    other name at its CRC-32's slot or the next free one; never shared."""
    registered = fixed_order()
    taken: Dict[str, int] = {}
    for name in algorithms:
        if name in registered and name not in taken:
            taken[name] = registered.index(name)
    used = set(taken.values())
    for name in algorithms:
        if name not in taken:
            slot = zlib.crc32(name.encode("utf-8")) % len(PALETTE)
            while slot in used:
                slot += 1
            taken[name] = slot
            used.add(slot)
    return taken


def _style(slot: int) -> Style:
    """Slots under 20 each get their own colour and marker; past the palette the marker shifts, so
    every (colour, marker) pair stays distinct."""
    colour = PALETTE[slot % len(PALETTE)]
    marker = MARKERS[(slot + slot // len(PALETTE)) % len(MARKERS)]
    return Style(colour, marker, LINESTYLES[slot % len(LINESTYLES)])


def algorithm_styles(algorithms: Sequence[str]) -> Dict[str, Style]:
    """A colour, marker and line style per algorithm, distinct within ``algorithms`` and fixed by the
    name for registered algorithms (:func:`_slots`)."""
    return {name: _style(slot) for name, slot in _slots(algorithms).items()}


def algorithm_colours(algorithms: Sequence[str]) -> Dict[str, str]:
    """The colour of each algorithm (:func:`algorithm_styles`)."""
    return {name: style.colour for name, style in algorithm_styles(algorithms).items()}


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


def clipped_band(curve: Sequence[SeedStat], value_range: Sequence[float]) -> List[List[float]]:
    """``[low, high]`` of a mean ± std band in points, clipped to ``value_range``."""
    lo, hi = value_range
    return [[min(max(_points(c) - _err(c), lo), hi) for c in curve],
            [min(max(_points(c) + _err(c), lo), hi) for c in curve]]


def _draw_curves(ax, stats: Mapping[str, AlgorithmStats], field: str, value_range: Sequence[float]) -> None:
    styles = algorithm_styles(list(stats))
    for name, s in stats.items():
        curve: Sequence[SeedStat] = getattr(s, field)
        rounds, style = list(s.rounds), styles[name]
        low, high = clipped_band(curve, value_range)
        ax.plot(rounds, [_points(c) for c in curve], color=style.colour, marker=style.marker,
                linestyle=style.linestyle, markersize=4, linewidth=1.8, label=name)
        ax.fill_between(rounds, low, high, color=style.colour, alpha=0.18, linewidth=0)
    rounds = sorted({r for s in stats.values() for r in s.rounds})
    if rounds and len(rounds) <= 25:
        ax.set_xticks(rounds)
    ax.set_xlabel("round")
    ax.grid(True, alpha=0.3)


def plot_macro_f1_curve(stats: Mapping[str, AlgorithmStats], path: Path) -> Path:
    """Per-round client-averaged test macro-F1 (segmentation: Dice) per algorithm, with a ± std band over seeds."""
    fig, (ax,) = _new_figure(8.5, 4.5)
    _draw_curves(ax, stats, "curve_primary", METRIC_RANGE)
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
        lo, hi = METRIC_RANGE  # error bars clipped to the metric's range, as the curves' bands
        yerr = [[min(_err(v), h - lo) for v, h in zip(values, heights)],
                [min(_err(v), hi - h) for v, h in zip(values, heights)]]
        bars = ax.bar(xs, heights, width * 0.92, yerr=yerr, capsize=3,
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
    _draw_curves(ax_curve, stats, "curve_retrogress", RETROGRESS_RANGE)
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


def plot_paired(stats: Mapping[str, AlgorithmStats], differences: Sequence[PairedDifference], reference: str,
                path: Path) -> Path:
    """Forest plot of the paired differences to ``reference``: per method (one row) and metric (one
    panel), the mean difference in points with its 95 % CI as a horizontal error bar, a line at 0;
    resolved differences are drawn filled and marked ``*``, the others hollow; a method with fewer
    than two paired seeds gets a note instead of a bar."""
    rows = by_method(differences)
    metrics = paired_metrics(stats)
    styles = algorithm_styles(list(stats))
    methods = list(rows)
    fig, axes = _new_figure(min(MAX_WIDTH_IN, 1.5 + 4.5 * len(metrics)), 1.4 + 0.45 * max(len(methods), 1),
                            ncols=len(metrics))
    for ax, metric in zip(axes, metrics):
        ax.axvline(0.0, color="#555555", linewidth=1.0, linestyle="--", zorder=1)
        drawn = False
        for y, method in enumerate(reversed(methods)):
            d, style = rows[method][metric], styles[method]
            if math.isnan(d.low):
                ax.annotate(f"{d.n} paired seed(s): no interval", (0, y), xytext=(6, 0), textcoords="offset points",
                            va="center", fontsize=8, color="#555555")
                continue
            drawn = True
            mean, low, high = 100 * d.mean, 100 * d.low, 100 * d.high
            ax.errorbar([mean], [y], xerr=[[mean - low], [high - mean]], color=style.colour, marker=style.marker,
                        markersize=7, capsize=4, linewidth=1.6, markerfacecolor=style.colour if d.resolved else "white")
            if d.resolved:
                ax.annotate("*", (high, y), xytext=(4, -2), textcoords="offset points", va="center", fontsize=12)
        if not drawn:
            ax.set_xlim(-1.0, 1.0)
        ax.set_yticks(range(len(methods)), list(reversed(methods)))
        ax.set_ylim(-0.7, len(methods) - 0.3)
        ax.set_xlabel(f"{METRIC_LABELS[metric]}: method - {reference} (points)")
        ax.grid(True, axis="x", alpha=0.3)
    n = sorted({d.n for d in differences})
    fig.suptitle(f"Paired difference to {reference}: mean and 95 % CI over {'/'.join(map(str, n))} paired seeds "
                 "(Student t); filled, *: resolved (CI excludes 0, paired t-test p < 0.05)", fontsize=10)
    fig.savefig(path)
    return path


def write_plots(stats: Mapping[str, AlgorithmStats], out: Path) -> List[Path]:
    """Write the three comparison figures into ``out``; return their paths (``*_macro_f1.png``, or
    ``*_dice.png`` for segmentation)."""
    out, primary = Path(out), task_of(stats).selection_metric
    return [plot_macro_f1_curve(stats, out / f"curve_{primary}.png"),
            plot_client_macro_f1(stats, out / f"clients_{primary}.png"),
            plot_retrogress(stats, out / "retrogress.png")]
