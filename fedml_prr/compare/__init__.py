"""Compare algorithms over seeds: run the algorithm x seed matrix, then tabulate and plot it.

Layout of a comparison folder ``<out>``::

    <out>/runs/<algorithm>/seed<seed>/   one ordinary results folder per run
    <out>/table.md, <out>/table.csv      one row per algorithm: mean and std over seeds (table.md also
                                         holds the paired table)
    <out>/paired.md, .csv, .json         paired differences to the reference algorithm (mean, 95 % CI,
                                         paired t-test, resolved or not)
    <out>/paired.png                     the paired differences as a forest plot
    <out>/convergence.csv, .json         per run: has its validation curve flattened?
    <out>/curve_<metric>.png             per-round client-mean test metric (macro-F1 or Dice)
    <out>/clients_<metric>.png           per-client test metric at the selected round
    <out>/retrogress.png                 per-round and overall mean retrogress
    <out>/overlays.png                   segmentation: test slices with ground truth, PRR and FedAvg masks
    <out>/summary.txt                    the best algorithm per metric and its margin, the convergence check

Modules: :mod:`.matrix` (planning and running the matrix), :mod:`.statistics` (reading runs,
statistics over seeds), :mod:`.paired` (paired differences to a reference), :mod:`.convergence`
(has each run flattened?), :mod:`.report` (tables and text), :mod:`.plots` and :mod:`.overlays`
(figures).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from .. import api
from ..config import ConfigError
from .matrix import OWNED_KEYS, PlannedRun, plan_matrix, run_matrix
from .convergence import ConvergenceCheck, check_curve, check_runs
from .paired import PairedDifference, choose_reference, paired_difference, paired_differences
from .report import CompareReport, format_best, format_csv, format_markdown, write_report
from .statistics import (AlgorithmStats, Best, RunRecord, SeedStat, best_per_metric, collect, describe_data,
                         parse_algorithms, read_run, run_folder, seed_stat, summarise_algorithm)

__all__ = ["AlgorithmStats", "Best", "CompareReport", "ConvergenceCheck", "OWNED_KEYS", "PairedDifference",
           "PlannedRun", "RunRecord", "SeedStat", "best_per_metric", "check_curve", "check_runs", "choose_reference",
           "collect", "compare", "describe_data", "format_best", "format_csv", "format_markdown", "paired_difference",
           "paired_differences", "parse_algorithms", "plan_matrix", "read_run", "run_folder", "run_matrix",
           "seed_stat", "summarise_algorithm", "write_report"]


def compare(config: api.ConfigSource, algorithms: Sequence[str], seeds: Sequence[int], *,
            overrides: Optional[Mapping[str, object]] = None, paper_scale: bool = False,
            out: Optional[Union[str, Path]] = None, progress: bool = False,
            reference: Optional[str] = None) -> CompareReport:
    """Run the algorithm x seed matrix of ``config`` (resuming a partial one) and write the report.

    Parameters
    ----------
    config:
        A FedML YAML path or its parsed mapping (read once for the whole matrix).
    overrides:
        Config keys applied to every run (``--set``); ``random_seed``, ``prr_results_dir`` and
        ``federated_optimizer`` are set by the comparison and may not be given.
    paper_scale:
        Every run at the paper's setup (``--paper-scale``).
    out:
        Comparison folder; None = ``<prr_results_dir of the config>/compare``.
    reference:
        The algorithm every other one is compared with seed by seed (paired differences); None =
        PRR when compared, else the first algorithm.  A name not among ``algorithms`` is a
        ``ConfigError`` before any run.
    """
    document = api.read_yaml(config) if isinstance(config, (str, Path)) else dict(config or {})
    if out is None:
        out = Path(api.make_config(document, overrides=overrides, paper_scale=paper_scale).options.results_dir) / "compare"
    out = Path(out)
    plan = plan_matrix(document, algorithms, seeds, out=out, overrides=overrides, paper_scale=paper_scale)
    if reference is not None and parse_algorithms([reference])[0] not in {p.algorithm for p in plan}:
        compared = ", ".join(dict.fromkeys(p.algorithm for p in plan))
        raise ConfigError(f"--reference {reference} is not one of the compared algorithms ({compared})")
    out.mkdir(parents=True, exist_ok=True)
    run_matrix(plan, progress=progress)
    report = write_report(out, [p.algorithm for p in plan], [p.seed for p in plan],
                          reference=None if reference is None else parse_algorithms([reference])[0])
    if report.stats and next(iter(report.stats.values())).task == "segmentation":  # draw the predicted masks too
        from .overlays import write_overlays

        overlay = write_overlays(plan, out / "overlays.png")
        if overlay is not None:
            report = dataclasses.replace(report, files=report.files + (overlay,))
    return report
