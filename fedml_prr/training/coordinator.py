"""The server side of every run: deliver messages, aggregate validated uploads, record rounds.

A :class:`Coordinator` wraps one algorithm's :class:`~fedml_prr.training.federated.FederatedServer`
and is the engine every runtime drives: the single-process runtime calls it directly, MPI and
gRPC call it from FedML's server manager (:mod:`fedml_prr.fedml_adapter.trainers`).  Per step
``s`` it hands out the server's messages, then takes every silo's upload of step ``s``:

1. the :class:`~fedml_prr.training.validation.UpdateValidator` checks every upload before the
   algorithm sees any of them (a bad one raises :class:`~fedml_prr.training.validation.UpdateError`
   naming the silo, and nothing is aggregated);
2. the algorithm aggregates; if it fails half-way, the server's state is rolled back, so a bad
   update never costs the server its earlier state;
3. the step advances.

Metric records of a finished round reach the coordinator from the clients (in one process
directly, over the wire inside the next upload); once every silo's record of a round is in, the
round is written to the :class:`~fedml_prr.training.results.ResultsStore` and the model
selection is updated.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional

from .federated import FederatedServer, Message, round_closed_by
from .results import ResultsStore
from .validation import UpdateValidator

logger = logging.getLogger(__name__)


class Coordinator:
    """One run's server engine (see the module docstring).

    Parameters
    ----------
    server:
        The algorithm's server.
    validator:
        Checks every step's uploads; None skips validation (only the step and silo fields are
        checked then).
    store:
        Where completed rounds are written; None: rounds are not recorded.
    """

    def __init__(self, server: FederatedServer, *, validator: Optional[UpdateValidator] = None,
                 store: Optional[ResultsStore] = None) -> None:
        self.server = server
        self.validator = validator
        self.store = store
        self.step = 0
        self._pending: Dict[int, List[Dict[str, Any]]] = {}
        self._pending_states: Dict[int, Dict[str, Mapping]] = {}

    @property
    def num_steps(self) -> int:
        """Steps of the run (handshake + training steps); step ``num_steps`` is the final delivery."""
        return self.server.num_steps

    @property
    def num_clients(self) -> int:
        return self.server.num_clients

    @property
    def closing_round(self) -> Optional[int]:
        """The round whose server message is delivered at the current step (None if none):
        the moment to save a resume point and to evaluate that round."""
        return round_closed_by(self.step, self.server.spr)

    @property
    def finished(self) -> bool:
        """True once the final delivery (step ``num_steps``) is the current step."""
        return self.step >= self.num_steps

    @property
    def selected_round(self) -> Optional[int]:
        return self.store.selection.round if self.store is not None else None

    def messages(self) -> Dict[int, Message]:
        """The server's message to every silo at the current step."""
        return self.server.messages(self.step)

    def aggregate(self, uploads: Mapping[int, Message]) -> None:
        """Validate and aggregate every silo's upload of the current step, then advance."""
        if self.validator is not None:
            self.validator.check(self.step, uploads)
        else:
            steps = {u.get("step") for u in uploads.values()}
            if steps != {self.step}:
                raise ValueError(f"expected uploads of step {self.step}, got steps {sorted(map(str, steps))}")
        snapshot = self.server.state_dict()
        try:
            self.server.aggregate(self.step, uploads)
        except Exception:
            self.server.load_state_dict(snapshot)  # the algorithm failed half-way: keep the earlier state
            raise
        self.step += 1

    def record(self, records: List[Dict[str, Any]],
               reported_states: Optional[Mapping[str, Mapping]] = None) -> List[int]:
        """Take finished-round metric records (any silos, any rounds); write every round whose
        records are now complete.  ``reported_states``: client name -> reported model state, for
        the checkpoints (None when the models stay with the clients).  Returns the rounds written."""
        for record in records:
            self._pending.setdefault(int(record["round"]), []).append(dict(record))
            if reported_states is not None:
                self._pending_states.setdefault(int(record["round"]), {}).update(
                    {record["client"]: reported_states[record["client"]]})
        written = []
        for round_idx in sorted(self._pending):
            if len(self._pending[round_idx]) < self.num_clients:
                continue
            round_records = self._pending.pop(round_idx)
            states = self._pending_states.pop(round_idx, None)
            if self.store is not None:
                self.store.add_round(round_idx, round_records, states)
                metric = self.store.task.selection_metric
                mean = sum(r["test"][metric] for r in round_records) / len(round_records)
                logger.info("round %d complete: mean test %s %.1f", round_idx, metric, 100 * mean)
            written.append(round_idx)
        return written

    @property
    def incomplete_rounds(self) -> List[int]:
        """Rounds some silos have reported and others not (empty at a normal end)."""
        return sorted(self._pending)

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> Dict[str, Any]:
        return {"step": self.step, "server": self.server.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.server.load_state_dict(state["server"])
        self.step = int(state["step"])
