"""Compare algorithms over seeds: run the algorithm x seed matrix, then tabulate and plot it.

Layout of a comparison folder ``<out>``::

    <out>/runs/<algorithm>/seed<seed>/   one ordinary results folder per run (see results.py)
    <out>/table.md, <out>/table.csv      one row per algorithm: mean and std over seeds
    <out>/curve_macro_f1.png             per-round test macro-F1 (the paper's retrogress curve)
    <out>/clients_macro_f1.png           per-client test macro-F1 at the selected round
    (segmentation runs: curve_dice.png and clients_dice.png, Dice instead of macro-F1, plus
    overlays.png: a few test slices per site with the ground truth and the PRR and FedAvg masks)
    <out>/retrogress.png                 per-round and overall mean retrogress
    <out>/summary.txt                    the best algorithm per metric and its margin

Every statistic is computed in two steps, as in the paper's tables: first within a run (the
unweighted mean over clients of the test metrics at the run's selected round, and the run's
mean retrogress over rounds and clients, both as in ``summary.json``), then over seeds (mean
and sample standard deviation, ``n - 1`` in the denominator; undefined for a single seed).
NaN values (e.g. an AUC on a test split missing a class) are left out of the means.

The reading and aggregation functions (:func:`read_run`, :func:`collect`,
:func:`format_markdown`, :func:`format_csv`, :func:`best_per_metric`) touch no model and can be
called on any folder of finished runs; :func:`run_matrix` does the training.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .. import api
from ..algorithms import ALGORITHMS
from ..config import ConfigError, RunConfig
from .results import METRIC_NAMES

logger = logging.getLogger(__name__)

#: table columns over seeds: the four test metrics of the selected round, then the mean retrogress
COMPARED = METRIC_NAMES + ("retrogress",)
#: the same for segmentation runs, whose primary metric (selection, retrogress, curves) is Dice
SEGMENTATION_COMPARED = ("dice", "iou", "accuracy", "recall", "retrogress")
LABELS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced acc.", "macro_f1": "Macro-F1",
          "auc": "AUC", "retrogress": "Retrogress", "dice": "Dice", "iou": "IoU", "recall": "Recall"}
#: short column label of each primary metric's per-client columns
SHORT = {"macro_f1": "F1", "dice": "Dice"}


def compared_metrics(primary: str) -> Tuple[str, ...]:
    """Table columns of runs whose primary metric is ``primary`` (``macro_f1`` or ``dice``)."""
    return SEGMENTATION_COMPARED if primary == "dice" else COMPARED
#: the keys the comparison itself sets on every run, and the option that sets each
OWNED_KEYS = {"random_seed": "--seeds", "prr_results_dir": "--out", "federated_optimizer": "--algorithms"}

PathLike = Union[str, Path]


# ----------------------------------------------------------------------------- reading runs

@dataclass(frozen=True)
class RunRecord:
    """What the comparison needs from one finished run's folder.

    Attributes
    ----------
    metrics:
        ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``auc`` (segmentation: ``dice``,
        ``iou``, ``accuracy``, ``recall``): unweighted client means of the test metrics at the
        selected round; ``retrogress``: the run's mean retrogress.
    client_primary:
        Client name -> test primary metric (macro-F1; segmentation: Dice) at the selected round
        (clients in the run's order).
    curve_primary, curve_retrogress:
        Round -> unweighted client mean of that round's test primary metric / retrogress.
    primary_metric:
        ``macro_f1`` or ``dice`` (the run's ``selection_metric``).
    """

    algorithm: str
    seed: int
    dataset: str
    selected_round: int
    metrics: Dict[str, float]
    client_primary: Dict[str, float]
    curve_primary: Dict[int, float]
    curve_retrogress: Dict[int, float]
    primary_metric: str = "macro_f1"

    @property
    def client_macro_f1(self) -> Dict[str, float]:  # the classification name of client_primary
        return self.client_primary

    @property
    def curve_macro_f1(self) -> Dict[int, float]:
        return self.curve_primary


def _nan_mean(values: Sequence[float]) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def read_run(folder: PathLike) -> RunRecord:
    """Read a finished run (``summary.json`` and ``metrics.jsonl``) from its results folder."""
    folder = Path(folder)
    summary_path, metrics_path = folder / "summary.json", folder / "metrics.jsonl"
    for path in (summary_path, metrics_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {folder} holds no finished run")
    summary = json.loads(summary_path.read_text())
    by_round: Dict[int, List[Mapping]] = {}
    for line in metrics_path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_round.setdefault(int(record["round"]), []).append(record)
    selected_mean = summary["selected"]["mean"]
    primary = str(summary.get("selection_metric", "macro_f1"))
    metrics = {name: float(selected_mean[name]) for name in compared_metrics(primary) if name != "retrogress"}
    metrics["retrogress"] = float(summary["retrogress"]["mean"])
    return RunRecord(
        algorithm=str(summary["algorithm"]), seed=int(summary["seed"]), dataset=str(summary.get("dataset", "")),
        selected_round=int(summary["selected_round"]), metrics=metrics,
        client_primary={c: float(m["test"][primary]) for c, m in summary["selected"]["clients"].items()},
        curve_primary={r: _nan_mean([x["test"][primary] for x in recs]) for r, recs in sorted(by_round.items())},
        curve_retrogress={r: _nan_mean([x["retrogress"] for x in recs]) for r, recs in sorted(by_round.items())},
        primary_metric=primary,
    )


# ----------------------------------------------------------------------------- statistics over seeds

@dataclass(frozen=True)
class SeedStat:
    """Mean and sample standard deviation over the seeds whose value is not NaN.

    ``std`` is NaN when fewer than two seeds have a value; ``mean`` is NaN when none has.
    """

    mean: float
    std: float
    n: int


def seed_stat(values: Sequence[float]) -> SeedStat:
    """:class:`SeedStat` of ``values`` (NaN left out; sample std with ``n - 1``)."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    n = len(kept)
    if n == 0:
        return SeedStat(float("nan"), float("nan"), 0)
    mean = sum(kept) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1)) if n > 1 else float("nan")
    return SeedStat(mean, std, n)


@dataclass(frozen=True)
class AlgorithmStats:
    """One algorithm's statistics over seeds (values are fractions, as in the run folders)."""

    algorithm: str
    seeds: Tuple[int, ...]
    dataset: str
    metrics: Dict[str, SeedStat]        # keys: COMPARED
    client_primary: Dict[str, SeedStat]
    rounds: Tuple[int, ...]
    curve_primary: Tuple[SeedStat, ...]  # aligned with rounds
    curve_retrogress: Tuple[SeedStat, ...]
    selected_rounds: Tuple[int, ...]     # one per seed
    primary_metric: str = "macro_f1"     # client_primary / curve_primary hold it (segmentation: dice)

    @property
    def compared(self) -> Tuple[str, ...]:
        """The table's metric columns (keys of ``metrics``)."""
        return compared_metrics(self.primary_metric)

    @property
    def client_macro_f1(self) -> Dict[str, SeedStat]:  # the classification name of client_primary
        return self.client_primary

    @property
    def curve_macro_f1(self) -> Tuple[SeedStat, ...]:
        return self.curve_primary


def summarise_algorithm(runs: Sequence[RunRecord]) -> AlgorithmStats:
    """Statistics over the seeds of one algorithm's runs (all of the same algorithm)."""
    if not runs:
        raise ValueError("no run to summarise")
    names = {r.algorithm for r in runs}
    if len(names) != 1:
        raise ValueError(f"runs of several algorithms given together: {sorted(names)}")
    clients: List[str] = []
    for run in runs:
        clients += [c for c in run.client_primary if c not in clients]
    rounds = sorted({r for run in runs for r in run.curve_primary})
    nan = float("nan")
    primary = runs[0].primary_metric
    if any(r.primary_metric != primary for r in runs):
        raise ValueError(f"runs of {runs[0].algorithm} mix classification and segmentation")
    return AlgorithmStats(
        algorithm=runs[0].algorithm, seeds=tuple(r.seed for r in runs), dataset=runs[0].dataset,
        metrics={m: seed_stat([r.metrics[m] for r in runs]) for m in compared_metrics(primary)},
        client_primary={c: seed_stat([r.client_primary.get(c, nan) for r in runs]) for c in clients},
        rounds=tuple(rounds),
        curve_primary=tuple(seed_stat([r.curve_primary.get(t, nan) for r in runs]) for t in rounds),
        curve_retrogress=tuple(seed_stat([r.curve_retrogress.get(t, nan) for r in runs]) for t in rounds),
        selected_rounds=tuple(r.selected_round for r in runs),
        primary_metric=primary,
    )


def run_folder(out: PathLike, algorithm: str, seed: int) -> Path:
    """Results folder of one run of the matrix."""
    return Path(out) / "runs" / algorithm / f"seed{seed}"


def collect(out: PathLike, algorithms: Sequence[str], seeds: Sequence[int]) -> Dict[str, AlgorithmStats]:
    """Read every run of the matrix under ``out`` into per-algorithm statistics (in the given order)."""
    return {a: summarise_algorithm([read_run(run_folder(out, a, s)) for s in seeds]) for a in algorithms}


def client_names(stats: Mapping[str, AlgorithmStats]) -> List[str]:
    """Every client, in the order of first appearance."""
    names: List[str] = []
    for s in stats.values():
        names += [c for c in s.client_primary if c not in names]
    return names


# ----------------------------------------------------------------------------- table and text

def _pct(stat: SeedStat) -> str:
    if math.isnan(stat.mean):
        return "-"
    if math.isnan(stat.std):
        return f"{100 * stat.mean:.1f}"
    return f"{100 * stat.mean:.1f} ± {100 * stat.std:.1f}"


def primary_metric_of(stats: Mapping[str, AlgorithmStats]) -> str:
    """The primary metric of a comparison (all its runs share one task)."""
    return next(iter(stats.values())).primary_metric if stats else "macro_f1"


def _seed_list(stats: Mapping[str, AlgorithmStats]) -> str:
    seeds = sorted({s for st in stats.values() for s in st.seeds})
    return ", ".join(str(s) for s in seeds)


def format_markdown(stats: Mapping[str, AlgorithmStats]) -> str:
    """``table.md``: one row per algorithm, percentages with one decimal, mean ± std over seeds."""
    clients = client_names(stats)
    dataset = next(iter(stats.values())).dataset if stats else ""
    n_seeds = {len(s.seeds) for s in stats.values()}
    primary = primary_metric_of(stats)
    label = "macro-F1" if primary == "macro_f1" else LABELS[primary]
    lines = [
        f"# {' vs '.join(stats)} on {dataset}",
        "",
        f"Test metrics (%) at each run's selected round (best mean validation {label}), unweighted mean over "
        f"clients; mean ± sample std over seeds {_seed_list(stats)}"
        + ("" if n_seeds != {1} else " (one seed: no std)") + ".",
        f"Retrogress: change of a client's test {label} when it receives the server's model, averaged over rounds "
        f"and clients (higher is better, 0 = none).  {SHORT[primary]} <client>: that client's {label}.",
        "",
    ]
    compared = compared_metrics(primary)
    header = ["Algorithm", "Seeds"] + [LABELS[m] for m in compared] + [f"{SHORT[primary]} {c}" for c in clients]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
    for name, s in stats.items():
        nan = SeedStat(float("nan"), float("nan"), 0)
        cells = [name, str(len(s.seeds))] + [_pct(s.metrics[m]) for m in compared]
        cells += [_pct(s.client_primary.get(c, nan)) for c in clients]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else f"{100 * value:.3f}"


def format_csv(stats: Mapping[str, AlgorithmStats]) -> str:
    """``table.csv``: the table's values in percent (3 decimals), separate mean and std columns.

    ``n_seeds`` is the number of runs; an empty cell is an undefined value (a std over one
    seed, or a metric that is NaN in every run).
    """
    clients, primary = client_names(stats), primary_metric_of(stats)
    columns = [(m, m) for m in compared_metrics(primary)] + [(f"{primary}_{c}", c) for c in clients]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["algorithm", "n_seeds", "seeds"] + [f"{col}_{kind}_pct" for col, _ in columns
                                                         for kind in ("mean", "std")])
    nan = SeedStat(float("nan"), float("nan"), 0)
    for name, s in stats.items():
        row = [name, len(s.seeds), " ".join(str(x) for x in s.seeds)]
        for col, key in columns:
            stat = s.metrics[key] if col == key else s.client_primary.get(key, nan)
            row += [_csv_number(stat.mean), _csv_number(stat.std)]
        writer.writerow(row)
    return buffer.getvalue()


@dataclass(frozen=True)
class Best:
    """The best algorithm on one metric (highest mean over seeds) and its lead over the runner-up."""

    metric: str
    algorithm: str
    value: float                        # fraction
    runner_up: Optional[str] = None
    runner_up_value: float = float("nan")

    @property
    def margin_points(self) -> float:
        """Lead over the runner-up in percentage points (NaN without a runner-up)."""
        return 100 * (self.value - self.runner_up_value) if self.runner_up is not None else float("nan")


def best_per_metric(stats: Mapping[str, AlgorithmStats]) -> List[Best]:
    """For each of :data:`COMPARED` (segmentation: :data:`SEGMENTATION_COMPARED`), the algorithm with
    the highest mean (retrogress: the least negative); ties keep the algorithm listed first;
    algorithms whose mean is NaN are left out."""
    out = []
    for metric in compared_metrics(primary_metric_of(stats)):
        ranked = [(name, s.metrics[metric].mean) for name, s in stats.items() if not math.isnan(s.metrics[metric].mean)]
        ranked.sort(key=lambda item: -item[1])  # stable: ties keep the given order
        if not ranked:
            continue
        (best, value), rest = ranked[0], ranked[1:]
        out.append(Best(metric, best, value, *(rest[0] if rest else (None, float("nan")))))
    return out


def format_best(stats: Mapping[str, AlgorithmStats]) -> str:
    """``summary.txt``: the best algorithm per metric and its margin over the runner-up, in points."""
    lines = [f"Best algorithm per metric: mean over seeds {_seed_list(stats)}, test split at the selected round, "
             "unweighted over clients; retrogress: highest (least negative).  Margins in percentage points.", ""]
    width = max(len(LABELS[m]) for m in COMPARED)
    for best in best_per_metric(stats):
        line = f"{LABELS[best.metric]:<{width}}  {best.algorithm} {100 * best.value:.1f}"
        if best.runner_up is None:
            line += "  (no other algorithm has a value)"
        else:
            spreads = [stats[a].metrics[best.metric].std for a in (best.algorithm, best.runner_up)]
            if best.margin_points == 0:
                line += f"  (tied with {best.runner_up})"
            else:
                line += (f"  +{best.margin_points:.1f} over {best.runner_up} {100 * best.runner_up_value:.1f}")
                known = [s for s in spreads if not math.isnan(s)]
                if known and best.margin_points < 100 * max(known):
                    line += "  (within one seed std)"
        lines.append(line)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- running the matrix

@dataclass(frozen=True)
class PlannedRun:
    """One cell of the matrix: its validated config and what to do with its folder.

    ``action`` is ``"skip"`` (finished: ``summary.json`` exists), ``"resume"`` (interrupted
    after a completed round: ``resume.pt`` exists) or ``"start"``.
    """

    algorithm: str
    seed: int
    config: RunConfig
    folder: Path
    action: str


def parse_algorithms(names: Sequence[str]) -> List[str]:
    """Canonical names of ``names`` (duplicates dropped, order kept).

    Raises ``KeyError`` naming the known algorithms for an unknown name.
    """
    out: List[str] = []
    for name in names:
        canonical = ALGORITHMS.canonical_name(name)
        if canonical not in out:
            out.append(canonical)
    if not out:
        raise ValueError(f"no algorithm given; known algorithms: {', '.join(ALGORITHMS.names())}")
    return out


def default_out(config_path: PathLike, overrides: Optional[Mapping[str, object]] = None) -> Path:
    """``<prr_results_dir of the config>/compare``."""
    return Path(api.make_config(config_path, overrides=overrides).options.results_dir) / "compare"


def _config_changes(folder: Path, config: RunConfig) -> List[str]:
    """Keys whose value differs between ``folder``'s stored config and ``config`` ([] when none is stored)."""
    path = folder / "config.resolved.json"
    if not path.is_file():
        return []
    saved = json.loads(path.read_text())
    current = json.loads(json.dumps(config.to_dict(), default=str))
    return sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))


def plan_matrix(config_path: PathLike, algorithms: Sequence[str], seeds: Sequence[int], *, out: PathLike,
                overrides: Optional[Mapping[str, object]] = None) -> List[PlannedRun]:
    """Validate every run of the matrix and decide, from its folder, whether to skip, resume or start it.

    Nothing is trained here, so an unknown algorithm, an invalid key, or a finished or
    interrupted run made under another configuration is reported before any run starts.
    """
    overrides = dict(overrides or {})
    owned = [f"{key} (use {flag})" for key, flag in OWNED_KEYS.items() if key in overrides]
    if owned:
        raise ConfigError(f"the comparison sets these keys itself: {', '.join(owned)}")
    algorithms = parse_algorithms(algorithms)
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ValueError("no seed given")
    plan, stale = [], []
    for algorithm in algorithms:
        for seed in seeds:
            folder = run_folder(out, algorithm, seed)
            config = api.make_config(config_path, algorithm=algorithm,
                                     overrides={**overrides, "random_seed": seed, "prr_results_dir": str(folder)})
            if (folder / "summary.json").is_file():
                action = "skip"
            elif (folder / "resume.pt").is_file():
                action = "resume"
            else:
                action = "start"
            changes = _config_changes(folder, config) if action != "start" else []
            if changes:
                stale.append(f"{folder} ({', '.join(changes)})")
            plan.append(PlannedRun(algorithm, seed, config, folder, action))
    if stale:
        raise ValueError("these runs were made under another configuration: " + "; ".join(stale)
                         + ". Use another --out, or delete those run folders to run them again")
    return plan


def run_matrix(plan: Sequence[PlannedRun], *, progress: bool = False) -> None:
    """Run (or resume) every planned run that is not finished, in order.

    With ``progress``, a tqdm bar over runs plus each run's own bar over protocol steps.
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(plan), unit="run", desc="compare", position=0)
    try:
        for item in plan:
            label = f"{item.algorithm} seed {item.seed}"
            if bar is not None:
                bar.set_description(label)
            if item.action == "skip":
                logger.info("%s: finished earlier in %s, skipped", label, item.folder)
            else:
                logger.info("%s: %s in %s", label, "resuming" if item.action == "resume" else "starting", item.folder)
                if item.action == "resume":
                    api.run(item.config, resume=True, progress=progress)
                else:
                    api.run(item.config, overwrite=True, progress=progress)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()


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


def compare(config_path: PathLike, algorithms: Sequence[str], seeds: Sequence[int], *,
            overrides: Optional[Mapping[str, object]] = None, out: Optional[PathLike] = None,
            progress: bool = False) -> CompareReport:
    """Run the algorithm x seed matrix of ``config_path`` (resuming a partial one) and write the report.

    Parameters
    ----------
    overrides:
        Config keys applied to every run (``--set``); ``random_seed``, ``prr_results_dir`` and
        ``federated_optimizer`` are set by the comparison and may not be given.
    out:
        Comparison folder; None = ``<prr_results_dir of the config>/compare``.
    """
    out = Path(out) if out is not None else default_out(config_path, overrides)
    plan = plan_matrix(config_path, algorithms, seeds, out=out, overrides=overrides)
    out.mkdir(parents=True, exist_ok=True)
    run_matrix(plan, progress=progress)
    report = write_report(out, [p.algorithm for p in plan], [p.seed for p in plan])
    if primary_metric_of(report.stats) == "dice":  # segmentation: draw the predicted masks too
        from .overlays import write_overlays

        overlay = write_overlays(plan, out / "overlays.png")
        if overlay is not None:
            report = dataclasses.replace(report, files=report.files + (overlay,))
    return report
