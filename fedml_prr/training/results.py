"""The results folder of a run: config, per-round metrics, summary, checkpoints, resume state.

Layout::

    <results_dir>/config.resolved.json    the validated config
    <results_dir>/metrics.jsonl           one line per (round, client) record
    <results_dir>/summary.json            selected-round and final metrics, per client and averaged
    <results_dir>/checkpoints/best/<client>.pt   reported model at the selected round
    <results_dir>/checkpoints/last/<client>.pt   reported model at the last completed round
    <results_dir>/resume.pt               full state at the last completed round (for --resume)

Model selection (spec section 4): the round with the best mean validation macro-F1 (segmentation:
Dice: the task's ``selection_metric``) among rounds ``>= selection_fraction * T`` (the last round
always qualifies); ties keep the earlier round.

Every runtime writes through :class:`ResultsStore`; :func:`open_results` is the one start-or-resume
preamble they share.

``metrics.jsonl`` and ``summary.json`` are strict JSON (RFC 8259, what ``jq`` and other strict
parsers accept): a number that is not finite (a NaN AUC on a test split missing a class, a NaN
retrogress) is written as ``null`` (:func:`json_text`), and every reader of these files
(:func:`read_records`, :func:`read_summary`: resume, ``compare``) turns ``null`` back into NaN.
Records hold no other ``null``.  Files written before this convention (bare ``NaN`` tokens) are
still read.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..config import TRACKING_KEYS, RunConfig
from ..files import atomic_torch_save, atomic_write_text
from .tasks import CLASSIFICATION, Task
from .tracking import TENSORBOARD_FOLDER, TensorBoardTracker, open_tracker


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf) replaced by None, in nested dicts and lists
    (a new structure; ``value`` is not changed)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def none_to_nan(value: Any) -> Any:
    """Inverse of :func:`finite_or_none` for what this package writes: every None becomes NaN."""
    if value is None:
        return float("nan")
    if isinstance(value, Mapping):
        return {k: none_to_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [none_to_nan(v) for v in value]
    return value


def json_text(value: Any, *, indent: Optional[int] = None) -> str:
    """Strict JSON of a record or summary: non-finite numbers written as ``null`` (never ``NaN``)."""
    return json.dumps(finite_or_none(value), indent=indent, allow_nan=False)


def read_records(path: Path) -> List[Dict[str, Any]]:
    """Every record of a ``metrics.jsonl``, ``null`` read back as NaN (no file: no record)."""
    path = Path(path)
    if not path.exists():
        return []
    return [none_to_nan(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def read_summary(path: Path) -> Dict[str, Any]:
    """A ``summary.json``, ``null`` read back as NaN."""
    return none_to_nan(json.loads(Path(path).read_text()))


def aggregate_clients(records: Sequence[Mapping[str, Any]], split: str,
                      metric_names: Sequence[str] = CLASSIFICATION.metric_names) -> Dict[str, float]:
    """Unweighted (the paper's "Average") and sample-weighted means of a round's client metrics
    (``metric_names``: the task's, :attr:`~fedml_prr.training.tasks.Task.metric_names`)."""
    out: Dict[str, float] = {}
    for name in metric_names:
        values = [(r[split][name], r[split]["n"]) for r in records if not math.isnan(r[split][name])]
        if not values:
            out[name], out[f"{name}_weighted"] = float("nan"), float("nan")
            continue
        out[name] = sum(v for v, _ in values) / len(values)
        total = sum(n for _, n in values)
        out[f"{name}_weighted"] = sum(v * n for v, n in values) / total if total else float("nan")
    return out


@dataclass
class Selection:
    """Best round so far among the eligible ones."""

    first_eligible: int
    round: Optional[int] = None
    score: float = -math.inf

    def offer(self, round_idx: int, score: float) -> bool:
        if round_idx < self.first_eligible or math.isnan(score) or score <= self.score:
            return False
        self.round, self.score = round_idx, score
        return True


def _without_tracking(config_dict: Dict[str, Any]) -> Dict[str, Any]:
    fedml = config_dict.get("fedml")
    if isinstance(fedml, dict):
        config_dict = {**config_dict, "fedml": {k: v for k, v in fedml.items() if k not in TRACKING_KEYS}}
    return config_dict


def save_checkpoint(root: Path, kind: str, client: str, state: Mapping[str, torch.Tensor]) -> Path:
    """Write ``checkpoints/<kind>/<client>.pt`` (CPU tensors, atomically)."""
    path = Path(root) / "checkpoints" / kind / f"{client}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({k: v.detach().cpu() for k, v in state.items()}, path)
    return path


@dataclass
class ResultsStore:
    """Writes a run's outputs; see the module docstring for the layout."""

    root: Path
    total_rounds: int
    selection_fraction: float
    task: Task = CLASSIFICATION
    rounds: Dict[int, List[Dict[str, Any]]] = field(default_factory=dict)
    #: writes each completed round to TensorBoard too (``tracking_args``; :mod:`.tracking`); closed by :meth:`summary`
    tracker: Optional[TensorBoardTracker] = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        first = math.ceil(self.selection_fraction * self.total_rounds - 1e-9)
        self.selection = Selection(first_eligible=min(first, self.total_rounds - 1))  # the last round always qualifies

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def resume_path(self) -> Path:
        return self.root / "resume.pt"

    def start_fresh(self, config_dict: Mapping[str, Any], *, overwrite: bool = False) -> None:
        """Create the folder and write the config.

        An earlier run's outputs there are an error unless ``overwrite`` (then they are removed).
        """
        earlier = [n for n in ("metrics.jsonl", "summary.json", "resume.pt") if (self.root / n).exists()]
        if earlier and not overwrite:
            raise FileExistsError(f"{self.root} holds an earlier run ({', '.join(earlier)}); pass --resume to "
                                  "continue it, --overwrite to replace it, or set another prr_results_dir")
        self.root.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "summary.json", "resume.pt"):
            (self.root / name).unlink(missing_ok=True)
        shutil.rmtree(self.root / "checkpoints", ignore_errors=True)
        shutil.rmtree(self.root / TENSORBOARD_FOLDER, ignore_errors=True)
        atomic_write_text(self.root / "config.resolved.json", json.dumps(config_dict, indent=2, default=str))

    def config_changes(self, config_dict: Mapping[str, Any]) -> List[str]:
        """Keys whose value differs between the stored ``config.resolved.json`` and ``config_dict``
        (every key when none is stored).  FedML's tracking keys (:data:`~fedml_prr.config.TRACKING_KEYS`)
        are left out: they change what a run logs, not what it trains."""
        path = self.root / "config.resolved.json"
        saved = _without_tracking(json.loads(path.read_text())) if path.exists() else {}
        current = _without_tracking(json.loads(json.dumps(config_dict, default=str)))
        return sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))

    def check_same_config(self, config_dict: Mapping[str, Any]) -> None:
        """Refuse to resume a run under a different configuration (naming what changed), or one whose
        configuration is not there to compare with."""
        if not (self.root / "config.resolved.json").is_file():
            raise ValueError(f"cannot resume {self.root}: its config.resolved.json is missing, so the interrupted "
                             "run's configuration is unknown; start a new run (--overwrite)")
        changed = self.config_changes(config_dict)
        if changed:
            raise ValueError(f"cannot resume {self.root}: the configuration differs from the interrupted run's "
                             f"in {changed}; resume with the same config, or start a new run")

    def reload(self, completed_rounds: int) -> None:
        """On resume: keep the records of rounds ``< completed_rounds`` and rebuild the selection."""
        kept = [r for r in read_records(self.metrics_path) if r["round"] < completed_rounds]
        atomic_write_text(self.metrics_path, "".join(json_text(r) + "\n" for r in kept))
        self.rounds = {}
        for record in kept:
            self.rounds.setdefault(record["round"], []).append(record)
        for round_idx in sorted(self.rounds):
            self.selection.offer(round_idx, self._mean(self.rounds[round_idx], "valid")[self.task.selection_metric])

    def add_round(self, round_idx: int, records: List[Dict[str, Any]],
                  reported_states: Optional[Mapping[str, Mapping]]) -> bool:
        """Append a completed round's records, update the selection and the checkpoints.

        ``reported_states`` None: the models are not here (a distributed run's clients keep their
        own checkpoints).  Returns True when this round became the selected one.
        """
        records = sorted(records, key=lambda r: r["silo"])
        self.rounds[round_idx] = records
        with self.metrics_path.open("a") as fh:
            for record in records:
                fh.write(json_text(record) + "\n")
        if self.tracker is not None:
            self.tracker.add_round(round_idx, records)
        selected = self.selection.offer(round_idx, self._mean(records, "valid")[self.task.selection_metric])
        if reported_states is not None:
            self._save_models("last", reported_states)
            if selected:
                self._save_models("best", reported_states)
        return selected

    def _mean(self, records: Sequence[Mapping[str, Any]], split: str) -> Dict[str, float]:
        return aggregate_clients(records, split, self.task.metric_names)

    def _save_models(self, kind: str, states: Mapping[str, Mapping]) -> None:
        for client, state in states.items():
            save_checkpoint(self.root, kind, client, state)

    def save_resume(self, state: Mapping[str, Any]) -> None:
        atomic_torch_save(dict(state), self.resume_path)

    def load_resume(self) -> Dict[str, Any]:
        """The saved state of ``resume.pt``; one-line errors when there is no run to resume, or the
        file is not a complete resume state (truncated, overwritten, crafted: it is read without
        running any code, :func:`load_state_file`)."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"nothing to resume: there is no run in {self.root} (prr_results_dir); start "
                                    "it without --resume")
        if not self.resume_path.is_file():
            raise FileNotFoundError(f"nothing to resume: {self.resume_path} does not exist (the run in {self.root} "
                                    "never completed a round); start it again without --resume")
        state = load_state_file(self.resume_path)
        if not isinstance(state, dict) or "completed_rounds" not in state:
            raise ValueError(f"cannot resume from {self.resume_path}: it is not a fedml_prr resume state; restore it, "
                             "or start the run again with --overwrite")
        return state

    def summary(self, extra: Mapping[str, Any]) -> Dict[str, Any]:
        """Selected-round and final metrics, per client and averaged over clients."""
        if not self.rounds:
            raise RuntimeError("no completed round to summarise")
        last = max(self.rounds)
        selected = self.selection.round if self.selection.round is not None else last

        def per_client(round_idx: int) -> Dict[str, Any]:
            return {r["client"]: {"test": r["test"], "valid": r["valid"]} for r in self.rounds[round_idx]}

        retro: Dict[str, List[float]] = {}
        for round_idx in sorted(self.rounds):
            for r in self.rounds[round_idx]:
                if not math.isnan(r["retrogress"]):
                    retro.setdefault(r["client"], []).append(r["retrogress"])
        mean_retro = {c: sum(v) / len(v) for c, v in retro.items()}
        summary = {"task": self.task.name, "selection_metric": self.task.selection_metric, **extra}
        summary.update({
            "selected_round": selected,
            "last_round": last,
            "selected": {"mean": self._mean(self.rounds[selected], "test"), "clients": per_client(selected)},
            "final": {"mean": self._mean(self.rounds[last], "test"), "clients": per_client(last)},
            "retrogress": {"clients": mean_retro,
                           "mean": sum(mean_retro.values()) / len(mean_retro) if mean_retro else float("nan")},
        })
        atomic_write_text(self.root / "summary.json", json_text(summary, indent=2))
        if self.tracker is not None:
            self.tracker.close()
        return summary


def load_state_file(path: Path) -> Dict[str, Any]:
    """A resume state or checkpoint written by this package, read without unpickling code
    (``torch.load(weights_only=True)``: tensors, numbers, strings and containers only).  A file
    that is not one - truncated, or crafted to run code - is a ``ValueError`` naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise ValueError(f"cannot resume from {path}: the file is damaged or truncated, or not a state file this "
                         f"package wrote ({type(error).__name__}); nothing in it was run - restore it, or start the "
                         "run again with --overwrite") from None


def write_tracking_events(root: Path) -> bool:
    """TensorBoard event files (:mod:`.tracking`) of a finished run made with tracking off, from its
    ``metrics.jsonl``; a run that has them already is left alone.  Returns whether files were written
    (False also when the tensorboard package is missing: a warning says so)."""
    from .tasks import task_named

    root = Path(root)
    if (root / TENSORBOARD_FOLDER).exists():
        return False
    task = task_named(read_summary(root / "summary.json").get("task", "classification"))
    tracker = open_tracker(root, task.metric_names)
    if tracker is None:
        return False
    by_round: Dict[int, List[Dict[str, Any]]] = {}
    for record in read_records(root / "metrics.jsonl"):
        by_round.setdefault(int(record["round"]), []).append(record)
    for round_idx in sorted(by_round):
        tracker.add_round(round_idx, by_round[round_idx])
    tracker.close()
    return True


def run_fields(config: RunConfig, clients: Sequence[str], wall_time_s: float, **extra: Any) -> Dict[str, Any]:
    """What a run's ``summary.json`` says about the run itself (``extra`` adds or overrides)."""
    fields = {"algorithm": config.algorithm, "dataset": config.dataset, "model": config.model, "seed": config.seed,
              "rounds": config.schedule.rounds, "epochs": config.schedule.epochs, "clients": list(clients),
              "wall_time_s": wall_time_s}
    fields.update(extra)
    return fields


def open_results(config: RunConfig, task: Task, *, resume: bool, overwrite: bool,
                 runtime: str) -> Tuple[ResultsStore, Optional[Dict[str, Any]]]:
    """The results store of a run, started fresh or reopened for ``--resume``.

    Returns ``(store, state)``: ``state`` is the saved resume state (None for a fresh start), and
    on resume the store already holds the records of the completed rounds.  ``runtime``
    (``single-process`` or ``distributed``) must match the runtime that wrote the state.
    """
    store = ResultsStore(config.options.results_dir, config.schedule.rounds, config.options.selection_fraction, task)
    if not resume:
        store.start_fresh(config.to_dict(), overwrite=overwrite)
        if config.tracking:
            store.tracker = open_tracker(store.root, task.metric_names)
        return store, None
    state = store.load_resume()
    store.check_same_config(config.to_dict())
    written_by = state.get("runtime", "single-process")
    if written_by != runtime:
        raise ValueError(f"{store.resume_path} was written by a {written_by} run; resume it with that runtime")
    store.reload(completed_rounds=int(state["completed_rounds"]))
    if config.tracking:
        store.tracker = open_tracker(store.root, task.metric_names, first_round=int(state["completed_rounds"]))
    return store, state
