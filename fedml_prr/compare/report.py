"""A comparison's written report: ``table.md``, ``table.csv``, ``summary.txt``, the paired differences
(``paired.md/.csv/.json``), the convergence check (``convergence.csv/.json``) and the figures."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..tables import Column, Table, percent
from ..training.tasks import METRIC_LABELS
from .convergence import ConvergenceCheck, check_runs, convergence_csv, convergence_json, format_convergence
from .paired import ALPHA, PairedDifference, by_method, choose_reference, paired_differences, paired_metrics
from .statistics import (NO_VALUE, AlgorithmStats, PathLike, best_per_metric, client_metrics, client_names, collect,
                         compared_metrics, parse_algorithms, seed_list, task_of)


def _short_label(stats: Mapping[str, AlgorithmStats], metric: Optional[str] = None) -> str:
    """The per-client column prefix of ``metric`` (default: the selection metric): ``F1``, ``bacc``, ``Dice``."""
    task = task_of(stats)
    return dict((m, label) for label, m in task.table_columns)[metric or task.selection_metric]


def data_title(stats: Mapping[str, AlgorithmStats]) -> str:
    """``PRR vs FedAvg on derm_synthetic (scale 0.25)``: the algorithms and the data in words."""
    data = next(iter(stats.values())).data or next(iter(stats.values())).dataset if stats else ""
    return f"{' vs '.join(stats)} on {data}"


def format_markdown(stats: Mapping[str, AlgorithmStats]) -> str:
    """``table.md``: one row per algorithm, percentages with one decimal, mean ± std over seeds."""
    clients, task = client_names(stats), task_of(stats)
    n_seeds = {len(s.seeds) for s in stats.values()}
    label, short = task.selection_label, _short_label(stats)
    compared, per_client = compared_metrics(task), client_metrics(task)
    table = Table([Column("Algorithm", left=True), Column("Seeds")] + [Column(METRIC_LABELS[m]) for m in compared]
                  + [Column(f"{_short_label(stats, m)} {c}") for m in per_client for c in clients])
    for name, s in stats.items():
        cells = [percent(s.metrics[m].mean, s.metrics[m].std) for m in compared]
        cells += [percent(stat.mean, stat.std) for m in per_client for stat in (s.clients[m].get(c, NO_VALUE)
                                                                               for c in clients)]
        table.add(name, str(len(s.seeds)), *cells)
    described = {_short_label(stats, m): label if m == task.selection_metric else "balanced accuracy (FLamby's metric)"
                 for m in per_client}
    lines = [
        f"# {data_title(stats)}",
        "",
        f"Test metrics (%) at each run's selected round (best mean validation {label}), unweighted mean over "
        f"clients; mean ± sample std over seeds {seed_list(stats)}"
        + ("" if n_seeds != {1} else " (one seed: no std)") + ".",
        f"Retrogress: change of a client's test {label} when it receives the server's model, averaged over rounds "
        f"and clients (higher is better, 0 = none).  "
        + ", ".join(f"{k} <client>: that client's {v}" for k, v in described.items()) + ".",
        "",
        table.markdown(),
    ]
    return "\n".join(lines) + "\n"


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else f"{100 * value:.3f}"


def format_csv(stats: Mapping[str, AlgorithmStats]) -> str:
    """``table.csv``: the table's values in percent (3 decimals), separate mean and std columns.

    ``n_seeds`` is the number of runs; an empty cell is an undefined value (a std over one
    seed, or a metric that is NaN in every run).  Per-client columns: ``<metric>_<client>_mean_pct``
    for the selection metric and, for classification, ``balanced_accuracy``.
    """
    clients, task = client_names(stats), task_of(stats)
    columns = [(m, m, None) for m in compared_metrics(task)] + [(f"{m}_{c}", c, m) for m in client_metrics(task)
                                                                 for c in clients]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["algorithm", "n_seeds", "seeds"] + [f"{col}_{kind}_pct" for col, _, _ in columns
                                                         for kind in ("mean", "std")])
    for name, s in stats.items():
        row = [name, len(s.seeds), " ".join(str(x) for x in s.seeds)]
        for _, key, metric in columns:
            stat = s.metrics[key] if metric is None else s.clients[metric].get(key, NO_VALUE)
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


def _p_text(p: float) -> str:
    return "-" if math.isnan(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def _ci_text(d: PairedDifference) -> str:
    return "-" if math.isnan(d.low) else f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}]"


def format_paired_markdown(stats: Mapping[str, AlgorithmStats], differences: Sequence[PairedDifference],
                           reference: str) -> str:
    """The paired table: per method, mean difference to ``reference`` (points), its 95 % CI, the paired
    t-test's p and whether the difference is resolved, for each of :func:`~.paired.paired_metrics`."""
    metrics = paired_metrics(stats)
    table = Table([Column("Method", left=True), Column("Paired seeds")]
                  + [Column(f"{METRIC_LABELS[m]} {title}") for m in metrics
                     for title in ("Δ", "95 % CI", "p", "resolved")])
    notes = []
    for method, row in by_method(differences).items():
        cells: List[str] = []
        for metric in metrics:
            d = row[metric]
            cells += [percent(d.mean, signed=True), _ci_text(d), _p_text(d.p_value),
                      "-" if math.isnan(d.p_value) else ("yes" if d.resolved else "no")]
            if d.note:
                notes.append(f"{method}, {METRIC_LABELS[metric]}: {d.note}.")
        table.add(method, str(max(row[m].n for m in metrics)), *cells)
    lines = [f"## Paired differences to {reference}", "",
             f"Method minus {reference} on the test metrics at each run's selected round (unweighted client mean), "
             "seed by seed over the seeds both have, in points: mean difference, 95 % confidence interval "
             "(Student t, n - 1 degrees of freedom) and p of the two-sided paired t-test (scipy.stats.ttest_rel). "
             f"Resolved: the interval excludes 0 and p < {ALPHA}.", ""]
    lines.append(table.markdown() if differences else f"(no other method than {reference})")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def format_paired_csv(differences: Sequence[PairedDifference]) -> str:
    """``paired.csv``: one row per method and metric, differences in points (3 decimals), empty = undefined."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "reference", "metric", "n_pairs", "seeds", "mean_diff_points", "ci_low_points",
                     "ci_high_points", "p_value", "resolved", "note"])
    for d in differences:
        writer.writerow([d.method, d.reference, d.metric, d.n, " ".join(str(s) for s in d.seeds),
                         _csv_number(d.mean), _csv_number(d.low), _csv_number(d.high),
                         "" if math.isnan(d.p_value) else f"{d.p_value:.6g}", str(d.resolved).lower(), d.note])
    return buffer.getvalue()


def format_paired_json(differences: Sequence[PairedDifference], reference: str) -> str:
    """``paired.json``: the method and one object per method and metric (fractions; null = undefined)."""
    def number(value: float) -> Optional[float]:
        return None if math.isnan(value) else value

    document = {"reference": reference, "confidence": 1 - ALPHA, "alpha": ALPHA,
                "interval": "Student t, n - 1 degrees of freedom, on the per-seed differences",
                "test": "two-sided paired t-test (scipy.stats.ttest_rel)",
                "differences": [{"method": d.method, "metric": d.metric, "seeds": list(d.seeds), "n": d.n,
                                 "mean": number(d.mean), "ci_low": number(d.low), "ci_high": number(d.high),
                                 "p_value": number(d.p_value), "resolved": d.resolved, "note": d.note}
                                for d in differences]}
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


@dataclass(frozen=True)
class CompareReport:
    """The written comparison: statistics, the tables' text and every output file."""

    out: Path
    stats: Dict[str, AlgorithmStats]
    table_markdown: str
    best_text: str
    files: Tuple[Path, ...]
    reference: str = ""
    paired: Tuple[PairedDifference, ...] = ()
    paired_markdown: str = ""
    convergence: Tuple[ConvergenceCheck, ...] = ()
    convergence_text: str = ""


def write_report(out: PathLike, algorithms: Sequence[str], seeds: Sequence[int], *,
                 reference: Optional[str] = None) -> CompareReport:
    """Read the finished matrix under ``out`` and write the tables, plots and ``summary.txt`` there.

    ``reference``: the algorithm of the paired differences (default: PRR when compared, else the
    first algorithm; :func:`~.paired.choose_reference`).
    """
    from .plots import plot_paired, write_plots

    out = Path(out)
    stats = collect(out, parse_algorithms(algorithms), list(dict.fromkeys(int(s) for s in seeds)))
    reference = choose_reference(stats, reference)
    differences = paired_differences(stats, reference)
    checks = check_runs(stats)
    label = task_of(stats).selection_label
    paired_md = format_paired_markdown(stats, differences, reference)
    markdown, convergence = format_markdown(stats) + "\n" + paired_md, format_convergence(checks, label)
    best = format_best(stats) + "\nConvergence check:\n" + convergence
    texts = {"table.md": markdown, "table.csv": format_csv(stats), "summary.txt": best, "paired.md": paired_md,
             "paired.csv": format_paired_csv(differences), "paired.json": format_paired_json(differences, reference),
             "convergence.csv": convergence_csv(checks), "convergence.json": convergence_json(checks, label)}
    files = []
    for name, text in texts.items():
        (out / name).write_text(text, encoding="utf-8")
        files.append(out / name)
    files += write_plots(stats, out)
    if differences:
        files.append(plot_paired(stats, differences, reference, out / "paired.png"))
    return CompareReport(out=out, stats=stats, table_markdown=markdown, best_text=best, files=tuple(files),
                         reference=reference, paired=tuple(differences), paired_markdown=paired_md,
                         convergence=tuple(checks), convergence_text=convergence)
