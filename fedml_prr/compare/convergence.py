"""Has a run converged?  The convergence check of a comparison (issue 14).

A run's validation curve is the unweighted client mean of each round's validation selection metric
(macro-F1; segmentation: Dice), the curve model selection looks at.  The run has *flattened* when
the mean of its last :data:`TAIL_FRACTION` of rounds (at least :data:`TAIL_MIN_ROUNDS` rounds, at
most all of them) is within :data:`TOLERANCE` of its best round's value::

    tail  = the last max(TAIL_MIN_ROUNDS, ceil(TAIL_FRACTION * T)) rounds of the T recorded ones
    gap   = max over all rounds of the curve - mean of the curve over the tail
    flattened  <=>  gap <= TOLERANCE

A curve still rising at the end has a tail mean below its best (last) round and is flagged; so is
one that peaked early and fell.  Rounds whose value is NaN are left out; a run with a single
recorded round has nothing to compare and counts as flattened.  The three parameters are defined
here only; docs/benchmarks.md states them.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass
from typing import List, Mapping, Sequence

from .statistics import AlgorithmStats

#: share of the last rounds whose mean is compared with the best round
TAIL_FRACTION = 0.2
#: the tail holds at least this many rounds
TAIL_MIN_ROUNDS = 2
#: largest gap (a fraction: 0.01 = 1 point of macro-F1 / Dice) between the best round and the tail mean
TOLERANCE = 0.01


@dataclass(frozen=True)
class ConvergenceCheck:
    """The check of one run (values are fractions)."""

    algorithm: str
    seed: int
    rounds: int          # recorded rounds with a value
    tail_rounds: int
    tail_mean: float
    best: float
    best_round: int
    gap: float           # best - tail_mean (>= 0)
    flattened: bool


def tail_length(rounds: int) -> int:
    """How many last rounds the tail holds for a curve of ``rounds`` rounds."""
    return min(rounds, max(TAIL_MIN_ROUNDS, math.ceil(TAIL_FRACTION * rounds - 1e-9)))


def check_curve(curve: Mapping[int, float], *, algorithm: str = "", seed: int = 0) -> ConvergenceCheck:
    """:class:`ConvergenceCheck` of a round -> value curve (NaN values left out)."""
    points = sorted((r, v) for r, v in curve.items() if not math.isnan(v))
    if not points:
        nan = float("nan")
        return ConvergenceCheck(algorithm, seed, 0, 0, nan, nan, -1, nan, False)
    tail = [v for _, v in points[-tail_length(len(points)):]]
    best_round, best = max(points, key=lambda p: (p[1], -p[0]))  # the earliest of equal best rounds
    tail_mean = sum(tail) / len(tail)
    gap = max(best - tail_mean, 0.0)
    return ConvergenceCheck(algorithm, seed, len(points), len(tail), tail_mean, best, best_round, gap,
                            gap <= TOLERANCE + 1e-12)


def check_runs(stats: Mapping[str, AlgorithmStats]) -> List[ConvergenceCheck]:
    """The check of every run of a comparison, by algorithm then seed."""
    return [check_curve(run.curve_valid, algorithm=name, seed=run.seed) for name, s in stats.items() for run in s.runs]


def criterion_text(label: str) -> str:
    """The criterion in words (``label``: the metric's name, ``macro-F1``)."""
    return (f"validation {label} (client mean) of the last {TAIL_FRACTION:.0%} of rounds (at least {TAIL_MIN_ROUNDS}) "
            f"within {100 * TOLERANCE:g} point(s) of the best round")


def format_convergence(checks: Sequence[ConvergenceCheck], label: str) -> str:
    """One warning line per run that has not flattened, then ``k of n runs flattened (criterion)``."""
    lines = [f"warning: {c.algorithm} seed {c.seed} has not flattened: validation {label} last-{c.tail_rounds}-round "
             f"mean {100 * c.tail_mean:.1f}, best {100 * c.best:.1f} (round {c.best_round}), gap "
             f"{100 * c.gap:.1f} points" for c in checks if not c.flattened]
    flattened = sum(c.flattened for c in checks)
    lines.append(f"{flattened} of {len(checks)} runs flattened ({criterion_text(label)})")
    return "\n".join(lines) + "\n"


def convergence_csv(checks: Sequence[ConvergenceCheck]) -> str:
    """``convergence.csv``: one row per run; values in percent (3 decimals), empty = undefined."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["algorithm", "seed", "rounds", "tail_rounds", "tail_mean_pct", "best_pct", "best_round",
                     "gap_points", "flattened"])
    for c in checks:
        writer.writerow([c.algorithm, c.seed, c.rounds, c.tail_rounds]
                        + ["" if math.isnan(v) else f"{100 * v:.3f}" for v in (c.tail_mean, c.best)]
                        + [c.best_round, "" if math.isnan(c.gap) else f"{100 * c.gap:.3f}", str(c.flattened).lower()])
    return buffer.getvalue()


def convergence_json(checks: Sequence[ConvergenceCheck], label: str) -> str:
    """``convergence.json``: the criterion's parameters and one object per run (fractions; null = undefined)."""
    runs = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(c).items()} for c in checks]
    document = {"criterion": criterion_text(label), "tail_fraction": TAIL_FRACTION, "tail_min_rounds": TAIL_MIN_ROUNDS,
                "tolerance": TOLERANCE, "flattened": sum(c.flattened for c in checks), "runs": runs}
    return json.dumps(document, indent=2, allow_nan=False) + "\n"
