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

Participation: a step's messages go to its *participants*.  At a round's first step (and the
handshake) that is every silo the runtime offers (:meth:`Coordinator.participants`: all of them
in one process; the live ones over the wire); within a round, the silos that uploaded the
previous step.  A silo that misses a step sits out the rest of its round and keeps its state; it
is offered again at the next round.  At least ``min_clients`` uploads make a step.

Sampling (``clients_per_round`` below the number of silos, FedML's ``client_num_per_round``): a
round's first step goes only to the offered silos of the round's cohort
(:func:`~fedml_prr.training.sampling.sample_clients`, FedML's draw); a silo outside it is treated
exactly like one absent from the round.  Every message of a round then tells its silo whether it
is in the next round's cohort (``in_next_round``): a silo that is not records its round as soon as
it has trained it (no server message reaches it before it is next sampled).  The handshake and the
final delivery go to every silo, so every client's reported model is evaluated at the end.  The
silos that trained each round (uploaded its first step) are kept in :attr:`Coordinator.cohorts`.

Metric records of a finished round reach the coordinator from the clients (in one process
directly, over the wire inside the next upload); :meth:`Coordinator.close_round` writes the
round with the records that came (normally one per participant) to the
:class:`~fedml_prr.training.results.ResultsStore` and updates the model selection.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set

from .federated import FederatedServer, Message, round_closed_by
from .sampling import sample_clients
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
    min_clients:
        Fewest uploads that make a step (at most ``clients_per_round``).
    clients_per_round:
        Silos sampled per round (None, or the number of silos: every silo, every round).
    """

    def __init__(self, server: FederatedServer, *, validator: Optional[UpdateValidator] = None,
                 store: Optional[ResultsStore] = None, min_clients: int = 1,
                 clients_per_round: Optional[int] = None) -> None:
        if clients_per_round is not None and not 1 <= clients_per_round <= server.num_clients:
            raise ValueError(f"clients_per_round must be in 1..{server.num_clients}, got {clients_per_round}")
        self.clients_per_round = clients_per_round if clients_per_round != server.num_clients else None
        cohort_size = self.clients_per_round or server.num_clients
        if not 1 <= min_clients <= cohort_size:
            raise ValueError(f"min_clients must be in 1..{cohort_size} (the clients of a round), got {min_clients}")
        self.server = server
        self.validator = validator
        self.store = store
        self.min_clients = min_clients
        self.step = 0
        self._uploaded: Set[int] = set(range(server.num_clients))  # who uploaded the previous step
        self._pending: Dict[int, List[Dict[str, Any]]] = {}
        self._pending_states: Dict[int, Dict[str, Mapping]] = {}
        #: round -> the silos that trained it (uploaded its first step), sorted
        self.cohorts: Dict[int, List[int]] = {}

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

    @property
    def round_start(self) -> bool:
        """True at the handshake, a round's first step and the final delivery: every offered silo
        takes part (within a round only the previous step's uploaders do)."""
        return self.step <= 1 or self.step >= self.num_steps or (self.step - 1) % self.server.spr == 0

    @property
    def sampling(self) -> bool:
        """True when each round trains a sample of the silos."""
        return self.clients_per_round is not None

    @property
    def training_round(self) -> Optional[int]:
        """The algorithm round the current step trains (None at the handshake and the final delivery)."""
        if not 1 <= self.step < self.num_steps:
            return None
        return (self.step - 1) // self.server.spr

    def cohort(self, round_idx: int) -> List[int]:
        """The silos sampled for round ``round_idx`` (every silo without sampling)."""
        return sample_clients(round_idx, self.num_clients, self.clients_per_round)

    def participants(self, offered: Optional[Iterable[int]] = None) -> List[int]:
        """The silos that take part in the current step, among ``offered`` (default: every silo)."""
        offered = set(range(self.num_clients) if offered is None else offered)
        if not self.round_start:
            return sorted(offered & self._uploaded)
        round_idx = self.training_round
        return sorted(offered if round_idx is None else offered & set(self.cohort(round_idx)))

    def messages(self, silos: Optional[Iterable[int]] = None) -> Dict[int, Message]:
        """The server's message of the current step to ``silos`` (default: its participants)."""
        messages = self.server.messages(self.step, self.participants() if silos is None else silos)
        round_idx = self.training_round
        if self.sampling and round_idx is not None and round_idx + 1 < self.server.schedule.rounds:
            following = set(self.cohort(round_idx + 1))
            for silo, message in messages.items():
                message["in_next_round"] = silo in following
        return messages

    def aggregate(self, uploads: Mapping[int, Message]) -> None:
        """Validate and aggregate the uploads of the current step, then advance.

        ``uploads``: one per silo that took part (at least ``min_clients``; the handshake needs
        every silo)."""
        if len(uploads) < self.min_clients:
            raise ValueError(f"step {self.step}: {len(uploads)} upload(s), fewer than min_clients = {self.min_clients}")
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
        self._uploaded = set(uploads)
        if self.training_round is not None and (self.step - 1) % self.server.spr == 0:
            self.cohorts[self.training_round] = sorted(uploads)
            if self.sampling:
                logger.info("round %d: sampled %s, trained %s", self.training_round,
                            self.cohort(self.training_round), sorted(uploads))
        self.step += 1

    def record(self, records: List[Dict[str, Any]],
               reported_states: Optional[Mapping[str, Mapping]] = None) -> None:
        """Take finished-round metric records (any silos, any rounds) until :meth:`close_round`.
        ``reported_states``: client name -> reported model state, for the checkpoints (None when
        the models stay with the clients)."""
        for record in records:
            self._pending.setdefault(int(record["round"]), []).append(dict(record))
            if reported_states is not None:
                self._pending_states.setdefault(int(record["round"]), {})[record["client"]] = \
                    reported_states[record["client"]]

    def close_round(self, round_idx: int) -> List[Dict[str, Any]]:
        """Write ``round_idx`` with the records that came for it (none came: nothing is written).
        Returns them."""
        records = self._pending.pop(round_idx, [])
        states = self._pending_states.pop(round_idx, None)
        if records and self.store is not None:
            self.store.add_round(round_idx, records, states)
            metric = self.store.task.selection_metric
            mean = sum(r["test"][metric] for r in records) / len(records)
            logger.info("round %d complete (%d silo(s)): mean test %s %.1f", round_idx, len(records), metric, 100 * mean)
        return records

    def sampling_summary(self) -> Dict[str, Any]:
        """What ``summary.json`` records about the cohorts: the clients per round and, per round,
        the silos that trained it."""
        return {"client_num_per_round": self.clients_per_round or self.num_clients,
                "client_num_in_total": self.num_clients,
                "rule": "fedml" if self.sampling else "every client",
                "cohorts": [self.cohorts[r] for r in sorted(self.cohorts)]}

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> Dict[str, Any]:
        return {"step": self.step, "server": self.server.state_dict(), "uploaded": sorted(self._uploaded),
                "cohorts": {r: list(s) for r, s in self.cohorts.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.server.load_state_dict(state["server"])
        self.step = int(state["step"])
        self._uploaded = set(state.get("uploaded", range(self.num_clients)))
        self.cohorts = {int(r): list(s) for r, s in state.get("cohorts", {}).items()}
