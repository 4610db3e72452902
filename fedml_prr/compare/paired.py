"""Paired differences to a reference algorithm over seeds (issue 14: statistics that resolve).

Runs of different algorithms with the same seed share the seed's data split, initial weights and
batch order, so a method is compared with the reference seed by seed.  For each method ``m`` and
metric, over the ``n`` seeds where both ``m`` and the reference have a value::

    d_i   = value(m, seed i) - value(reference, seed i)
    mean  = sum(d_i) / n,   s = sample std of d_i (n - 1 in the denominator)
    95 % CI = mean -+ t_{0.975, n-1} * s / sqrt(n)          (Student t, n - 1 degrees of freedom)
    p     = two-sided paired t-test (scipy.stats.ttest_rel(m, reference))

A difference is *resolved* when its CI excludes 0 and ``p < ALPHA`` (with the interval and the test
at the same level the two agree; both are required so a rounding edge cannot mark one alone).
With fewer than :data:`MIN_PAIRS` paired seeds nothing is estimated (the row says why).  When every
``d_i`` is equal the interval has width 0 and ``p`` is 1 for a zero difference, 0 otherwise (scipy
returns NaN or an infinite statistic there).  Metrics: the task's selection metric (macro-F1;
segmentation: Dice) and, for classification, the balanced accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .statistics import AlgorithmStats, task_of

#: the two-sided level: 95 % intervals, resolved when p < ALPHA
ALPHA = 0.05
#: fewest paired seeds for an interval and a test
MIN_PAIRS = 2


def paired_metrics(stats: Mapping[str, AlgorithmStats]) -> Tuple[str, ...]:
    """The metrics compared pairwise: the selection metric, then the balanced accuracy if the task has it."""
    task = task_of(stats)
    return (task.selection_metric,) + tuple(m for m in ("balanced_accuracy",) if m in task.compared_metrics)


@dataclass(frozen=True)
class PairedDifference:
    """One method minus the reference on one metric, over their paired seeds (fractions)."""

    method: str
    reference: str
    metric: str
    seeds: Tuple[int, ...]   # the paired seeds
    mean: float
    low: float               # 95 % CI
    high: float
    p_value: float
    note: str = ""           # why nothing is estimated, when so

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def resolved(self) -> bool:
        """The CI excludes 0 and p < ALPHA."""
        return (not math.isnan(self.p_value) and self.p_value < ALPHA
                and (self.low > 0 or self.high < 0))


def paired_difference(values: Mapping[int, float], reference: Mapping[int, float], *, method: str = "",
                      reference_name: str = "", metric: str = "") -> PairedDifference:
    """:class:`PairedDifference` of per-seed ``values`` against the ``reference``'s (seed -> value;
    seeds where either is missing or NaN are left out)."""
    seeds = tuple(s for s in values if s in reference and not (math.isnan(values[s]) or math.isnan(reference[s])))
    nan = float("nan")
    if len(seeds) < MIN_PAIRS:
        note = f"{len(seeds)} paired seed{'s' if len(seeds) != 1 else ''}: at least {MIN_PAIRS} are needed"
        return PairedDifference(method, reference_name, metric, seeds, nan, nan, nan, nan, note)
    from scipy import stats as scipy_stats

    ours, theirs = [values[s] for s in seeds], [reference[s] for s in seeds]
    diffs = [a - b for a, b in zip(ours, theirs)]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd <= 1e-15 * max(1.0, abs(mean)):  # every difference equal: no spread to test against
        return PairedDifference(method, reference_name, metric, seeds, mean, mean, mean, 1.0 if mean == 0 else 0.0)
    half = float(scipy_stats.t.ppf(1 - ALPHA / 2, n - 1)) * sd / math.sqrt(n)
    p_value = float(scipy_stats.ttest_rel(ours, theirs).pvalue)
    return PairedDifference(method, reference_name, metric, seeds, mean, mean - half, mean + half, p_value)


def _per_seed(s: AlgorithmStats, metric: str) -> Dict[int, float]:
    return {run.seed: run.metrics[metric] for run in s.runs}


def choose_reference(stats: Mapping[str, AlgorithmStats], requested: Optional[str] = None) -> str:
    """The reference algorithm: ``requested`` (one of the compared ones, any case), else PRR when
    compared, else the first algorithm.  Raises ``ValueError`` for a name not compared."""
    names = list(stats)
    if requested is not None:
        match = [n for n in names if n.lower() == requested.lower()]
        if not match:
            raise ValueError(f"--reference {requested} is not one of the compared algorithms ({', '.join(names)})")
        return match[0]
    return "PRR" if "PRR" in stats else names[0]


def paired_differences(stats: Mapping[str, AlgorithmStats], reference: str) -> List[PairedDifference]:
    """Every other method against ``reference`` on each of :func:`paired_metrics`, by method then metric."""
    base = stats[reference]
    return [paired_difference(_per_seed(s, metric), _per_seed(base, metric), method=name, reference_name=reference,
                              metric=metric)
            for name, s in stats.items() if name != reference for metric in paired_metrics(stats)]


def by_method(differences: Sequence[PairedDifference]) -> Dict[str, Dict[str, PairedDifference]]:
    """method -> metric -> difference, in the given order."""
    out: Dict[str, Dict[str, PairedDifference]] = {}
    for d in differences:
        out.setdefault(d.method, {})[d.metric] = d
    return out
