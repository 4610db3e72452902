"""TensorBoard event files of a run's per-client curves (FedML's ``tracking_args: enable_tracking``).

With tracking on, :class:`TensorBoardTracker` writes, after every completed round, each client's
validation and test metrics and its retrogress, and their unweighted client means, as TensorBoard
scalars (step = round index)::

    <results_dir>/tensorboard/<client>/   one event-file folder per client
    <results_dir>/tensorboard/_mean/      the unweighted mean over the round's clients

Tags: ``valid/<metric>``, ``test/<metric>`` (the task's metrics: accuracy, balanced_accuracy,
macro_f1, auc; segmentation: dice, iou, ...) and ``retrogress``.  TensorBoard shows each folder
as a run, so one chart per tag overlays every client (``tensorboard --logdir <results_dir>/tensorboard``;
for a comparison, ``--logdir <out>/runs`` overlays every algorithm and seed).  A NaN value (an AUC
on a test split missing a class) is not written.  A resumed run discards the events of the rounds
it repeats (``purge_step``).

Written with ``torch.utils.tensorboard.SummaryWriter`` (the ``tensorboard`` package); nothing is
sent anywhere.  Without that package a run with tracking on logs a warning and writes no events.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

logger = logging.getLogger(__name__)

#: the folder of the event files, inside the run's results folder
TENSORBOARD_FOLDER = "tensorboard"
#: the event folder of the client means
MEAN_RUN = "_mean"


def _folder_name(client: str) -> str:
    """A client name usable as one folder name (path separators and odd characters replaced)."""
    name = re.sub(r"[^\w.\-]+", "_", str(client)).strip(".")
    return name or "client"


class TensorBoardTracker:
    """Per-client scalars of every round of a run (see the module docstring).

    Parameters
    ----------
    root:
        The run's results folder; events go to ``root/tensorboard/``.
    metric_names:
        The task's metric names (:attr:`~fedml_prr.training.tasks.Task.metric_names`).
    first_round:
        The first round this run writes (a resumed run: its completed rounds); events at later
        steps left by the interrupted run are discarded.
    """

    def __init__(self, root: Path, metric_names: Sequence[str], *, first_round: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self._writer_class = SummaryWriter
        self.folder = Path(root) / TENSORBOARD_FOLDER
        self.metric_names = tuple(metric_names)
        self.first_round = first_round
        self._writers: Dict[str, Any] = {}

    def _writer(self, run: str):
        if run not in self._writers:
            purge = self.first_round if self.first_round > 0 else None
            self._writers[run] = self._writer_class(log_dir=str(self.folder / run), purge_step=purge, flush_secs=3600)
        return self._writers[run]

    def _scalars(self, run: str, values: Mapping[str, float], round_idx: int) -> None:
        writer = self._writer(run)
        for tag, value in values.items():
            if value is not None and not math.isnan(value):
                writer.add_scalar(tag, float(value), global_step=round_idx)

    def add_round(self, round_idx: int, records: Sequence[Mapping[str, Any]]) -> None:
        """Write one completed round's records (one per client present) and flush them to disk."""
        sums: Dict[str, list] = {}
        for record in records:
            values = {f"{split}/{name}": float(record[split][name])
                      for split in ("valid", "test") for name in self.metric_names if name in record[split]}
            values["retrogress"] = float(record["retrogress"])
            self._scalars(_folder_name(record["client"]), values, round_idx)
            for tag, value in values.items():
                if not math.isnan(value):
                    sums.setdefault(tag, []).append(value)
        self._scalars(MEAN_RUN, {tag: sum(v) / len(v) for tag, v in sums.items()}, round_idx)
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def open_tracker(root: Path, metric_names: Sequence[str], *, first_round: int = 0) -> Optional[TensorBoardTracker]:
    """A :class:`TensorBoardTracker`, or None (with a warning) when the tensorboard package is missing."""
    try:
        return TensorBoardTracker(root, metric_names, first_round=first_round)
    except ImportError as error:
        logger.warning("tracking_args: enable_tracking is on, but TensorBoard cannot be imported (%s); this run "
                       "writes no event files (pip install tensorboard)", error)
        return None
