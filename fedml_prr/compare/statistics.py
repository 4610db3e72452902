"""Statistics of a comparison: read finished runs, summarise each algorithm over seeds.

Every statistic is computed in two steps, as in the paper's tables: first within a run (the
unweighted mean over clients of the test metrics at the run's selected round, and the run's
mean retrogress over rounds and clients, both as in ``summary.json``), then over seeds (mean
and sample standard deviation, ``n - 1`` in the denominator; undefined for a single seed).
NaN values (e.g. an AUC on a test split missing a class) are left out of the means.

Nothing here touches a model: these functions work on any folder of finished runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..algorithms import ALGORITHMS
from ..training.tasks import TASKS, Task, task_named

PathLike = Union[str, Path]


def compared_metrics(task: Task) -> Tuple[str, ...]:
    """A comparison's metric columns for runs of ``task``: its compared metrics, then the retrogress."""
    return task.compared_metrics + ("retrogress",)


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
    client_primary:
        Client name -> test selection metric (macro-F1; segmentation: Dice) at the selected round
        (clients in the run's order).
    curve_primary, curve_retrogress:
        Round -> unweighted client mean of that round's test selection metric / retrogress.
    task:
        The run's task name.
    """

    algorithm: str
    seed: int
    dataset: str
    selected_round: int
    metrics: Dict[str, float]
    client_primary: Dict[str, float]
    curve_primary: Dict[int, float]
    curve_retrogress: Dict[int, float]
    task: str = "classification"

    @property
    def primary_metric(self) -> str:
        return task_named(self.task).selection_metric


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
    summary = json.loads(summary_path.read_text())
    by_round: Dict[int, List[Mapping]] = {}
    for line in metrics_path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_round.setdefault(int(record["round"]), []).append(record)
    task = _task_of(summary)
    primary = task.selection_metric
    selected_mean = summary["selected"]["mean"]
    metrics = {name: float(selected_mean[name]) for name in task.compared_metrics}
    metrics["retrogress"] = float(summary["retrogress"]["mean"])
    return RunRecord(
        algorithm=str(summary["algorithm"]), seed=int(summary["seed"]), dataset=str(summary.get("dataset", "")),
        selected_round=int(summary["selected_round"]), metrics=metrics,
        client_primary={c: float(m["test"][primary]) for c, m in summary["selected"]["clients"].items()},
        curve_primary={r: _nan_mean([x["test"][primary] for x in recs]) for r, recs in sorted(by_round.items())},
        curve_retrogress={r: _nan_mean([x["retrogress"] for x in recs]) for r, recs in sorted(by_round.items())},
        task=task.name,
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
    client_primary: Dict[str, SeedStat]
    rounds: Tuple[int, ...]
    curve_primary: Tuple[SeedStat, ...]  # aligned with rounds
    curve_retrogress: Tuple[SeedStat, ...]
    selected_rounds: Tuple[int, ...]     # one per seed
    task: str = "classification"

    @property
    def primary_metric(self) -> str:
        """The task's selection metric (what client_primary / curve_primary hold)."""
        return task_named(self.task).selection_metric

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
    return AlgorithmStats(
        algorithm=runs[0].algorithm, seeds=tuple(r.seed for r in runs), dataset=runs[0].dataset,
        metrics={m: seed_stat([r.metrics[m] for r in runs]) for m in compared_metrics(task_named(runs[0].task))},
        client_primary={c: seed_stat([r.client_primary.get(c, nan) for r in runs]) for c in clients},
        rounds=tuple(rounds),
        curve_primary=tuple(seed_stat([r.curve_primary.get(t, nan) for r in runs]) for t in rounds),
        curve_retrogress=tuple(seed_stat([r.curve_retrogress.get(t, nan) for r in runs]) for t in rounds),
        selected_rounds=tuple(r.selected_round for r in runs),
        task=runs[0].task,
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
