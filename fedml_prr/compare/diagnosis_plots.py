"""Figures of :mod:`.diagnosis`: PRR's per-round diagnosis and the paper's retrogress figure.

Drawn on matplotlib's Agg canvas (no pyplot), as :mod:`.plots`.  Values in percent.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .diagnosis import RunRecords, mean_curve, retrogress_curves
from .plots import DPI, PALETTE

STAGE_COLOURS = {1: "#d62728", 2: "#ff7f0e", 3: "#2ca02c"}
MODEL_LABELS = {"personal": "P_k", "deputy": "D_k", "model": "model"}
MODEL_STYLES = {"personal": "-", "deputy": "--", "model": "-"}


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def _grid(n: int):
    cols = min(n, 4)
    return (n + cols - 1) // cols, cols


def plot_diagnosis(run: RunRecords, rows: Sequence[Mapping[str, Any]], path) -> Path:
    """One panel per client: P_k's and D_k's validation score per round (D before and after the receive),
    the DET stage of each epoch as coloured ticks at the bottom, the mean CPA factor on a right axis."""
    clients = run.clients
    nrows, ncols = _grid(len(clients))
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), layout="constrained")
    epochs = max(run.epochs, 1)
    for i, client in enumerate(clients):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        mine = [r for r in rows if r["client"] == client]
        t = [r["round"] for r in mine]
        ax.plot(t, [100 * r["personal_valid_after"] for r in mine], "-o", ms=3, color=PALETTE[0], label="P_k")
        ax.plot(t, [100 * r["deputy_valid_before"] for r in mine], "--", color=PALETTE[1], label="D_k trained")
        ax.plot(t, [100 * r["deputy_valid_after"] if r["deputy_received"] else math.nan for r in mine], "v",
                ms=4, color=PALETTE[1], label="D_k received")
        for r in mine:
            for e, stage in enumerate(x for x in r["stages"].split("-") if x):
                ax.plot([r["round"] + (e + 0.5) / epochs - 0.5], [-4], "|", ms=6, color=STAGE_COLOURS[int(stage)])
        ax.set_ylim(-8, 100)
        ax.set_title(client, fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylabel(f"valid {run.score} (%)")
        gamma = [r["gamma_mean"] for r in mine]
        if any(not math.isnan(g) for g in gamma):
            twin = ax.twinx()
            twin.plot(t, gamma, ":", color="grey", label="gamma")
            twin.set_ylim(0.9, 2.1)
            twin.set_ylabel("mean gamma", color="grey")
        if i == 0:
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{run.label}: P_k and D_k around each receive; DET stage ticks: red recover, orange exchange, "
                 "green sublimate", fontsize=9)
    return _save(fig, Path(path))


def plot_retrogress_figure(runs: Sequence[RunRecords], path) -> Path:
    """The paper's retrogress figure: test metric of each run's recorded models after every local epoch and
    right after each receive (dotted lines), mean over clients on top, one panel per client below."""
    curves = [(run, retrogress_curves(run)) for run in runs]
    curves = [(run, c) for run, c in curves if c]
    if not curves:
        raise ValueError("no run recorded per-epoch evaluations: run with prr_eval_every_epoch: true")
    clients = sorted({client for _, c in curves for per in c.values() for client in per})
    nrows, ncols = _grid(len(clients))
    fig = Figure(figsize=(4.2 * ncols, 3.4 + 3.0 * nrows), layout="constrained")
    grid = fig.add_gridspec(nrows + 1, ncols, height_ratios=[1.3] + [1.0] * nrows)
    top = fig.add_subplot(grid[0, :])
    panels = [fig.add_subplot(grid[1 + i // ncols, i % ncols]) for i in range(len(clients))]
    metric = curves[0][0].metric
    for k, (run, run_curves) in enumerate(curves):
        colour = PALETTE[k % len(PALETTE)]
        for name, per_client in run_curves.items():
            label = f"{run.label} {MODEL_LABELS.get(name, name)}"
            style = MODEL_STYLES.get(name, "-")
            points = mean_curve(per_client)
            top.plot([x for x, _ in points], [100 * y for _, y in points], style, color=colour, lw=1.2, label=label)
            for ax, client in zip(panels, clients):
                if client in per_client:
                    ax.plot([x for x, _ in per_client[client]], [100 * y for _, y in per_client[client]], style,
                            color=colour, lw=1.0)
    rounds = max(r["round"] for run, _ in curves for r in run.records) + 1
    epochs = curves[0][0].epochs
    for ax in [top, *panels]:
        for t in range(1, rounds):
            ax.axvline(t * epochs, color="grey", lw=0.5, ls=":")
        ax.set_xlabel("local epoch")
    top.set_ylabel(f"mean test {metric} (%)")
    top.set_title("test metric after every local epoch; dotted: receives (the vertical step is the receive)", fontsize=9)
    top.legend(fontsize=8, loc="lower right")
    for ax, client in zip(panels, clients):
        ax.set_title(client, fontsize=9)
        ax.set_ylabel(f"test {metric} (%)")
    return _save(fig, Path(path))
