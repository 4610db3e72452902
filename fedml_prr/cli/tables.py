"""What the command line prints: a run's per-client result table, and one-line errors."""

from __future__ import annotations

import sys
from typing import Any, Mapping

from ..tables import Column, Table, percent


def format_table(summary: Mapping[str, Any]) -> str:
    """Per-client test metrics of the selected round, with unweighted (and for classification
    sample-weighted) averages and each client's mean retrogress; the columns are the task's
    (:attr:`~fedml_prr.training.tasks.Task.table_columns`)."""
    from ..training.tasks import task_named  # here: the error path of the CLI must not import torch

    task = task_named(summary.get("task", "classification"))
    selected, retro = summary["selected"], summary["retrogress"]["clients"]
    table = Table([Column("client", 12, left=True), Column("n", 5)]
                  + [Column(label) for label, _ in task.table_columns] + [Column("retro")])

    def cells(metrics: Mapping[str, float], suffix: str = ""):
        return [percent(metrics[key + suffix]) for _, key in task.table_columns]

    for client, m in selected["clients"].items():
        table.add(client, str(m["test"]["n"]), *cells(m["test"]), percent(retro.get(client, float("nan"))))
    table.rule()
    mean, final = selected["mean"], summary["final"]["mean"]
    table.add("Average", "", *cells(mean), percent(summary["retrogress"]["mean"]))
    if task.weighted_row:
        table.add("Weighted", "", *cells(mean, "_weighted"), "")
    title = (f"{summary['algorithm']} on {summary['dataset']} - test metrics (%) at the selected round "
             f"{summary['selected_round']} (best mean valid {task.selection_label}), seed {summary['seed']}")
    last = (f"final round {summary['last_round']}: mean "
            + ", ".join(f"{label} {percent(final[key])}" for label, key in task.final_columns)
            + f"; wall time {summary['wall_time_s']:.0f} s")
    return "\n".join([title, table.text(), last])


def print_result(result) -> None:
    """A finished run's table and where its results are."""
    print(format_table(result.summary))
    print(f"results written to {result.results_dir}/ (metrics.jsonl, summary.json, checkpoints/)")


def fail(message: str, code: int = 1) -> int:
    """Print ``fedml-prr: <message>`` on stderr and return ``code`` (the exit status)."""
    print(f"fedml-prr: {message}", file=sys.stderr, flush=True)
    return code
