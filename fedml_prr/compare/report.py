"""A comparison's written report: ``table.md``, ``table.csv``, ``summary.txt`` and the figures."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Sequence, Tuple

from ..tables import Column, Table, percent
from ..training.tasks import METRIC_LABELS
from .statistics import (NO_VALUE, AlgorithmStats, PathLike, best_per_metric, client_names, collect, compared_metrics,
                         parse_algorithms, seed_list, task_of)


def _short_label(stats: Mapping[str, AlgorithmStats]) -> str:
    """The per-client column prefix of the selection metric (``F1``, ``Dice``)."""
    task = task_of(stats)
    return dict((metric, label) for label, metric in task.table_columns)[task.selection_metric]


def format_markdown(stats: Mapping[str, AlgorithmStats]) -> str:
    """``table.md``: one row per algorithm, percentages with one decimal, mean ± std over seeds."""
    clients, task = client_names(stats), task_of(stats)
    dataset = next(iter(stats.values())).dataset if stats else ""
    n_seeds = {len(s.seeds) for s in stats.values()}
    label, short = task.selection_label, _short_label(stats)
    compared = compared_metrics(task)
    table = Table([Column("Algorithm", left=True), Column("Seeds")] + [Column(METRIC_LABELS[m]) for m in compared]
                  + [Column(f"{short} {c}") for c in clients])
    for name, s in stats.items():
        cells = [percent(s.metrics[m].mean, s.metrics[m].std) for m in compared]
        cells += [percent(stat.mean, stat.std) for stat in (s.client_primary.get(c, NO_VALUE) for c in clients)]
        table.add(name, str(len(s.seeds)), *cells)
    lines = [
        f"# {' vs '.join(stats)} on {dataset}",
        "",
        f"Test metrics (%) at each run's selected round (best mean validation {label}), unweighted mean over "
        f"clients; mean ± sample std over seeds {seed_list(stats)}"
        + ("" if n_seeds != {1} else " (one seed: no std)") + ".",
        f"Retrogress: change of a client's test {label} when it receives the server's model, averaged over rounds "
        f"and clients (higher is better, 0 = none).  {short} <client>: that client's {label}.",
        "",
        table.markdown(),
    ]
    return "\n".join(lines) + "\n"


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else f"{100 * value:.3f}"


def format_csv(stats: Mapping[str, AlgorithmStats]) -> str:
    """``table.csv``: the table's values in percent (3 decimals), separate mean and std columns.

    ``n_seeds`` is the number of runs; an empty cell is an undefined value (a std over one
    seed, or a metric that is NaN in every run).
    """
    clients, task = client_names(stats), task_of(stats)
    columns = [(m, m) for m in compared_metrics(task)] + [(f"{task.selection_metric}_{c}", c) for c in clients]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["algorithm", "n_seeds", "seeds"] + [f"{col}_{kind}_pct" for col, _ in columns
                                                         for kind in ("mean", "std")])
    for name, s in stats.items():
        row = [name, len(s.seeds), " ".join(str(x) for x in s.seeds)]
        for col, key in columns:
            stat = s.metrics[key] if col == key else s.client_primary.get(key, NO_VALUE)
            row += [_csv_number(stat.mean), _csv_number(stat.std)]
        writer.writerow(row)
    return buffer.getvalue()


def format_best(stats: Mapping[str, AlgorithmStats]) -> str:
    """``summary.txt``: the best algorithm per metric and its margin over the runner-up, in points."""
    lines = [f"Best algorithm per metric: mean over seeds {seed_list(stats)}, test split at the selected round, "
             "unweighted over clients; retrogress: highest (least negative).  Margins in percentage points.", ""]
    width = max(len(METRIC_LABELS[m]) for m in compared_metrics(task_of(stats)))
    for best in best_per_metric(stats):
        line = f"{METRIC_LABELS[best.metric]:<{width}}  {best.algorithm} {100 * best.value:.1f}"
        if best.runner_up is None:
            line += "  (no other algorithm has a value)"
        else:
            spreads = [stats[a].metrics[best.metric].std for a in (best.algorithm, best.runner_up)]
            if best.margin_points == 0:
                line += f"  (tied with {best.runner_up})"
            else:
                line += f"  +{best.margin_points:.1f} over {best.runner_up} {100 * best.runner_up_value:.1f}"
                known = [s for s in spreads if not math.isnan(s)]
                if known and best.margin_points < 100 * max(known):
                    line += "  (within one seed std)"
        lines.append(line)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CompareReport:
    """The written comparison: statistics, the table's text and every output file."""

    out: Path
    stats: Dict[str, AlgorithmStats]
    table_markdown: str
    best_text: str
    files: Tuple[Path, ...]


def write_report(out: PathLike, algorithms: Sequence[str], seeds: Sequence[int]) -> CompareReport:
    """Read the finished matrix under ``out`` and write the tables, plots and ``summary.txt`` there."""
    from .plots import write_plots

    out = Path(out)
    stats = collect(out, parse_algorithms(algorithms), list(dict.fromkeys(int(s) for s in seeds)))
    markdown, best = format_markdown(stats), format_best(stats)
    files = [out / "table.md", out / "table.csv", out / "summary.txt"]
    for path, text in zip(files, (markdown, format_csv(stats), best)):
        path.write_text(text, encoding="utf-8")
    files += write_plots(stats, out)
    return CompareReport(out=out, stats=stats, table_markdown=markdown, best_text=best, files=tuple(files))
