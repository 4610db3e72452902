"""Running a comparison's algorithm x seed matrix: plan every run, then run what is not finished."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

from .. import api
from ..config import ConfigError, RunConfig
from ..training.results import ResultsStore, write_tracking_events
from .statistics import PathLike, parse_algorithms, run_folder

logger = logging.getLogger(__name__)

#: the keys the comparison itself sets on every run, and the option that sets each
OWNED_KEYS = {"random_seed": "--seeds", "prr_results_dir": "--out", "federated_optimizer": "--algorithms"}


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


def plan_matrix(document: Mapping[str, Any], algorithms: Sequence[str], seeds: Sequence[int], *, out: PathLike,
                overrides: Optional[Mapping[str, object]] = None, paper_scale: bool = False) -> List[PlannedRun]:
    """Validate every run of the matrix and decide, from its folder, whether to skip, resume or start it.

    ``document`` is the parsed YAML (read once for the whole matrix).  Nothing is trained here, so
    an unknown algorithm, an invalid key, or a finished or interrupted run made under another
    configuration is reported before any run starts.
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
            config = api.make_config(document, algorithm=algorithm, paper_scale=paper_scale,
                                     overrides={**overrides, "random_seed": seed, "prr_results_dir": str(folder)})
            if (folder / "summary.json").is_file():
                action = "skip"
            elif (folder / "resume.pt").is_file():
                action = "resume"
            else:
                action = "start"
            if action != "start" and (folder / "config.resolved.json").is_file():
                changes = ResultsStore(folder, 1, 1.0).config_changes(config.to_dict())
                if changes:
                    stale.append(f"{folder} ({', '.join(changes)})")
            plan.append(PlannedRun(algorithm, seed, config, folder, action))
    if stale:
        raise ValueError("these runs were made under another configuration: " + "; ".join(stale)
                         + ". Use another --out, or delete those run folders to run them again")
    return plan


def run_matrix(plan: Sequence[PlannedRun], *, progress: bool = False) -> None:
    """Run (or resume) every planned run that is not finished, in order.

    A finished run of a comparison with ``tracking_args: enable_tracking`` that was made with tracking
    off gets its TensorBoard event files from its ``metrics.jsonl``
    (:func:`~fedml_prr.training.results.write_tracking_events`).  With ``progress``, a tqdm bar over
    the runs to do (finished ones are left out of its total, so
    its rate and ETA are those of real runs; it says how many were skipped) plus each run's own
    bar over protocol steps.
    """
    todo = [item for item in plan if item.action != "skip"]
    for item in plan:
        if item.action == "skip":
            logger.info("%s seed %s: finished earlier in %s, skipped", item.algorithm, item.seed, item.folder)
            if item.config.tracking and write_tracking_events(item.folder):  # finished with tracking off
                logger.info("%s seed %s: TensorBoard events written from its metrics.jsonl", item.algorithm, item.seed)
    skipped = len(plan) - len(todo)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), unit="run", desc="compare", position=0)
        if skipped:
            bar.set_postfix_str(f"{skipped} finished earlier, skipped")
    try:
        for item in todo:
            label = f"{item.algorithm} seed {item.seed}"
            if bar is not None:
                bar.set_description(label)
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
