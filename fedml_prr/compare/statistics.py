"""Statistics of a comparison: read finished runs, summarise each algorithm over seeds.

Every statistic is computed in two steps, as in the paper's tables: first within a run (the
unweighted mean over clients of the test metrics at the run's selected round, and the run's
mean retrogress over rounds and clients, both as in ``summary.json``), then over seeds (mean
and sample standard deviation, ``n - 1`` in the denominator; undefined for a single seed).
NaN values (e.g. an AUC on a test split missing a class) are left out of the means.
Paired differences to a reference algorithm: :mod:`.paired`; the convergence check: :mod:`.convergence`.

Nothing here touches a model: these functions work on any folder of finished runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..algorithms import ALGORITHMS
from ..training.results import read_records, read_summary
from ..training.tasks import TASKS, Task, task_named

PathLike = Union[str, Path]


def compared_metrics(task: Task) -> Tuple[str, ...]:
    """A comparison's metric columns for runs of ``task``: its compared metrics, then the retrogress."""
    return task.compared_metrics + ("retrogress",)


def client_metrics(task: Task) -> Tuple[str, ...]:
    """The per-client columns of a comparison: the selection metric (macro-F1; Dice) and, where the
    task has it, the balanced accuracy (FLamby's metric)."""
    return (task.selection_metric,) + tuple(m for m in ("balanced_accuracy",) if m in task.metric_names)


#: dataset options that do not change which images the clients hold (where they are read from, how fast)
NOT_DEFINING_OPTIONS = ("workers", "cache", "cache_dir", "extensions", "min_train_images")


def _option_text(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "/".join(str(v) for v in value)
    return str(value)


def describe_data(dataset: str, options: Mapping[str, object]) -> str:
    """The data of a run in words, from its dataset name and ``prr_dataset_options`` (defaults of a
    registered dataset filled in): ``derm_synthetic (scale 0.25, dirichlet alpha 0.3, 6 clients)``.

    Options left at None and those that do not define the federation (:data:`NOT_DEFINING_OPTIONS`)
    are left out; a ``root`` folder is named by its last component.
    """
    from ..data.datasets import DATASETS, dataset_options

    merged = {**(dataset_options(dataset) if dataset in DATASETS else {}), **dict(options)}
    partition = {k: merged.pop(k, None) for k in ("partition", "alpha", "partition_seed")}
    clients = merged.pop("clients", None)
    parts = []
    for key, value in merged.items():
        if value is not None and key not in NOT_DEFINING_OPTIONS:
            parts.append(f"root {Path(str(value)).name or value}" if key == "root" else f"{key} {_option_text(value)}")
    if partition["partition"]:  # a label partition re-splits the data into `clients` clients
        seed = partition["partition_seed"]
        parts.append(f"{partition['partition']} alpha {partition['alpha']}"
                     + (f" partition seed {seed}" if seed is not None else "")
                     + (f", {clients} clients" if clients is not None else ""))
    elif clients is not None:  # a selection of the dataset's clients
        parts.append(f"clients {_option_text(clients)}")
    return f"{dataset} ({', '.join(parts)})" if parts else dataset


def _data_label(folder: Path, dataset: str) -> str:
    """:func:`describe_data` of a run folder's ``config.resolved.json`` (just the name without one)."""
    path = folder / "config.resolved.json"
    if not path.is_file():
        return dataset
    options = json.loads(path.read_text()).get("options", {}).get("dataset_options", {}) or {}
    return describe_data(dataset, options)


def _task_of(summary: Mapping) -> Task:
    """The task a run's summary names (older summaries only name their selection metric)."""
    if "task" in summary:
        return task_named(summary["task"])
    metric = summary.get("selection_metric", "macro_f1")
    return next(t for t in TASKS.values() if t.selection_metric == metric)


@dataclass(frozen=True)
class RunRecord:
    """What the comparison needs from one finished run's folder.

    Attributes
    ----------
    metrics:
        The task's compared metrics: unweighted client means of the test metrics at the selected
        round; ``retrogress``: the run's mean retrogress.
    clients:
        Metric (:func:`client_metrics`) -> client name -> its test value at the selected round
        (clients in the run's order).
    curve_primary, curve_retrogress:
        Round -> unweighted client mean of that round's test selection metric / retrogress.
    curve_valid:
        Round -> unweighted client mean of that round's *validation* selection metric (what
        model selection and the convergence check look at).
    task:
        The run's task name.
    data:
        The data in words (:func:`describe_data`).
    """

    algorithm: str
    seed: int
    dataset: str
    selected_round: int
    metrics: Dict[str, float]
    clients: Dict[str, Dict[str, float]]
    curve_primary: Dict[int, float]
    curve_retrogress: Dict[int, float]
    curve_valid: Dict[int, float]
    task: str = "classification"
    data: str = ""

    @property
    def primary_metric(self) -> str:
        return task_named(self.task).selection_metric

    @property
    def client_primary(self) -> Dict[str, float]:
        """Client name -> test selection metric at the selected round."""
        return self.clients[self.primary_metric]


def _nan_mean(values: Sequence[Optional[float]]) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def read_run(folder: PathLike) -> RunRecord:
    """Read a finished run (``summary.json`` and ``metrics.jsonl``) from its results folder."""
    folder = Path(folder)
    summary_path, metrics_path = folder / "summary.json", folder / "metrics.jsonl"
    for path in (summary_path, metrics_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {folder} holds no finished run")
    summary = read_summary(summary_path)
    by_round: Dict[int, List[Mapping]] = {}
    for record in read_records(metrics_path):
        by_round.setdefault(int(record["round"]), []).append(record)
    task = _task_of(summary)
    primary = task.selection_metric
    selected_mean = summary["selected"]["mean"]
    metrics = {name: float(selected_mean[name]) for name in task.compared_metrics}
    metrics["retrogress"] = float(summary["retrogress"]["mean"])
    return RunRecord(
        algorithm=str(summary["algorithm"]), seed=int(summary["seed"]), dataset=str(summary.get("dataset", "")),
        selected_round=int(summary["selected_round"]), metrics=metrics,
        clients={metric: {c: float(m["test"].get(metric, math.nan)) for c, m in summary["selected"]["clients"].items()}
                 for metric in client_metrics(task)},
        curve_primary={r: _nan_mean([x["test"][primary] for x in recs]) for r, recs in sorted(by_round.items())},
        curve_retrogress={r: _nan_mean([x["retrogress"] for x in recs]) for r, recs in sorted(by_round.items())},
        curve_valid={r: _nan_mean([x["valid"][primary] for x in recs]) for r, recs in sorted(by_round.items())},
        task=task.name, data=_data_label(folder, str(summary.get("dataset", ""))),
    )


@dataclass(frozen=True)
class SeedStat:
    """Mean and sample standard deviation over the seeds whose value is not NaN.

    ``std`` is NaN when fewer than two seeds have a value; ``mean`` is NaN when none has.
    """

    mean: float
    std: float
    n: int


NO_VALUE = SeedStat(float("nan"), float("nan"), 0)


def seed_stat(values: Sequence[Optional[float]]) -> SeedStat:
    """:class:`SeedStat` of ``values`` (NaN left out; sample std with ``n - 1``)."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    n = len(kept)
    if n == 0:
        return NO_VALUE
    mean = sum(kept) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1)) if n > 1 else float("nan")
    return SeedStat(mean, std, n)


@dataclass(frozen=True)
class AlgorithmStats:
    """One algorithm's statistics over seeds (values are fractions, as in the run folders)."""

    algorithm: str
    seeds: Tuple[int, ...]
    dataset: str
    metrics: Dict[str, SeedStat]        # keys: compared_metrics(task)
    clients: Dict[str, Dict[str, SeedStat]]  # metric (client_metrics(task)) -> client -> stat
    rounds: Tuple[int, ...]
    curve_primary: Tuple[SeedStat, ...]  # aligned with rounds
    curve_retrogress: Tuple[SeedStat, ...]
    selected_rounds: Tuple[int, ...]     # one per seed
    task: str = "classification"
    data: str = ""                       # the data in words (describe_data)
    runs: Tuple[RunRecord, ...] = ()     # one per seed, in the order of seeds

    @property
    def primary_metric(self) -> str:
        """The task's selection metric (what client_primary / curve_primary hold)."""
        return task_named(self.task).selection_metric

    @property
    def client_primary(self) -> Dict[str, SeedStat]:
        """Client -> statistics of its test selection metric at the selected round."""
        return self.clients[self.primary_metric]

    @property
    def compared(self) -> Tuple[str, ...]:
        """The table's metric columns (keys of ``metrics``)."""
        return compared_metrics(task_named(self.task))


def summarise_algorithm(runs: Sequence[RunRecord]) -> AlgorithmStats:
    """Statistics over the seeds of one algorithm's runs (all of the same algorithm)."""
    if not runs:
        raise ValueError("no run to summarise")
    names = {r.algorithm for r in runs}
    if len(names) != 1:
        raise ValueError(f"runs of several algorithms given together: {sorted(names)}")
    if len({r.task for r in runs}) != 1:
        raise ValueError(f"runs of {runs[0].algorithm} mix classification and segmentation")
    clients: List[str] = []
    for run in runs:
        clients += [c for c in run.client_primary if c not in clients]
    rounds = sorted({r for run in runs for r in run.curve_primary})
    nan = float("nan")
    task = task_named(runs[0].task)
    return AlgorithmStats(
        algorithm=runs[0].algorithm, seeds=tuple(r.seed for r in runs), dataset=runs[0].dataset,
        metrics={m: seed_stat([r.metrics[m] for r in runs]) for m in compared_metrics(task)},
        clients={m: {c: seed_stat([r.clients[m].get(c, nan) for r in runs]) for c in clients}
                 for m in client_metrics(task)},
        rounds=tuple(rounds),
        curve_primary=tuple(seed_stat([r.curve_primary.get(t, nan) for r in runs]) for t in rounds),
        curve_retrogress=tuple(seed_stat([r.curve_retrogress.get(t, nan) for r in runs]) for t in rounds),
        selected_rounds=tuple(r.selected_round for r in runs),
        task=task.name, data=runs[0].data, runs=tuple(runs),
    )


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


def task_of(stats: Mapping[str, AlgorithmStats]) -> Task:
    """The task of a comparison (all its runs share one)."""
    return task_named(next(iter(stats.values())).task if stats else "classification")


def seed_list(stats: Mapping[str, AlgorithmStats]) -> str:
    """``"0, 1, 2"``: every seed of the comparison."""
    return ", ".join(str(s) for s in sorted({s for st in stats.values() for s in st.seeds}))


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
    """For each compared metric of the task, the algorithm with the highest mean (retrogress: the
    least negative); ties keep the algorithm listed first; algorithms whose mean is NaN are left out."""
    out = []
    for metric in compared_metrics(task_of(stats)):
        ranked = [(name, s.metrics[metric].mean) for name, s in stats.items() if not math.isnan(s.metrics[metric].mean)]
        ranked.sort(key=lambda item: -item[1])  # stable: ties keep the given order
        if not ranked:
            continue
        (best, value), rest = ranked[0], ranked[1:]
        out.append(Best(metric, best, value, *(rest[0] if rest else (None, float("nan")))))
    return out
